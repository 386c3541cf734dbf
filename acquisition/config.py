"""Read and validate the YAML configuration in one place; hand down plain typed values.

``load_config()`` reads ``configs/instrument.yaml`` and ``configs/simulation.yaml`` (the
embedded defaults, or files given by the user) into a :class:`Config`.  Every key is
checked against the dataclass it fills; the first wrong one raises :class:`ConfigError`
naming the file and the dotted field, e.g. ``simulation.yaml: detector.binnig: unknown
field (expected one of: ...)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from simulators.physics.phantom import PhantomSpec
from simulators.physics.setup import (
    Detector,
    Geometry,
    Gratings,
    Interferometer,
    Setup,
    Source,
)


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file and field."""


@dataclass(frozen=True)
class TubeConfig:
    """Operating point of the tube and the limits plans enforce (kV, mA)."""

    kv: float = 40.0
    ma: float = 70.0
    kv_max: float = 50.0
    ma_max: float = 100.0


@dataclass(frozen=True)
class PiezoConfig:
    """G2 piezo stepper: travel (um), first step (um), settle time (s), in-position tolerance (um)."""

    limits_um: tuple[float, float] = (-5.0, 15.0)
    start_um: float = 0.0
    settle_s: float = 0.05
    tolerance_um: float = 0.01


@dataclass(frozen=True)
class StageConfig:
    """Sample stage travel and its two working positions (mm)."""

    x_limits_mm: tuple[float, float] = (-150.0, 150.0)
    y_limits_mm: tuple[float, float] = (-150.0, 150.0)
    sample_position_mm: tuple[float, float] = (0.0, 0.0)
    reference_position_mm: tuple[float, float] = (120.0, 0.0)


@dataclass(frozen=True)
class ScanConfig:
    """One phase-stepping projection: steps over one G2 period, exposure per step (s), darks."""

    steps: int = 9
    exposure_s: float = 9.0
    max_exposure_s: float = 30.0
    dark_frames: int = 5
    max_frame_s: float = 4.5
    """Longest single panel frame (s); a longer exposure is a sum of equal frames."""


@dataclass(frozen=True)
class DoseConfig:
    """Mean glandular dose model (paper, Methods): rate at reference settings, and budget."""

    mgd_rate_mgy_per_s: float = 0.89
    reference_kv: float = 40.0
    reference_ma: float = 70.0
    reference_thickness_mm: float = 45.0
    budget_mgy: float = 200.0


@dataclass(frozen=True)
class EpicsConfig:
    """Where the real instrument lives: PV prefix and the detector IOC's file directory."""

    prefix: str = "TL:"
    write_path: str = "/data/talbot-lau"


