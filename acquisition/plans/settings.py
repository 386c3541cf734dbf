"""The checked settings of a phase-stepping acquisition: every argument validated before
anything moves or any X-ray is made; a wrong one raises :class:`PlanArgumentError`."""

from __future__ import annotations

import getpass
import math
from dataclasses import dataclass

from ..instrument import Instrument


class PlanArgumentError(ValueError):
    """A plan argument is out of range; raised before anything moves."""


def phase_step_positions(start_um: float, period_um: float, steps: int) -> list[float]:
    """G2 positions (um) of ``steps`` equal steps over one period from ``start_um``."""
    return [start_um + k * period_um / steps for k in range(steps)]


@dataclass(frozen=True)
class SteppingSettings:
    """One phase-stepping set's parameters, checked against the instrument's limits."""

    steps: int
    exposure_s: float
    dark_frames: int
    kv: float
    ma: float
    period_um: float
    positions_um: list[float]
    sample: dict
    operator: str

    @property
    def thickness_mm(self) -> float | None:
        return self.sample.get("thickness_mm")


def stepping_settings(instrument: Instrument, *, steps=None, exposure_s=None, dark_frames=None,
                      kv=None, ma=None, sample=None, operator=None) -> SteppingSettings:
    """Defaults from the configuration; raises PlanArgumentError for anything out of range."""
    cfg = instrument.config.instrument
    steps = cfg.scan.steps if steps is None else steps
    exposure_s = cfg.scan.exposure_s if exposure_s is None else exposure_s
    dark_frames = cfg.scan.dark_frames if dark_frames is None else dark_frames
    kv = cfg.tube.kv if kv is None else kv
    ma = cfg.tube.ma if ma is None else ma
    whole(steps, "steps", 3)
    whole(dark_frames, "dark_frames", 0)
    check(finite(exposure_s) and 0 < exposure_s <= cfg.scan.max_exposure_s,
          f"exposure_s={exposure_s!r}: must be in (0, {cfg.scan.max_exposure_s}] s")
    check(finite(kv) and 0 < kv <= cfg.tube.kv_max, f"kv={kv!r}: must be in (0, {cfg.tube.kv_max}] kV")
    check(finite(ma) and 0 < ma <= cfg.tube.ma_max, f"ma={ma!r}: must be in (0, {cfg.tube.ma_max}] mA")
    period_um = cfg.gratings.g2_period_um
    positions = phase_step_positions(cfg.g2.start_um, period_um, steps)
    low, high = cfg.g2.limits_um
    check(low <= positions[0] and positions[-1] <= high,
          f"phase steps {positions[0]:.3f}..{positions[-1]:.3f} um exceed the G2 limits {low}..{high} um")
    sample = sample_metadata(sample)
    return SteppingSettings(steps, float(exposure_s), dark_frames, float(kv), float(ma), period_um,
                            positions, sample, operator or getpass.getuser())


def sample_metadata(sample) -> dict:
    """A sample id, or a dict with an 'id' (and optionally 'thickness_mm' > 0)."""
    if sample is None:
        return {"id": "unnamed"}
    if isinstance(sample, str):
        return {"id": sample}
    if isinstance(sample, dict) and isinstance(sample.get("id"), str):
        thickness = sample.get("thickness_mm")
        check(thickness is None or (finite(thickness) and thickness > 0),
              f"sample thickness_mm={thickness!r}: must be a positive number (mm)")
        return dict(sample)
    raise PlanArgumentError(f"sample={sample!r}: give an id or a dict with an 'id'")


def check_stage_position(instrument: Instrument, name: str, position) -> tuple[float, float]:
    """(x, y) mm inside the stage's travel, or PlanArgumentError."""
    stage = instrument.config.instrument.stage
    check(isinstance(position, (tuple, list)) and len(position) == 2 and all(finite(v) for v in position),
          f"{name}={position!r}: give (x, y) in mm")
    x, y = position
    (xlo, xhi), (ylo, yhi) = stage.x_limits_mm, stage.y_limits_mm
    check(xlo <= x <= xhi and ylo <= y <= yhi,
          f"{name}=({x:g}, {y:g}) mm is outside the stage limits x {xlo:g}..{xhi:g}, y {ylo:g}..{yhi:g} mm")
    return float(x), float(y)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise PlanArgumentError(message)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(value, name: str, minimum: int) -> int:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name}={value!r}: must be a whole number >= {minimum}")
    return value
