"""Building blocks shared by the projection and mosaic plans."""

from __future__ import annotations

import dataclasses
import math

import bluesky.plan_stubs as bps
from ophyd import Signal

from ..dose import dose_rate_mgy_per_s
from ..instrument import Instrument
from ..nexus import software_version
from .safety import close_shutter, open_shutter
from .settings import SteppingSettings

STREAMS = {"dark": "dark", "reference": "reference", "sample": "primary"}
"""Event stream of each set of frames (the sample scan is bluesky's primary stream)."""


def readings(instrument: Instrument, *extra) -> list:
    """What every event reads: detector, G2, stage, tube (and e.g. the tile index)."""
    return [instrument.detector, instrument.g2, instrument.stage, instrument.tube, *extra]


def prepare_source(instrument: Instrument, settings: SteppingSettings):
    """Shutter closed, then the tube's operating point and the detector's exposure."""
    tube = instrument.tube
    yield from close_shutter(tube)
    # lower the current before the voltage changes (generator practice), raise it after
    yield from bps.mv(tube.ma, min(settings.ma, float(tube.ma.get())))
    yield from bps.mv(tube.kv, settings.kv)
    yield from bps.mv(tube.ma, settings.ma)
    frame_s, frames = panel_frames(settings.exposure_s, instrument.config.instrument.scan.max_frame_s)
    cam = instrument.detector.cam
    yield from bps.mv(cam.acquire_time, frame_s, cam.num_exposures, frames)


def panel_frames(exposure_s: float, max_frame_s: float) -> tuple[float, int]:
    """An exposure (s) as ``frames`` equal panel frames of at most ``max_frame_s`` (s) each,
    summed by the detector into one image (areaDetector's NumExposures)."""
    frames = max(1, math.ceil(exposure_s / max_frame_s - 1e-9))
    return exposure_s / frames, frames


def dark_set(instrument: Instrument, settings: SteppingSettings, extra=()):
    """``dark_frames`` frames with the shutter closed, after a checkpoint."""
    yield from bps.checkpoint()
    yield from close_shutter(instrument.tube)
    for _ in range(settings.dark_frames):
        yield from bps.trigger_and_read(readings(instrument, *extra), name=STREAMS["dark"])


class DoseTally:
    """Mean glandular dose delivered by the frames actually taken with the sample in the
    beam, from the tube's readbacks in each event (a repeated set counts again)."""

    def __init__(self, instrument: Instrument, thickness_mm: float | None):
        self.config = instrument.config.instrument.dose
        self.thickness_mm = thickness_mm
        self.tube = instrument.tube.name
        self.signal = Signal(name="delivered_dose_mgy", value=0.0)

    def add(self, reading: dict, exposure_s: float) -> None:
        if not reading.get(f"{self.tube}_shutter", {}).get("value"):
            return
        kv = reading[f"{self.tube}_kv"]["value"]
        ma = reading[f"{self.tube}_ma"]["value"]
        rate = dose_rate_mgy_per_s(self.config, kv, ma, self.thickness_mm)
        self.signal.put(self.signal.get() + rate * exposure_s)

    def record(self):
        """One event in the stream ``dose`` with the total so far."""
        yield from bps.trigger_and_read([self.signal], name="dose")


def stepping_set(instrument: Instrument, settings: SteppingSettings, stream: str,
                 position_mm: tuple[float, float], extra=(), tally: DoseTally | None = None):
    """One phase-stepping set at a stage position; a checkpoint first, so a resumed plan
    repeats the whole set; the shutter is open only while G2 steps.  ``tally`` adds the
    dose of every frame taken."""
    tube, g2, stage = instrument.tube, instrument.g2, instrument.stage
    yield from bps.checkpoint()
    yield from close_shutter(tube)
    yield from bps.mv(stage.x, position_mm[0], stage.y, position_mm[1])
    yield from bps.mv(g2, settings.positions_um[0])
    yield from open_shutter(tube)
    for x_um in settings.positions_um:
        yield from bps.mv(g2, x_um)
        reading = yield from bps.trigger_and_read(readings(instrument, *extra), name=stream)
        if tally is not None:
            tally.add(reading, settings.exposure_s)
    yield from close_shutter(tube)


def start_metadata(instrument: Instrument, settings: SteppingSettings, plan_name: str,
                   planned_dose_mgy: float) -> dict:
    """Sample, operator, geometry, gratings, pixel, dose, config hash and version."""
    config = instrument.config
    setup = config.setup
    geometry = dataclasses.asdict(setup.geometry)
    geometry.update(source_sample_mm=setup.geometry.source_sample_mm,
                    sample_detector_mm=setup.geometry.sample_detector_mm,
                    magnification=setup.geometry.magnification)
    det = setup.detector
    return {
        "plan_name": plan_name,
        "detectors": [instrument.detector.name],
        "motors": [instrument.g2.name, instrument.stage.name],
        "sample": settings.sample,
        "operator": settings.operator,
        "phase_stepping": {"steps": settings.steps, "period_um": settings.period_um,
                           "positions_um": settings.positions_um, "exposure_s": settings.exposure_s,
                           "dark_frames": settings.dark_frames, "streams": STREAMS},
        "tube": {"kv": settings.kv, "ma": settings.ma},
        "planned_dose_mgy": planned_dose_mgy,
        "geometry": geometry,
        "gratings": _plain(dataclasses.asdict(setup.gratings)),
        "detector_pixel": {"pixel_um": det.pixel_um, "binning": det.binning,
                           "region": list(det.region) if det.region else None,
                           "sample_pixel_mm": det.pixel_um * det.binning / 1000.0
                           / setup.geometry.magnification},
        "config_digest": config.digest,
        "software_version": software_version(),
    }


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
