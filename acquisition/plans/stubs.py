"""Building blocks shared by the projection and mosaic plans: the source prepared, dark and
phase-stepping sets (repeated when a frame is rejected or an IOC is lost), the dose tally,
the start metadata, and the run around them that is safe on every way out."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from ophyd import Signal

from ..dose import dose_rate_mgy_per_s
from ..instrument import Instrument
from ..storage.nexus import software_version
from . import safety
from .checks import (
    HEARTBEAT_MARGIN_S,
    RECOVERABLE,
    FrameRejected,
    SetRejected,
    checked_frame,
    connection_problem,
    file_plugin_message,
    image_exposure_s,
    reason,
    wait_for_beam,
    wait_for_connection,
)
from .safety import (
    InstrumentConnection,
    band_suspenders,
    close_shutter,
    connection_suspender,
    open_shutter,
    watched_signals,
)
from .settings import SteppingSettings

log = logging.getLogger(__name__)

STREAMS = {"dark": "dark", "reference": "reference", "sample": "primary",
           "reference_dark": "reference_dark", "lag_flush": "lag_flush"}
"""Event stream of each set of frames (the sample scan is bluesky's primary stream).
``reference_dark``: dark frames at the reference's exposure, taken only when it differs
from the sample's (dark current scales with exposure); otherwise ``dark`` serves both.
``lag_flush``: frames read out with the shutter closed and not used (:func:`lag_flush`)."""
LAG_FLUSH_FRAMES = 2
"""Shutter-closed frames read out before short exposures that follow long ones: the panel's
image lag (the twin's: 1 % of the previous frame's signal) of a 9 s frame is 30 % of a
0.3 s frame; each flush frame leaves 1 % of the lag before it."""
SET_ATTEMPTS = 2
"""How often a phase-stepping set is taken before a rejected frame fails the run."""


def prepare_source(instrument: Instrument, settings: SteppingSettings):
    """Shutter closed, then the tube's operating point and the detector's exposure."""
    tube = instrument.tube
    yield from close_shutter(tube)
    # lower the current before the voltage changes (generator practice), raise it after
    yield from bps.mv(tube.ma, min(settings.ma, float(tube.ma.get())))
    yield from bps.mv(tube.kv, settings.kv)
    yield from bps.mv(tube.ma, settings.ma)
    yield from set_exposure(instrument, settings.exposure_s)


def set_exposure(instrument: Instrument, exposure_s: float):
    """The detector's exposure per image (s), split by :func:`panel_frames`."""
    frame_s, frames = panel_frames(exposure_s, instrument.config.instrument.scan.max_frame_s)
    cam = instrument.detector.cam
    yield from bps.mv(cam.acquire_time, frame_s, cam.num_exposures, frames)


def ensure_exposure(instrument: Instrument, settings: SteppingSettings):
    """Read the detector's exposure back and set ``settings.exposure_s`` if it differs
    (a set whose exposure differs from the one before it: a reference at its own)."""
    exposure_s = yield from image_exposure_s(instrument)
    if not math.isclose(exposure_s, settings.exposure_s, rel_tol=1e-3):
        yield from set_exposure(instrument, settings.exposure_s)


def panel_frames(exposure_s: float, max_frame_s: float) -> tuple[float, int]:
    """An exposure (s) as ``frames`` equal panel frames of at most ``max_frame_s`` (s) each,
    summed by the detector into one image (areaDetector's NumExposures)."""
    frames = max(1, math.ceil(exposure_s / max_frame_s - 1e-9))
    return exposure_s / frames, frames


def restore_settings(instrument: Instrument, settings: SteppingSettings):
    """After an IOC came back: shutter closed, the detector staged anew (file settings),
    the operating point and exposure re-applied and read back.  A restarted IOC's PVs come
    back one by one: a step that fails for want of a connection is retried, for at most
    ``safety.LOST_IOC_TIMEOUT_S``; any other failure raises :class:`SetRejected` at once,
    with what the detector's file plugin says."""
    detector = instrument.detector
    deadline = time.monotonic() + safety.LOST_IOC_TIMEOUT_S
    while True:
        try:
            yield from wait_for_connection(instrument)
            yield from close_shutter(instrument.tube)
            yield from bps.unstage(detector)
            yield from bps.stage(detector)
            yield from prepare_source(instrument, settings)
            exposure_s = yield from image_exposure_s(instrument)
            break
        except RECOVERABLE as err:
            if not connection_problem(err):
                message = yield from file_plugin_message(instrument)
                raise SetRejected(f"settings not restored: {reason(err)}{message}") from err
            if time.monotonic() > deadline:
                raise safety.InstrumentLost(f"settings not restored after the IOC came back: {err}") from err
            log.warning("restoring the settings: %s; again", err)
            yield from bps.sleep(0.5)
    if not math.isclose(exposure_s, settings.exposure_s, rel_tol=1e-3):
        raise FrameRejected(f"{detector.name}: exposure reads {exposure_s:g} s after re-applying "
                            f"{settings.exposure_s:g} s")


def dark_set(instrument: Instrument, settings: SteppingSettings, extra=(), stream: str = STREAMS["dark"]):
    """``dark_frames`` frames at ``settings.exposure_s`` with the shutter closed, after a
    checkpoint; each checked, the set repeated as :func:`stepping_set` repeats its sets."""

    def frames():
        yield from close_shutter(instrument.tube)
        yield from ensure_exposure(instrument, settings)
        for _ in range(settings.dark_frames):
            yield from checked_frame(instrument, settings, stream, extra, beam=False)

    yield from bps.checkpoint()
    yield from _repeated(instrument, settings, "dark set", frames)


def lag_flush(instrument: Instrument, settings: SteppingSettings, extra=()):
    """:data:`LAG_FLUSH_FRAMES` dark frames at ``settings.exposure_s`` in the stream
    ``lag_flush`` (not used by the processing), to read the lag of longer frames out."""
    flush = dataclasses.replace(settings, dark_frames=LAG_FLUSH_FRAMES)
    yield from dark_set(instrument, flush, extra, stream=STREAMS["lag_flush"])


class DoseTally:
    """Mean glandular dose delivered by the sample frames actually taken, read from the
    events as the RunEngine emits them (a repeated or rewound set counts again): subscribe
    it for the plan's run (``bpp.subs_wrapper``); :meth:`record` adds the ``dose`` event."""

    def __init__(self, instrument: Instrument, thickness_mm: float | None, exposure_s: float):
        """``thickness_mm``: the compressed breast thickness the dose is labelled for (the
        sample's breast_thickness_mm), None for the reference breast (4.5 cm)."""
        self.config = instrument.config.instrument.dose
        self.thickness_mm = thickness_mm
        self.exposure_s = exposure_s
        self.tube = instrument.tube.name
        self.signal = Signal(name="delivered_dose_mgy", value=0.0)
        self._streams: dict[str, str] = {}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "descriptor":
            self._streams[doc["uid"]] = doc["name"]
        elif name == "event" and self._streams.get(doc["descriptor"]) == STREAMS["sample"]:
            self.add(doc["data"])

    def add(self, data: dict) -> None:
        """One sample frame's dose, if its event says the shutter was open."""
        if not data.get(f"{self.tube}_shutter"):
            return
        rate = dose_rate_mgy_per_s(self.config, data[f"{self.tube}_kv"], data[f"{self.tube}_ma"],
                                   self.thickness_mm)
        self.signal.put(self.signal.get() + rate * self.exposure_s)

    def record(self):
        """One event in the stream ``dose`` with the total so far."""
        yield from bps.trigger_and_read([self.signal], name="dose")


def stepping_set(instrument: Instrument, settings: SteppingSettings, stream: str,
                 position_mm: tuple[float, float], extra=()):
    """One phase-stepping set at a stage position, after a checkpoint (a resumed plan
    repeats the whole set); the shutter is open only while G2 steps.  Every frame is
    checked (:func:`frame_problem`); a rejected frame, or a move, trigger or read that
    fails (an IOC lost mid-set), repeats the set once after the instrument answers
    again, the beam is back and the settings are re-applied; a second failure fails the
    run with the reason."""
    yield from bps.checkpoint()
    yield from _repeated(
        instrument, settings, f"{stream} set at stage ({position_mm[0]:g}, {position_mm[1]:g}) mm",
        functools.partial(_stepping_frames, instrument, settings, stream, position_mm, extra))


def _repeated(instrument: Instrument, settings: SteppingSettings, what: str, frames):
    """Run ``frames()`` (a plan) up to SET_ATTEMPTS times while it fails recoverably."""
    tube = instrument.tube
    for attempt in range(1, SET_ATTEMPTS + 1):
        try:
            yield from frames()
            return
        except RECOVERABLE as err:
            if attempt == SET_ATTEMPTS:
                yield from close_shutter(tube)
                raise SetRejected(f"{what} rejected {attempt} times; last: {reason(err)}") from err
            log.warning("repeating the %s: %s", what, reason(err))
            yield from restore_settings(instrument, settings)
            yield from wait_for_beam(tube)


def _stepping_frames(instrument, settings, stream, position_mm, extra):
    tube, g2, stage = instrument.tube, instrument.g2, instrument.stage
    yield from close_shutter(tube)
    yield from ensure_exposure(instrument, settings)
    yield from bps.mv(stage.x, position_mm[0], stage.y, position_mm[1])
    yield from bps.mv(g2, settings.positions_um[0])
    yield from open_shutter(tube, settings.exposure_s + HEARTBEAT_MARGIN_S)
    for x_um in settings.positions_um:
        yield from bps.mv(g2, x_um)
        yield from checked_frame(instrument, settings, stream, extra, beam=True)
    yield from close_shutter(tube)


def acquisition_wrapper(instrument: Instrument, settings: SteppingSettings, body, start_md: dict,
                        tally: DoseTally | None = None):
    """The run around ``body`` (a generator), safe on every way out:

    - the tube's operating point and the detector's exposure are set first
      (:func:`prepare_source`), then kV and mA are held within their band (suspenders);
    - inside the run the shutter closes first, then the ``dose`` event is recorded;
    - the dose tally (if any) follows the run's documents;
    - the detector is staged around the run (unstaged only after the shutter closed);
    - a lost IOC suspends the run; when it is back the settings are re-applied and
      checked and the interrupted set repeats, or the run fails after LOST_IOC_TIMEOUT_S.
    Pause, halt and suspension close the shutter through its ``stop()``."""
    tube = instrument.tube

    def closed_after_error(err):
        try:
            yield from close_shutter(tube)
        except Exception as close_error:  # the cause first, then what is left to check
            raise safety.ShutterNotClosed(
                f"{err}; and the shutter was not confirmed closed: {close_error}") from err

    def prepared():  # the operating point set, then held within its band while frames are taken
        yield from prepare_source(instrument, settings)
        band = band_suspenders(tube, kv=settings.kv, ma=settings.ma)
        return (yield from bpp.suspend_wrapper(body, band))

    plan = bpp.contingency_wrapper(prepared(), except_plan=closed_after_error,
                                   else_plan=functools.partial(close_shutter, tube))
    if tally is not None:
        plan = bpp.subs_wrapper(bpp.finalize_wrapper(plan, tally.record), tally)
    plan = bpp.run_wrapper(plan, md=start_md)
    plan = bpp.stage_wrapper(plan, [instrument.detector])

    def guarded():
        connection = InstrumentConnection(watched_signals(instrument))
        suspender = connection_suspender(connection, tube,
                                         functools.partial(restore_settings, instrument, settings))
        try:
            return (yield from bpp.suspend_wrapper(plan, suspender))
        finally:
            connection.close()

    return guarded()


def start_metadata(instrument: Instrument, settings: SteppingSettings, plan_name: str,
                   planned_dose_mgy: float, reference_exposure_s: float | None = None) -> dict:
    """Sample, operator, geometry, gratings, pixel, dose, config hash and version;
    ``phase_stepping`` holds the sample's and the reference's exposure per step (s)."""
    config = instrument.config
    setup = config.setup
    geometry = dataclasses.asdict(setup.geometry)
    geometry.update(source_sample_mm=setup.geometry.source_sample_mm,
                    sample_detector_mm=setup.geometry.sample_detector_mm,
                    magnification=setup.geometry.magnification)
    det = setup.detector
    point = getattr(instrument, "working_point", None)
    return {
        **({"working_point_um": point["working_point_um"]} if point else {}),
        "plan_name": plan_name,
        "detectors": [instrument.detector.name],
        "motors": [instrument.g2.name, instrument.stage.name],
        "sample": settings.sample,
        "operator": settings.operator,
        "phase_stepping": {"steps": settings.steps, "period_um": settings.period_um,
                           "positions_um": settings.positions_um, "exposure_s": settings.exposure_s,
                           "dark_frames": settings.dark_frames, "streams": STREAMS,
                           "reference_exposure_s": settings.exposure_s if reference_exposure_s is None
                           else float(reference_exposure_s)},
        "tube": {"kv": settings.kv, "ma": settings.ma, "device": instrument.tube.name},
        "source": _plain(dataclasses.asdict(setup.source)),  # anode, filtration (mm) for the record
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
