"""Building blocks shared by the projection and mosaic plans."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import FailedStatus
from epics.ca import ChannelAccessException, ChannelAccessGetFailure
from ophyd import Signal
from ophyd.signal import ConnectionTimeoutError
from ophyd.utils.errors import DisconnectedError, OpException

from ..dose import dose_rate_mgy_per_s
from ..instrument import Instrument
from ..nexus import software_version
from . import safety
from .safety import (InstrumentConnection, band_suspenders, close_shutter, connection_suspender,
                     heartbeat, open_shutter, watched_signals)
from .settings import SteppingSettings

log = logging.getLogger(__name__)

STREAMS = {"dark": "dark", "reference": "reference", "sample": "primary"}
"""Event stream of each set of frames (the sample scan is bluesky's primary stream)."""
HEARTBEAT_MARGIN_S = 10.0
"""The exposure timer runs this long past a frame's exposure before it closes the shutter (s)."""
BEAM_TOLERANCE = 0.05
"""kV and mA of a frame with beam may be this fraction off the plan's."""
SET_ATTEMPTS = 2
"""How often a phase-stepping set is taken before a rejected frame fails the run."""
BEAM_WAIT_S = 30.0
"""How long a repeated set waits for the interlock and the generator to be ready (s)."""


class FrameRejected(RuntimeError):
    """A frame was taken without beam, at the wrong settings, or not written."""


class SetRejected(RuntimeError):
    """A phase-stepping set was rejected as often as it may be repeated."""


RECOVERABLE = (FrameRejected, FailedStatus, OpException, TimeoutError, ChannelAccessException,
               ChannelAccessGetFailure)
"""What repeats a set: a rejected frame; a move, trigger, put or read that failed or timed
out, as when an IOC is lost mid-set (the suspender then usually takes over first)."""


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
            exposure_s = yield from _image_exposure_s(instrument)
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


def reason(err: BaseException) -> str:
    """An error as the operator needs it: a failed status says what failed it."""
    if isinstance(err, FailedStatus) and err.__cause__ is not None:
        return f"{err.__cause__!r} in {err.args[0]!r}"
    return str(err)


def connection_problem(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a channel not (yet) connected."""
    while err is not None:
        if isinstance(err, (DisconnectedError, ConnectionTimeoutError, ChannelAccessException,
                            ChannelAccessGetFailure)):
            return True
        if type(err) is TimeoutError and "could not connect" in str(err):
            return True  # ophyd's wait_for_connection
        err = err.__cause__
    return False


def file_plugin_message(instrument: Instrument):
    """'; detector says: ...' from the file plugin's WriteMessage, or '' (plan stub)."""
    signal = getattr(instrument.detector.hdf1, "write_message", None)
    if signal is None:
        return ""
    try:
        message = yield from bps.rd(signal)
    except RECOVERABLE:
        return ""
    return f"; {instrument.detector.name} says: {message}" if message else ""


def dark_set(instrument: Instrument, settings: SteppingSettings, extra=()):
    """``dark_frames`` frames with the shutter closed, after a checkpoint; each checked,
    the set repeated as :func:`stepping_set` repeats its sets."""

    def frames():
        yield from close_shutter(instrument.tube)
        for _ in range(settings.dark_frames):
            yield from checked_frame(instrument, settings, STREAMS["dark"], extra, beam=False)

    yield from bps.checkpoint()
    yield from _repeated(instrument, settings, "dark set", frames)


class DoseTally:
    """Mean glandular dose delivered by the sample frames actually taken, read from the
    events as the RunEngine emits them (a repeated or rewound set counts again): subscribe
    it for the plan's run (``bpp.subs_wrapper``); :meth:`record` adds the ``dose`` event."""

    def __init__(self, instrument: Instrument, thickness_mm: float | None, exposure_s: float):
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


def wait_for_connection(instrument: Instrument, timeout_s: float | None = None):
    """Wait until every watched Channel Access signal is connected again (at most
    ``timeout_s``, default ``safety.LOST_IOC_TIMEOUT_S``); raises InstrumentLost."""
    timeout_s = safety.LOST_IOC_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        lost = [s.pvname for s in watched_signals(instrument)
                if getattr(s, "pvname", None) and not s.connected]
        if not lost:
            return
        if time.monotonic() > deadline:
            raise safety.InstrumentLost(f"IOC lost: {', '.join(lost[:4])} disconnected for more "
                                        f"than {timeout_s:g} s; is the IOC running?")
        yield from bps.sleep(0.2)


def _stepping_frames(instrument, settings, stream, position_mm, extra):
    tube, g2, stage = instrument.tube, instrument.g2, instrument.stage
    yield from close_shutter(tube)
    yield from bps.mv(stage.x, position_mm[0], stage.y, position_mm[1])
    yield from bps.mv(g2, settings.positions_um[0])
    yield from open_shutter(tube, settings.exposure_s + HEARTBEAT_MARGIN_S)
    for x_um in settings.positions_um:
        yield from bps.mv(g2, x_um)
        yield from checked_frame(instrument, settings, stream, extra, beam=True)
    yield from close_shutter(tube)


def checked_frame(instrument: Instrument, settings: SteppingSettings, stream: str, extra=(),
                  *, beam: bool):
    """trigger_and_read one frame (the exposure timer fed first when ``beam``), then check
    it: raises :class:`FrameRejected` naming what was wrong; returns the reading."""
    detector, tube = instrument.detector, instrument.tube
    before = yield from bps.rd(detector.hdf1.num_captured)
    if beam:
        yield from heartbeat(tube, settings.exposure_s + HEARTBEAT_MARGIN_S)
    reading = yield from bps.trigger_and_read(readings(instrument, *extra), name=stream)
    after = yield from bps.rd(detector.hdf1.num_captured)
    exposure_s = yield from _image_exposure_s(instrument)
    data = {key: value["value"] for key, value in reading.items()}
    problem = frame_problem(data, tube.name, settings, beam=beam, exposure_s=exposure_s,
                            written=after - before)
    if problem and after - before != 1:
        problem += yield from file_plugin_message(instrument)
    if problem:
        raise FrameRejected(f"{stream} frame {reading.get(instrument.g2.name, {}).get('value', '?')} "
                            f"(G2 um): {problem}")
    return reading


def _image_exposure_s(instrument: Instrument):
    cam = instrument.detector.cam
    frame_s = yield from bps.rd(cam.acquire_time)
    frames = yield from bps.rd(cam.num_exposures)
    return float(frame_s) * max(int(frames), 1)


def frame_problem(data: dict, tube: str, settings: SteppingSettings, *, beam: bool,
                  exposure_s: float, written: int) -> str | None:
    """What is wrong with a frame, from its event ``data`` (the tube's readbacks), the
    exposure the detector reports (s) and the frames its file plugin wrote; None if fine.
    With ``beam``: shutter open, interlock closed, HV on, no fault, kV and mA within
    BEAM_TOLERANCE of the plan's; without: shutter closed."""
    if written != 1:
        return f"{written} frames written to the file for one trigger"
    if not math.isclose(exposure_s, settings.exposure_s, rel_tol=1e-3):
        return f"exposure {exposure_s:g} s, planned {settings.exposure_s:g} s (detector settings lost?)"
    shutter = data.get(f"{tube}_shutter")
    if not beam:
        return "shutter open during a dark frame" if shutter else None
    checks = [(shutter, "shutter closed"), (data.get(f"{tube}_interlock"), "interlock open"),
              (data.get(f"{tube}_hv_on"), "high voltage off"),
              (not data.get(f"{tube}_fault"), "generator fault")]
    for ok, reason in checks:
        if not ok:
            return f"no beam: {reason}"
    for key, planned, unit in (("kv", settings.kv, "kV"), ("ma", settings.ma, "mA")):
        value = float(data.get(f"{tube}_{key}", float("nan")))
        if not abs(value - planned) <= BEAM_TOLERANCE * planned:
            return f"tube at {value:g} {unit}, planned {planned:g} {unit}"
    return None


def wait_for_beam(tube, timeout_s: float = BEAM_WAIT_S):
    """Wait (at most ``timeout_s``) until the interlock is closed and no fault stands;
    raises :class:`SetRejected` otherwise (a suspender usually takes over first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            interlock = yield from bps.rd(tube.interlock)
            fault = yield from bps.rd(tube.fault)
        except RECOVERABLE as err:  # its IOC is coming back
            interlock, fault = f"unread ({err})", None
        if interlock == 1 and not fault:
            return
        if time.monotonic() > deadline:
            raise SetRejected(f"{tube.name}: no beam for {timeout_s:g} s (interlock {interlock}, "
                              f"fault {fault})")
        yield from bps.sleep(0.2)


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
        "tube": {"kv": settings.kv, "ma": settings.ma, "device": instrument.tube.name},
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