@dataclass(frozen=True)
class InstrumentConfig:
    """configs/instrument.yaml."""

    geometry: Geometry = field(default_factory=Geometry)
    gratings: Gratings = field(default_factory=Gratings)
    source: Source = field(default_factory=Source)
    detector: Detector = field(default_factory=Detector)
    tube: TubeConfig = field(default_factory=TubeConfig)
    g2: PiezoConfig = field(default_factory=PiezoConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    dose: DoseConfig = field(default_factory=DoseConfig)
    epics: EpicsConfig = field(default_factory=EpicsConfig)


@dataclass(frozen=True)
class SimulationConfig:
    """configs/simulation.yaml: what the twin adds to the instrument."""

    time_scale: float = 0.002
    seed: int = 2016
    detector: dict[str, Any] = field(default_factory=dict)
    interferometer: Interferometer = field(default_factory=Interferometer)
    phantom: PhantomSpec = field(default_factory=PhantomSpec)


@dataclass(frozen=True)
class Config:
    """The whole configuration: the instrument, the simulation, and the physics setup of both."""

    instrument: InstrumentConfig
    simulation: SimulationConfig
    setup: Setup
    digest: str
    """sha256 of the two files' text, for the start document."""


def default_config_dir() -> Path:
    """The embedded configs: packaged with the wheel, or the source tree's configs/."""
    packaged = resources.files("acquisition") / "configs"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "configs"


def load_config(
    instrument: str | Path | None = None, simulation: str | Path | None = None
) -> Config:
    """Load, validate and combine the two YAML files (None = the embedded default)."""
    instrument_path = Path(instrument) if instrument else default_config_dir() / "instrument.yaml"
    simulation_path = Path(simulation) if simulation else default_config_dir() / "simulation.yaml"
    instrument_text = _read(instrument_path)
    simulation_text = _read(simulation_path)
    inst = build(InstrumentConfig, _parse(instrument_text, instrument_path), instrument_path.name)
    sim = build(SimulationConfig, _parse(simulation_text, simulation_path), simulation_path.name)
    detector = _override(inst.detector, sim.detector, simulation_path.name)
    setup = Setup(
        geometry=inst.geometry,
        gratings=inst.gratings,
        source=inst.source,
        detector=detector,
        interferometer=sim.interferometer,
    )
    _check_instrument(inst, instrument_path.name)
    _check_simulation(sim, setup, simulation_path.name)
    digest = hashlib.sha256((instrument_text + "\0" + simulation_text).encode()).hexdigest()
    return Config(instrument=inst, simulation=sim, setup=setup, digest=digest)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration file ({err.strerror})") from None


def _parse(text: str, path: Path) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of sections at the top level")
    return data


def build(cls: type, data: Any, where: str, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"{where}: {prefix}{key}: unknown field (expected one of: {', '.join(names)})"
            )
        values[key] = _convert(hints[key], value, where, f"{prefix}{key}")
    return cls(**values)


def _override(base, changes: dict, where: str):
    """A copy of the instrument's detector with the simulation's fields replaced (checked)."""
    overrides = build(type(base), changes, where, "detector.")
    return dataclasses.replace(base, **{key: getattr(overrides, key) for key in changes})


def _convert(hint, value, where: str, name: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where, name)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, name + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name}: expected text, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {name}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: {name}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _require(condition: bool, where: str, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {name}: {message}")


def _check_instrument(inst: InstrumentConfig, where: str) -> None:
    """Physical ranges the types alone do not say."""
    for section in ("geometry", "gratings"):
        for f in dataclasses.fields(getattr(inst, section)):
            value = getattr(getattr(inst, section), f.name)
            if isinstance(value, float) and f.name != "g1_phase_shift_pi":
                _require(value > 0, where, f"{section}.{f.name}", f"must be > 0, got {value}")
    _require(0 < inst.gratings.duty_cycle < 1, where, "gratings.duty_cycle", "must be in (0, 1)")
    _require(inst.detector.rows > 0 and inst.detector.columns > 0, where, "detector.rows", "must be > 0")
    _require(inst.detector.pixel_um > 0, where, "detector.pixel_um", "must be > 0")
    tube = inst.tube
    _require(0 < tube.kv <= tube.kv_max, where, "tube.kv", f"must be in (0, kv_max={tube.kv_max}]")
    _require(0 < tube.ma <= tube.ma_max, where, "tube.ma", f"must be in (0, ma_max={tube.ma_max}]")
    _limits(inst.g2.limits_um, where, "g2.limits_um")
    _require(inst.g2.settle_s >= 0, where, "g2.settle_s", "must be >= 0")
    _require(inst.g2.tolerance_um > 0, where, "g2.tolerance_um", "must be > 0")
    stage = inst.stage
    _limits(stage.x_limits_mm, where, "stage.x_limits_mm")
    _limits(stage.y_limits_mm, where, "stage.y_limits_mm")
    for name in ("sample_position_mm", "reference_position_mm"):
        x, y = getattr(stage, name)
        _require(
            stage.x_limits_mm[0] <= x <= stage.x_limits_mm[1]
            and stage.y_limits_mm[0] <= y <= stage.y_limits_mm[1],
            where, f"stage.{name}", f"({x}, {y}) is outside the stage limits",
        )
    scan = inst.scan
    _require(scan.steps >= 3, where, "scan.steps", f"need at least 3 phase steps, got {scan.steps}")
    _require(0 < scan.exposure_s <= scan.max_exposure_s, where, "scan.exposure_s",
             f"must be in (0, max_exposure_s={scan.max_exposure_s}]")
    _require(scan.dark_frames >= 0, where, "scan.dark_frames", "must be >= 0")
    _require(scan.max_frame_s > 0, where, "scan.max_frame_s", "must be > 0")
    for f in dataclasses.fields(inst.dose):
        value = getattr(inst.dose, f.name)
        _require(value > 0, where, f"dose.{f.name}", f"must be > 0, got {value}")


def _check_simulation(sim: SimulationConfig, setup: Setup, where: str) -> None:
    _require(sim.time_scale >= 0, where, "time_scale", "must be >= 0")
    det = setup.detector
    _require(det.binning >= 1, where, "detector.binning", "must be >= 1")
    if det.region is not None:
        row0, col0, rows, cols = det.region
        _require(
            row0 >= 0 and col0 >= 0 and rows > 0 and cols > 0
            and row0 + rows <= det.rows and col0 + cols <= det.columns,
            where, "detector.region",
            f"{list(det.region)} does not fit the {det.rows} x {det.columns} detector",
        )
        _require(rows >= det.binning and cols >= det.binning, where, "detector.region",
                 "smaller than one binned pixel")
    _require(sim.phantom.clusters_per_class >= 0, where, "phantom.clusters_per_class", "must be >= 0")


def _limits(pair: tuple[float, float], where: str, name: str) -> None:
    _require(pair[0] < pair[1], where, name, f"low limit {pair[0]} must be below high limit {pair[1]}")
