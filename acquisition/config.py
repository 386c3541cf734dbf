"""Read and validate the YAML configuration in one place; hand down plain typed values.

``load_config()`` reads ``configs/instrument.yaml`` and ``configs/simulation.yaml`` (the
embedded defaults, or files given by the user) into a :class:`Config`.  Every key is
checked against the dataclass it fills; the first wrong one raises :class:`ConfigError`
naming the file and the dotted field, e.g. ``simulation.yaml: detector.binnig: unknown
field (expected one of: ...)``.

The rule for files given by the user: nothing is merged.  A file given for either kind
replaces the embedded file of that kind entirely and must be complete: every section and
every field the embedded file has must be there (an empty or partial file raises one
ConfigError naming the file and all missing sections and fields).  The embedded defaults
are used only for a kind no file was given for.  Fields the embedded files leave out
(e.g. ``detector.gain_adu_per_kev``, ``phantom.textures``) keep the physics dataclasses'
defaults and may be given.

Every number must be finite and inside a sane physical range (``INSTRUMENT_RANGES``,
``DETECTOR_RANGES``, ``SIMULATION_RANGES``): the detector region inside the panel, at most
4096 pixels a side, binning 1..16, phase steps 3..64, at most 10 clusters per class, a
time scale in [0, 10] ...; names must be ones the models know (anode, filter materials,
textures).  The reference position must take the sample out of the detector's field
(the read-out region projected to the sample plane), and the tube's spectrum at the
operating point must reach the detector.  So no configuration that loads can make the
physics engine raise, hang or need more than a few GB for a frame.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simulators.physics.phantom import TEXTURES, PhantomSpec
from simulators.physics.setup import (
    Detector,
    Geometry,
    Gratings,
    Interferometer,
    Setup,
    Source,
)

# the frame file's compressions, and the light modules of the physics engine (dataclasses,
# numpy): spekpy and xraydb, which take seconds to import, are imported by the checks that
# need them, when a file is loaded
from simulators.shared.frame_file import COMPRESSIONS

from .errors import TalbotLauError


class ConfigError(TalbotLauError, ValueError):
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
    reference_max_age_h: float = 2.0
    """Oldest stored reference fit a projection may use (h); the fringe drifts with
    temperature, so an older one is refused (``acquisition.storage.reference_fit``)."""


@dataclass(frozen=True)
class DoseConfig:
    """What a lab measures at the sample at the reference tube settings, and the budget
    (Scherer et al. 2016, Methods "Dose"): incident air kerma rate (mGy/s, behind G0), first
    half-value layer (mm Al), the reference breast (compressed thickness mm, glandularity)."""

    air_kerma_mgy_per_s: float = 2.1
    hvl_mm_al: float = 0.8
    reference_kv: float = 40.0
    reference_ma: float = 70.0
    reference_thickness_mm: float = 45.0
    glandularity: float = 0.5
    """Only 0.5: the g-factors are for 50 % glandularity (Dance's c-factor is 1 there)."""
    budget_mgy: float = 200.0


@dataclass(frozen=True)
class EpicsConfig:
    """Where the real instrument lives: PV prefix and the detector IOC's file directory."""

    prefix: str = "TL:"
    write_path: str = "/data/talbot-lau"


@dataclass(frozen=True)
class ProcessingConfig:
    """How the processor classifies: the tissue calibration file it applies (None: none).

    A relative path is looked up next to the instrument file, then among the embedded
    configs/; after loading it is the absolute path of a file that was read and checked
    (``acquisition.storage.tissue_calibration_file``)."""

    tissue_calibration: str | None = None


@dataclass(frozen=True)
class DetectorConfig(Detector):
    """instrument.yaml's detector: the panel (the physics engine's Detector) and how the
    HDF5 plugin stores its frames, ``compression`` "None", "zlib" or "bslz4"
    (``simulators.shared.frame_file``; NDFileHDF5's Compression)."""

    compression: str = "None"


@dataclass(frozen=True)
class InstrumentConfig:
    """configs/instrument.yaml."""

    geometry: Geometry = field(default_factory=Geometry)
    gratings: Gratings = field(default_factory=Gratings)
    source: Source = field(default_factory=Source)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tube: TubeConfig = field(default_factory=TubeConfig)
    g2: PiezoConfig = field(default_factory=PiezoConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    dose: DoseConfig = field(default_factory=DoseConfig)
    epics: EpicsConfig = field(default_factory=EpicsConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)


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
    """Load, validate and combine the two YAML files (None = the embedded default).

    A file given here must be complete (every section and field of the embedded file of
    its kind); every value is checked against its type and a physical range.  Raises one
    :class:`ConfigError` naming the file and the dotted field of the first problem.
    """
    instrument_path = Path(instrument) if instrument else default_config_dir() / "instrument.yaml"
    simulation_path = Path(simulation) if simulation else default_config_dir() / "simulation.yaml"
    instrument_text = _read(instrument_path)
    simulation_text = _read(simulation_path)
    inst_where, sim_where = instrument_path.name, simulation_path.name
    inst_data = _parse(instrument_text, instrument_path)
    sim_data = _parse(simulation_text, simulation_path)
    inst = build(InstrumentConfig, inst_data, inst_where)
    sim = build(SimulationConfig, sim_data, sim_where)
    detector = _override(_panel(inst.detector), sim.detector, sim_where)
    _complete(inst_data, _template("instrument.yaml"), inst_where)
    _complete(sim_data, _template("simulation.yaml"), sim_where)
    setup = Setup(
        geometry=inst.geometry,
        gratings=inst.gratings,
        source=inst.source,
        detector=detector,
        interferometer=sim.interferometer,
    )
    _check_instrument(inst, inst_where)
    inst = _resolve_processing(inst, instrument_path, inst_where)
    _check_simulation(sim, setup, sim_where, inst_where)
    _check_reference_field(inst, setup, inst_where)
    _check_spectrum(inst, setup, inst_where)
    digest = hashlib.sha256((instrument_text + "\0" + simulation_text).encode()).hexdigest()
    return Config(instrument=inst, simulation=sim, setup=setup, digest=digest)


MAX_FILE_BYTES = 1 << 20
"""A configuration file is a page of YAML; anything bigger is not one (and /dev/zero never ends)."""


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration file ({err.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB, not a configuration file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _parse(text: str, path: Path) -> dict:
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of sections at the top level, "
                          f"got {type(data).__name__} {_short(data)}")
    return data


@functools.lru_cache(maxsize=2)
def _template(name: str) -> dict:
    """The embedded file ``name`` parsed: the keys a user's file of that kind must have."""
    path = default_config_dir() / name
    return _parse(_read(path), path)


def _complete(data: dict, template: dict, where: str) -> None:
    """Refuse a file missing any section or field the embedded file of its kind has."""
    sections, fields = [], []

    def walk(have: dict, want: dict, prefix: str) -> None:
        for key, value in want.items():
            if key not in have:
                if not prefix and isinstance(value, dict):
                    sections.append(key)
                else:
                    fields.append(prefix + key)
            elif isinstance(value, dict) and isinstance(have[key], dict):
                walk(have[key], value, f"{prefix}{key}.")

    walk(data, template, "")
    if not sections and not fields:
        return
    parts = []
    if sections:
        parts.append(f"missing section{'s' if len(sections) > 1 else ''} {', '.join(sections)}")
    if fields:
        parts.append(f"missing field{'s' if len(fields) > 1 else ''} {', '.join(fields)}")
    what = "empty file: " if not data else ""
    raise ConfigError(f"{where}: {what}{'; '.join(parts)} (a configuration file given by the "
                      "user must be complete; the embedded configs/ files show every key)")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def _short(value) -> str:
    """A bounded repr (a YAML alias bomb must not be printed in full)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def build(cls: type, data: Any, where: str, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'}: expected a mapping, "
                          f"got {_short(data)}")
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


def _panel(detector: DetectorConfig) -> Detector:
    """The physics engine's Detector of instrument.yaml's detector section."""
    return Detector(**{f.name: getattr(detector, f.name) for f in dataclasses.fields(Detector)})


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
            raise ConfigError(f"{where}: {name}: expected true or false, got {_short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name}: expected a whole number, got {_short(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name}: expected a number, got {_short(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {name}: expected a finite number, got {_short(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name}: expected text, got {_short(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {name}: expected a list, got {_short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) > MAX_LIST:
                raise ConfigError(f"{where}: {name}: at most {MAX_LIST} entries, got {len(value)}")
            return tuple(_convert(args[0], v, where, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: {name}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name}: expected a mapping, got {_short(value)}")
        return dict(value)
    return value


MAX_LIST = 16
"""Longest list a configuration field takes (filters, textures)."""


def _require(condition: bool, where: str, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {name}: {message}")


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _in_range(value, interval: str, where: str, name: str, unit: str = "") -> None:
    """``interval`` like "(0, 1e4]": open ( ), closed [ ]; the value must lie inside."""
    low_text, high_text = interval[1:-1].split(",")
    low, high = float(low_text), float(high_text)
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    unit = f" {unit}" if unit else ""
    _require(above and below, where, name, f"must be in {interval}{unit}, got {value:g}")


# Sane physical ranges of the numeric fields, as "(low, high]" intervals with units.  They
# catch typos and absurd values; the real setup (paper, Methods) sits well inside them.
MAX_PANEL_SIDE = 4096
"""Largest panel side (pixels): a full frame of the physics engine then needs about 2 GB."""
SPECTRUM_KV = (10.0, 50.0)
"""kVp range of spekpy's model for a Mo (or any non-W) anode; W reaches 500 kV."""
SEED_MAX = 2**31 - 1

INSTRUMENT_RANGES = {
    **{f"geometry.{name}": ("[0.1, 10000]", "mm") for name in
       ("source_g0_mm", "g0_g1_mm", "g1_g2_mm", "g2_detector_mm", "sample_g1_mm")},
    **{f"gratings.{name}": ("[0.1, 1000]", "um") for name in
       ("g0_period_um", "g1_period_um", "g2_period_um")},
    "gratings.g0_gold_um": ("(0, 1000]", "um"),
    "gratings.g2_gold_um": ("(0, 1000]", "um"),
    "gratings.g1_phase_shift_pi": ("[0, 2]", "pi"),
    "gratings.design_energy_kev": ("[1, 200]", "keV"),
    "gratings.talbot_order": ("[1, 99]", ""),
    "gratings.duty_cycle": ("(0, 1)", ""),
    "gratings.g1_substrate_um": ("(0, 10000]", "um"),
    "gratings.g2_substrate_um": ("(0, 10000]", "um"),
    "source.anode_angle_deg": ("(0, 90)", "deg"),
    "source.focal_spot_mm": ("(0, 10]", "mm"),
    "source.output_factor": ("(0, 100]", "(tube output / spekpy model)"),
    "tube.kv_max": (f"[{SPECTRUM_KV[0]:g}, 500]", "kV"),
    "tube.ma_max": ("(0, 1000]", "mA"),
    "g2.settle_s": ("[0, 10]", "s"),
    "g2.tolerance_um": ("(0, 1]", "um"),
    "scan.steps": ("[3, 64]", ""),
    "scan.max_exposure_s": ("(0, 3600]", "s"),
    "scan.dark_frames": ("[0, 100]", ""),
    "scan.max_frame_s": ("(0, 60]", "s"),
    "scan.reference_max_age_h": ("(0, 720]", "h"),
    "dose.air_kerma_mgy_per_s": ("(0, 100]", "mGy/s"),
    "dose.hvl_mm_al": ("[0.1, 5]", "mm Al"),
    "dose.reference_kv": ("[10, 150]", "kV"),
    "dose.reference_ma": ("(0, 1000]", "mA"),
    "dose.reference_thickness_mm": ("[1, 150]", "mm"),
    "dose.glandularity": ("[0.5, 0.5]", "(50 %: the g-factors' glandularity; no c-factors here)"),
    "dose.budget_mgy": ("(0, 10000]", "mGy"),
}

DETECTOR_RANGES = {
    "pixel_um": ("[1, 1000]", "um"),
    "rows": (f"[1, {MAX_PANEL_SIDE}]", "pixels"),
    "columns": (f"[1, {MAX_PANEL_SIDE}]", "pixels"),
    "binning": ("[1, 16]", ""),
    "scintillator_um": ("[10, 5000]", "um"),
    "gain_adu_per_kev": ("(0, 100]", "ADU/keV"),
    "read_noise_adu": ("[0, 1000]", "ADU"),
    "offset_adu": ("[0, 65535]", "ADU"),
    "dark_current_adu_per_s": ("[0, 1000]", "ADU/s"),
    "saturation_adu": ("[1, 65535]", "ADU"),
    "swank_factor": ("[0.1, 1]", ""),
    "offset_drift_adu_per_h": ("[-1000, 1000]", "ADU/h"),
    "lag_fraction": ("[0, 1)", ""),
    "defect_fraction": ("[0, 0.5]", ""),
    "defect_seed": (f"[0, {SEED_MAX}]", ""),
}

SIMULATION_RANGES = {
    "time_scale": ("[0, 10]", "wall s per recorded s"),
    "seed": (f"[0, {SEED_MAX}]", ""),
    "interferometer.visibility_variation": ("[0, 1]", ""),
    "interferometer.moire_periods": ("[-100, 100]", ""),
    "interferometer.moire_angle_deg": ("[-360, 360]", "deg"),
    "interferometer.step_error_um": ("[-10, 10]", "um"),
    "interferometer.step_jitter_um": ("[0, 10]", "um"),
    "interferometer.phase_drift_rad_per_s": ("[-10, 10]", "rad/s"),
    "interferometer.flux_fluctuation": ("[0, 1]", ""),
    "phantom.slab.thickness_mm": ("(0, 150]", "mm"),
    "phantom.slab.glandularity": ("[0, 1]", ""),
    "phantom.slab.width_mm": ("(0, 1000]", "mm"),
    "phantom.slab.height_mm": ("(0, 1000]", "mm"),
    "phantom.slab.dark_field_per_mm": ("[0, 10]", "1/mm"),
    "phantom.slab.edge_mm": ("[0, 100]", "mm"),
    "phantom.slab.glandular_sd": ("[0, 1]", ""),
    "phantom.slab.texture_beta": ("[0, 6]", ""),
    "phantom.slab.fibres_per_cm2": ("[0, 5]", "1/cm2"),
    "phantom.slab.ducts_per_cm2": ("[0, 1]", "1/cm2"),
    "phantom.slab.strand_dark_field_per_mm": ("[0, 10]", "1/mm"),
    "phantom.slab.texture_seed": (f"[0, {SEED_MAX}]", ""),
    "phantom.type_i_fraction": ("[0, 1]", ""),
    "phantom.clusters_per_class": ("[0, 10]", ""),
    "phantom.spacing_mm": ("(0, 1000]", "mm"),
    "phantom.seed": (f"[0, {SEED_MAX}]", ""),
}


def _check_ranges(obj, ranges: dict, where: str, prefix: str = "") -> None:
    for name, (interval, unit) in ranges.items():
        _in_range(_get(obj, name), interval, where, prefix + name, unit)


def _check_instrument(inst: InstrumentConfig, where: str) -> None:
    """Physical ranges the types alone do not say."""
    _check_ranges(inst, INSTRUMENT_RANGES, where)
    geometry = inst.geometry
    _require(geometry.sample_g1_mm < geometry.g0_g1_mm, where, "geometry.sample_g1_mm",
             f"the sample must sit between G0 and G1 (< g0_g1_mm = {geometry.g0_g1_mm:g} mm)")
    for i, size in enumerate(inst.gratings.g2_field_mm):
        _in_range(size, "[1, 1000]", where, f"gratings.g2_field_mm[{i}]", "mm")
    source = inst.source
    _require(source.target in SPECTRUM_TARGETS, where, "source.target",
             f"{source.target!r} is not an anode the spectrum model knows "
             f"({', '.join(SPECTRUM_TARGETS)})")
    materials = _filter_materials()
    for i, (material, thickness) in enumerate(source.filtration):
        _require(material in materials, where, f"source.filtration[{i}][0]",
                 f"{material!r} is not a spekpy material (e.g. Al, Be, Si, Cu, Mo, Rh)")
        _in_range(thickness, "[0, 100]", where, f"source.filtration[{i}][1]", "mm")
    _check_ranges(inst.detector, DETECTOR_RANGES, where, "detector.")
    _require(inst.detector.compression in COMPRESSIONS, where, "detector.compression",
             f"{_short(inst.detector.compression)} is not a compression the detector writes "
             f"(one of {', '.join(COMPRESSIONS)})")
    tube = inst.tube
    kv_top = 500.0 if source.target == "W" else SPECTRUM_KV[1]
    _require(tube.kv_max <= kv_top, where, "tube.kv_max",
             f"{tube.kv_max:g} kV is above the {source.target} anode's {kv_top:g} kV "
             "of the spectrum model")
    _require(SPECTRUM_KV[0] <= tube.kv <= tube.kv_max, where, "tube.kv",
             f"must be in [{SPECTRUM_KV[0]:g}, kv_max={tube.kv_max:g}] kV, got {tube.kv:g}")
    _require(0 < tube.ma <= tube.ma_max, where, "tube.ma",
             f"must be in (0, ma_max={tube.ma_max:g}] mA, got {tube.ma:g}")
    g2 = inst.g2
    _limits(g2.limits_um, where, "g2.limits_um", 1000.0, "um")
    period, steps = inst.gratings.g2_period_um, inst.scan.steps
    last = g2.start_um + period * (steps - 1) / steps
    _require(g2.limits_um[0] <= g2.start_um and last <= g2.limits_um[1], where, "g2.start_um",
             f"the {steps} phase steps {g2.start_um:g}..{last:.3f} um leave g2.limits_um "
             f"{g2.limits_um[0]:g}..{g2.limits_um[1]:g} um")
    stage = inst.stage
    _limits(stage.x_limits_mm, where, "stage.x_limits_mm", 1000.0, "mm")
    _limits(stage.y_limits_mm, where, "stage.y_limits_mm", 1000.0, "mm")
    for name in ("sample_position_mm", "reference_position_mm"):
        x, y = getattr(stage, name)
        _require(
            stage.x_limits_mm[0] <= x <= stage.x_limits_mm[1]
            and stage.y_limits_mm[0] <= y <= stage.y_limits_mm[1],
            where, f"stage.{name}", f"({x:g}, {y:g}) is outside the stage limits",
        )
    scan = inst.scan
    _require(0 < scan.exposure_s <= scan.max_exposure_s, where, "scan.exposure_s",
             f"must be in (0, max_exposure_s={scan.max_exposure_s:g}] s, got {scan.exposure_s:g}")
    epics = inst.epics
    _require(bool(epics.prefix) and not any(c.isspace() for c in epics.prefix), where,
             "epics.prefix", f"must be a PV prefix without spaces, got {epics.prefix!r}")
    _require(bool(epics.write_path.strip()), where, "epics.write_path", "must not be empty")


def _resolve_processing(inst: InstrumentConfig, path: Path, where: str) -> InstrumentConfig:
    """The tissue calibration file found (next to the file, then embedded), read and checked."""
    name = inst.processing.tissue_calibration
    if name is None:
        return inst
    from .storage.tissue_calibration_file import (
        CalibrationFileError,
        read_tissue_calibration,
    )

    _require(bool(name.strip()), where, "processing.tissue_calibration",
             "must name a calibration file, or be null for none")
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [path.parent / given, default_config_dir() / given]
    found = next((c for c in candidates if c.is_file()), None)
    _require(found is not None, where, "processing.tissue_calibration",
             f"no such file {name!r} (looked in {', '.join(str(c.parent) for c in candidates)})")
    try:
        read_tissue_calibration(found)
    except CalibrationFileError as err:
        raise ConfigError(f"{where}: processing.tissue_calibration: {err}") from None
    processing = dataclasses.replace(inst.processing, tissue_calibration=str(found.resolve()))
    return dataclasses.replace(inst, processing=processing)


SPECTRUM_TARGETS = ("Mo", "Rh", "W", "Cr", "Cu", "Ag", "Au")
"""Anodes of spekpy's model."""


@functools.lru_cache(maxsize=1)
def _filter_materials() -> frozenset[str]:
    """Material names spekpy can filter with (its bundled and user composition files)."""
    import spekpy.IO

    user, bundled = spekpy.IO.get_matls()
    return frozenset(user) | frozenset(bundled)


def _check_simulation(sim: SimulationConfig, setup: Setup, where: str, inst_where: str) -> None:
    _check_ranges(sim, SIMULATION_RANGES, where)
    det = setup.detector
    for name, (interval, unit) in DETECTOR_RANGES.items():  # the merged detector: name the file
        _in_range(getattr(det, name), interval, where if name in sim.detector else inst_where,
                  f"detector.{name}", unit)
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
    else:
        _require(det.rows >= det.binning and det.columns >= det.binning, where, "detector.binning",
                 f"{det.binning} is larger than the {det.rows} x {det.columns} detector")
    _require(det.offset_adu < det.saturation_adu, where, "detector.offset_adu",
             f"{det.offset_adu:g} ADU is not below saturation_adu={det.saturation_adu}")
    phantom = sim.phantom
    _require(bool(phantom.textures), where, "phantom.textures", "give at least one class")
    for i, texture in enumerate(phantom.textures):
        _require(texture in TEXTURES, where, f"phantom.textures[{i}]",
                 f"{texture!r} is not a class (expected one of: {', '.join(TEXTURES)})")
    from simulators.physics.materials import MATERIALS

    _require(phantom.material in MATERIALS, where, "phantom.material",
             f"{phantom.material!r} is not a known material (expected one of: {', '.join(MATERIALS)})")
    _require(phantom.slab.embedding in ("paraffin", "native"), where, "phantom.slab.embedding",
             f"expected paraffin or native, got {phantom.slab.embedding!r}")
    half = min(phantom.slab.width_mm, phantom.slab.height_mm) / 2
    _require(phantom.slab.edge_mm <= half, where, "phantom.slab.edge_mm",
             f"{phantom.slab.edge_mm:g} mm is more than half the slab ({half:g} mm)")
    for i, step in enumerate(phantom.slab.steps_mm):
        _in_range(step, "(0, 150]", where, f"phantom.slab.steps_mm[{i}]", "mm")
    if phantom.slab.embedding == "paraffin":
        for name in ("glandular_sd", "fibres_per_cm2", "ducts_per_cm2"):
            _require(getattr(phantom.slab, name) == 0, where, f"phantom.slab.{name}",
                     "the breast texture is for native tissue (embedding: native); give 0 for paraffin")


def sample_field_mm(setup: Setup) -> tuple[float, float]:
    """(height, width) mm of the detector's read-out field projected to the sample plane:
    what one frame (one mosaic tile) sees of the sample."""
    det = setup.detector
    rows, cols = (det.region[2], det.region[3]) if det.region else (det.rows, det.columns)
    pixel_mm = det.pixel_um / 1000.0 / setup.geometry.magnification
    return rows * pixel_mm, cols * pixel_mm


def _check_reference_field(inst: InstrumentConfig, setup: Setup, where: str) -> None:
    """The reference position must put the sample's field out of the detector's field."""
    height, width = sample_field_mm(setup)
    (sx, sy), (rx, ry) = inst.stage.sample_position_mm, inst.stage.reference_position_mm
    _require(abs(rx - sx) >= width or abs(ry - sy) >= height, where, "stage.reference_position_mm",
             f"({rx:g}, {ry:g}) mm leaves the sample at sample_position_mm ({sx:g}, {sy:g}) mm in "
             f"the {height:.1f} x {width:.1f} mm (height x width) field of view: move it at least "
             f"{width:.1f} mm in x or {height:.1f} mm in y away")


def _check_spectrum(inst: InstrumentConfig, setup: Setup, where: str) -> None:
    """The simulated tube's spectrum at the operating point must reach the detector."""
    from simulators.physics.spectrum import spectrum_at_detector

    try:
        with np.errstate(all="ignore"):
            spectrum = spectrum_at_detector(inst.tube.kv, setup.source, setup.geometry, setup.detector)
    except Exception as err:  # spekpy raises bare Exception for what it refuses
        raise ConfigError(f"{where}: source: the spectrum model refuses it: {err}") from None
    _require(spectrum.energies_kev.size > 0 and bool(np.all(np.isfinite(spectrum.photons_per_mm2_mas))),
             where, "source.filtration",
             "no X-rays reach the detector through this filtration, air path and screen")


def _limits(pair: tuple[float, float], where: str, name: str, bound: float, unit: str) -> None:
    _require(pair[0] < pair[1], where, name, f"low limit {pair[0]:g} must be below high limit {pair[1]:g}")
    _require(-bound <= pair[0] and pair[1] <= bound, where, name,
             f"limits {pair[0]:g}..{pair[1]:g} {unit} exceed +-{bound:g} {unit}")


def embedded_calibration():
    """The tissue calibration (``TissueCalibration``) of the embedded configuration
    (configs/instrument.yaml), or None: what the processor and the offline reconstruction
    apply when not told otherwise."""
    from .storage.tissue_calibration_file import configured_calibration

    return configured_calibration(load_config())
