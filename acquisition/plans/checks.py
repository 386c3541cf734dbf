"""Every frame checked, and what a plan does when an IOC answers no more.

A frame is taken with :func:`checked_frame`: the exposure timer fed first, then
trigger-and-read, then :func:`frame_problem` on what the event and the detector say (the
beam: shutter, interlock, HV, fault, kV and mA; the exposure; exactly one frame written).
The errors that make a set worth repeating are :data:`RECOVERABLE`
(docs/reliability.md).
"""

from __future__ import annotations

import math
import time

import bluesky.plan_stubs as bps
from bluesky.utils import FailedStatus
from epics.ca import ChannelAccessException, ChannelAccessGetFailure
from ophyd.signal import ConnectionTimeoutError
from ophyd.utils.errors import DisconnectedError, OpException

from ..errors import TalbotLauError
from ..instrument import Instrument
from . import safety
from .safety import heartbeat, watched_signals
from .settings import SteppingSettings

HEARTBEAT_MARGIN_S = 10.0
"""The exposure timer runs this long past a frame's exposure before it closes the shutter (s)."""
BEAM_TOLERANCE = 0.05
"""kV and mA of a frame with beam may be this fraction off the plan's."""
BEAM_WAIT_S = 30.0
"""How long a repeated set waits for the interlock and the generator to be ready (s)."""


class FrameRejected(TalbotLauError, RuntimeError):
    """A frame was taken without beam, at the wrong settings, or not written."""


class SetRejected(TalbotLauError, RuntimeError):
    """A phase-stepping set was rejected as often as it may be repeated."""


RECOVERABLE = (FrameRejected, FailedStatus, OpException, TimeoutError, ChannelAccessException,
               ChannelAccessGetFailure)
"""What repeats a set: a rejected frame; a move, trigger, put or read that failed or timed
out, as when an IOC is lost mid-set (the suspender then usually takes over first)."""


def readings(instrument: Instrument, *extra) -> list:
    """What every event reads: detector, G2, stage, tube (and e.g. the tile index)."""
    return [instrument.detector, instrument.g2, instrument.stage, instrument.tube, *extra]


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
    exposure_s = yield from image_exposure_s(instrument)
    data = {key: value["value"] for key, value in reading.items()}
    problem = frame_problem(data, tube.name, settings, beam=beam, exposure_s=exposure_s,
                            written=after - before)
    if problem and after - before != 1:
        problem += yield from file_plugin_message(instrument)
    if problem:
        raise FrameRejected(f"{stream} frame {reading.get(instrument.g2.name, {}).get('value', '?')} "
                            f"(G2 um): {problem}")
    return reading


def image_exposure_s(instrument: Instrument):
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
