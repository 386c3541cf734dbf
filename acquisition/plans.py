"""Bluesky plans of the interferometer.

``darkfield_projection`` is one dark-field projection: dark frames (shutter closed), a
reference phase-stepping scan (sample out of the beam) and a sample phase-stepping scan,
9 steps x 9 s by default (Scherer et al. 2016, Discussion and Methods).  Every argument is
checked when the plan is made, before anything moves or any X-ray is made; the shutter is
closed on every way out.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import math
from importlib import metadata

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from .dose import planned_dose_mgy
from .instrument import Instrument

STREAMS = {"dark": "dark", "reference": "reference", "sample": "primary"}
"""Event stream of each set of frames (the sample scan is bluesky's primary stream)."""


class PlanArgumentError(ValueError):
    """A plan argument is out of range; raised before anything moves."""


def close_shutter(tube):
    """Close the tube shutter and wait for the readback."""
    yield from bps.abs_set(tube.shutter, 0, wait=True)


def open_shutter(tube):
    """Open the tube shutter; fails (and so ends the plan) if the tube refuses."""
    yield from bps.abs_set(tube.shutter, 1, wait=True)


def phase_step_positions(start_um: float, period_um: float, steps: int) -> list[float]:
    """G2 positions (um) of ``steps`` equal steps over one period from ``start_um``."""
    return [start_um + k * period_um / steps for k in range(steps)]


def darkfield_projection(
    instrument: Instrument,
    *,
    steps: int | None = None,
    exposure_s: float | None = None,
    dark_frames: int | None = None,
    kv: float | None = None,
    ma: float | None = None,
    sample_position_mm: tuple[float, float] | None = None,
    reference_position_mm: tuple[float, float] | None = None,
    sample: str | dict | None = None,
    operator: str | None = None,
    md: dict | None = None,
):
    """One dark-field projection: darks, reference scan, sample scan.

    Defaults come from the configuration (``scan``, ``tube`` and ``stage`` sections).
    ``sample`` is an id or a dict with at least ``id`` (and ``thickness_mm`` for the dose).
    Raises :class:`PlanArgumentError` when called (not when run) for any argument out of
    range, so nothing has moved yet.
    """
    cfg = instrument.config.instrument
    steps = cfg.scan.steps if steps is None else steps
    exposure_s = cfg.scan.exposure_s if exposure_s is None else exposure_s
    dark_frames = cfg.scan.dark_frames if dark_frames is None else dark_frames
    kv = cfg.tube.kv if kv is None else kv
    ma = cfg.tube.ma if ma is None else ma
    sample_position_mm = tuple(sample_position_mm or cfg.stage.sample_position_mm)
    reference_position_mm = tuple(reference_position_mm or cfg.stage.reference_position_mm)
    sample = _sample_metadata(sample)
    period_um = cfg.gratings.g2_period_um
    positions = phase_step_positions(cfg.g2.start_um, period_um, _whole(steps, "steps", 3))

    _check(_finite(exposure_s) and 0 < exposure_s <= cfg.scan.max_exposure_s,
           f"exposure_s={exposure_s!r}: must be in (0, {cfg.scan.max_exposure_s}] s")
    _whole(dark_frames, "dark_frames", 0)
    _check(_finite(kv) and 0 < kv <= cfg.tube.kv_max, f"kv={kv!r}: must be in (0, {cfg.tube.kv_max}] kV")
    _check(_finite(ma) and 0 < ma <= cfg.tube.ma_max, f"ma={ma!r}: must be in (0, {cfg.tube.ma_max}] mA")
    low, high = cfg.g2.limits_um
    _check(low <= positions[0] and positions[-1] <= high,
           f"phase steps {positions[0]:.3f}..{positions[-1]:.3f} um exceed the G2 limits {low}..{high} um")
    for name, pos in (("sample_position_mm", sample_position_mm),
                      ("reference_position_mm", reference_position_mm)):
        _check_stage(cfg.stage, name, pos)
    dose_mgy = planned_dose_mgy(cfg.dose, kv, ma, steps * exposure_s)
    _check(dose_mgy <= cfg.dose.budget_mgy,
           f"planned mean glandular dose {dose_mgy:.1f} mGy exceeds the budget of "
           f"{cfg.dose.budget_mgy:.1f} mGy")

    tube, g2, stage, detector = instrument.tube, instrument.g2, instrument.stage, instrument.detector
    readings = [detector, g2, stage, tube]
    start_md = {
        "plan_name": "darkfield_projection",
        "plan_args": {"steps": steps, "exposure_s": exposure_s, "dark_frames": dark_frames,
                      "kv": kv, "ma": ma, "sample_position_mm": list(sample_position_mm),
                      "reference_position_mm": list(reference_position_mm)},
        "detectors": [detector.name],
        "motors": [g2.name, stage.name],
        "sample": sample,
        "operator": operator or getpass.getuser(),
        "phase_stepping": {"steps": steps, "period_um": period_um, "positions_um": positions,
                           "exposure_s": exposure_s, "dark_frames": dark_frames,
                           "streams": STREAMS},
        "tube": {"kv": kv, "ma": ma},
        "planned_dose_mgy": dose_mgy,
        **instrument_metadata(instrument),
        **(md or {}),
    }

    def frames(stream: str, count: int):
        for _ in range(count):
            yield from bps.trigger_and_read(readings, name=stream)

    def stepping_set(stream: str, position_mm: tuple[float, float]):
        yield from bps.checkpoint()
        yield from close_shutter(tube)
        yield from bps.mv(stage.x, position_mm[0], stage.y, position_mm[1])
        yield from bps.mv(g2, positions[0])
        yield from open_shutter(tube)
        for x_um in positions:
            yield from bps.mv(g2, x_um)
            yield from frames(stream, 1)
        yield from close_shutter(tube)

    def body():
        yield from close_shutter(tube)
        yield from bps.mv(tube.kv, kv, tube.ma, ma)
        yield from bps.mv(detector.cam.acquire_time, exposure_s)
        yield from bps.checkpoint()
        yield from frames(STREAMS["dark"], dark_frames)
        yield from stepping_set(STREAMS["reference"], reference_position_mm)
        yield from stepping_set(STREAMS["sample"], sample_position_mm)

    plan = bpp.run_wrapper(body(), md=start_md)
    plan = bpp.stage_wrapper(plan, [detector])
    return bpp.finalize_wrapper(plan, functools.partial(close_shutter, tube))


def instrument_metadata(instrument: Instrument) -> dict:
    """Geometry, gratings, detector pixel, config hash and software version for a start doc."""
    config = instrument.config
    setup = config.setup
    geometry = dataclasses.asdict(setup.geometry)
    geometry.update(source_sample_mm=setup.geometry.source_sample_mm,
                    sample_detector_mm=setup.geometry.sample_detector_mm,
                    magnification=setup.geometry.magnification)
    det = setup.detector
    return {
        "geometry": geometry,
        "gratings": _plain(dataclasses.asdict(setup.gratings)),
        "detector_pixel": {"pixel_um": det.pixel_um, "binning": det.binning,
                           "region": list(det.region) if det.region else None,
                           "sample_pixel_mm": det.pixel_um * det.binning / 1000.0
                           / setup.geometry.magnification},
        "config_digest": config.digest,
        "software_version": _version(),
    }


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _version() -> str:
    try:
        return metadata.version("talbot-lau")
    except metadata.PackageNotFoundError:
        return "unknown"


def _sample_metadata(sample) -> dict:
    if sample is None:
        return {"id": "unnamed"}
    if isinstance(sample, str):
        return {"id": sample}
    if isinstance(sample, dict) and isinstance(sample.get("id"), str):
        return dict(sample)
    raise PlanArgumentError(f"sample={sample!r}: give an id or a dict with an 'id'")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise PlanArgumentError(message)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value, name: str, minimum: int) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
           f"{name}={value!r}: must be a whole number >= {minimum}")
    return value


def _check_stage(stage_cfg, name: str, position) -> None:
    _check(len(position) == 2 and all(_finite(v) for v in position),
           f"{name}={position!r}: give (x, y) in mm")
    x, y = position
    (xlo, xhi), (ylo, yhi) = stage_cfg.x_limits_mm, stage_cfg.y_limits_mm
    _check(xlo <= x <= xhi and ylo <= y <= yhi,
           f"{name}=({x}, {y}) mm is outside the stage limits x {xlo}..{xhi}, y {ylo}..{yhi} mm")
