"""The shutter on every way out, the exposure timer's heartbeat, and the suspenders that
keep a plan safe while the source or an IOC misbehaves (docs/reliability.md).

- :func:`close_shutter` waits at most ``timeout_s`` for the readback, then closes through
  the tube's own fallback (a fresh Channel Access connection for the EPICS tube).
- :func:`heartbeat` re-arms the generator's exposure timer: if the plan stops feeding it
  (a hung session, a lost network), the generator closes the shutter by itself.
- :func:`source_suspenders` suspend on an open interlock, a fault, kV or mA out of band.
- :class:`InstrumentConnection` and :func:`connection_suspender` suspend while any IOC of
  the instrument is disconnected, re-apply and check the settings when it is back, and
  fail the run with a message naming the lost PVs after ``lost_timeout_s``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

import bluesky.plan_stubs as bps
from bluesky.suspenders import SuspendBoolHigh, SuspendBoolLow, SuspendWhenOutsideBand
from ophyd import Signal

from ..errors import TalbotLauError

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 3.0
"""How long the shutter readback may take to confirm closed before the fallback (s)."""
LOST_IOC_TIMEOUT_S = 60.0
"""How long a plan stays suspended on a lost IOC before it fails (s)."""

_groups = itertools.count()


class InstrumentLost(RuntimeError):
    """An IOC of the instrument stayed disconnected longer than the plan may wait."""


class ShutterNotClosed(TalbotLauError, RuntimeError):
    """A plan failed and, after it, the shutter could not be confirmed closed."""


def close_shutter(tube, timeout_s: float = CLOSE_TIMEOUT_S):
    """Close the tube shutter and wait (at most ``timeout_s``) for the readback; if the
    channel refuses or times out, close through ``tube.close_shutter_now`` (a fresh
    channel), which raises ``ShutterNotClosed`` when nothing confirms it."""
    group = f"close-shutter-{next(_groups)}"
    try:
        yield from bps.abs_set(tube.shutter, 0, group=group)
        yield from bps.wait(group=group, timeout=timeout_s)
    except Exception as err:  # read-only channel, disconnected, refused, timed out
        log.warning("closing %s through its channel failed (%r); closing through the fallback",
                    tube.name, err)
        tube.close_shutter_now(timeout_s)


def open_shutter(tube, timer_s: float | None = None):
    """Arm the exposure timer (``timer_s`` s, else the generator's default), then open the
    shutter; fails (and so ends the plan) if the tube refuses."""
    if timer_s is not None:
        yield from heartbeat(tube, timer_s)
    yield from bps.abs_set(tube.shutter, 1, wait=True)


def heartbeat(tube, seconds: float):
    """Re-arm the generator's exposure timer for ``seconds`` (s): the shutter closes by
    itself unless the next heartbeat comes within that time."""
    yield from bps.abs_set(tube.heartbeat, float(seconds), wait=True)


def source_suspenders(tube, *, kv: float | None = None, ma: float | None = None,
                      tolerance: float = 0.05, sleep_s: float = 1.0):
    """Suspenders for a RunEngine: the interlock chain opening or a fault (suspend; the
    shutter is closed on suspension), and, when ``kv`` and ``ma`` are given, the tube
    voltage or current leaving +-``tolerance`` of them (:func:`band_suspenders`).  A resumed
    plan rewinds to its last checkpoint, i.e. it repeats the whole phase-stepping set that
    was interrupted.  Recovery (fault reset, HV on) is left to the operator or the IOC
    (EPICS-NOTES: no recovery in post-plans).  The session installs the first two only:
    the acquisition plans add the band of their own operating point once they have set it,
    so a warm-up or a plan at another kV is not suspended."""

    def shutter_closed():
        yield from close_shutter_quietly(tube)

    source = [
        SuspendBoolLow(tube.interlock, sleep=sleep_s, pre_plan=shutter_closed,
                       tripped_message="X-ray interlock open"),
        SuspendBoolHigh(tube.fault, sleep=sleep_s, pre_plan=shutter_closed,
                        tripped_message="generator fault"),
    ]
    if kv is None or ma is None:
        return source
    return source + band_suspenders(tube, kv=kv, ma=ma, tolerance=tolerance, sleep_s=sleep_s)


def band_suspenders(tube, *, kv: float, ma: float, tolerance: float = 0.05, sleep_s: float = 1.0):
    """Suspend while the tube voltage or current is outside +-``tolerance`` of (kv, ma)."""

    def shutter_closed():
        yield from close_shutter_quietly(tube)

    return [
        SuspendWhenOutsideBand(tube.kv, kv * (1 - tolerance), kv * (1 + tolerance), sleep=sleep_s,
                               pre_plan=shutter_closed, tripped_message="tube voltage out of band"),
        SuspendWhenOutsideBand(tube.ma, ma * (1 - tolerance), ma * (1 + tolerance), sleep=sleep_s,
                               pre_plan=shutter_closed, tripped_message="tube current out of band"),
    ]


def close_shutter_quietly(tube):
    """:func:`close_shutter` for a suspension's pre-plan: a failure is logged, not raised
    (the tube's IOC may be the one that is lost; its exposure timer closes the shutter)."""
    try:
        yield from close_shutter(tube)
    except Exception as err:
        log.error("%s: shutter not confirmed closed on suspension: %s", tube.name, err)


class InstrumentConnection(Signal):
    """1 while every watched Channel Access signal is connected, 0 while any is not.

    ``signals`` without a ``pvname`` (the in-process twins) are not watched.  After
    ``lost_timeout_s`` with a PV still lost, :attr:`gave_up` names them and the value
    returns to 1, so a suspension ends and its post-plan fails the run."""

    def __init__(self, signals, *, lost_timeout_s: float | None = None,
                 name: str = "instrument_connection"):
        super().__init__(name=name, value=1)
        self.lost_timeout_s = float(LOST_IOC_TIMEOUT_S if lost_timeout_s is None else lost_timeout_s)
        self.lost: dict[str, float] = {}
        self.gave_up: str | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.watched = [s for s in signals if getattr(s, "pvname", None)]
        for signal in self.watched:
            signal.subscribe(self._meta_changed, event_type=signal.SUB_META, run=False)

    def close(self) -> None:
        for signal in self.watched:
            signal.clear_sub(self._meta_changed)
        self._cancel_timer()

    def _meta_changed(self, *, obj, connected=None, **kwargs) -> None:
        if connected is None:
            return
        with self._lock:
            if connected:
                self.lost.pop(obj.pvname, None)
            else:
                self.lost.setdefault(obj.pvname, time.monotonic())
            lost = bool(self.lost)
            if lost and self._timer is None:
                self.gave_up = None
                self._timer = threading.Timer(self.lost_timeout_s, self._give_up)
                self._timer.daemon = True
                self._timer.start()
        if not lost:
            self._cancel_timer()
        self.put(0 if lost else 1)

    def _cancel_timer(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None

    def _give_up(self) -> None:
        with self._lock:
            if not self.lost:
                return
            names = ", ".join(sorted(self.lost)[:4]) + (" ..." if len(self.lost) > 4 else "")
            self.gave_up = (f"IOC lost: {names} disconnected for more than "
                            f"{self.lost_timeout_s:g} s; is the IOC running?")
            self._timer = None
        log.error(self.gave_up)
        self.put(1)  # ends the suspension; the post-plan raises InstrumentLost


def watched_signals(instrument) -> list:
    """One signal per IOC a lab may run separately: tube, G2, stage x and y, cam, HDF5."""
    det = instrument.detector
    return [instrument.tube.shutter, instrument.tube.interlock, instrument.g2.user_readback,
            instrument.stage.x.user_readback, instrument.stage.y.user_readback,
            det.cam.acquire, getattr(det.hdf1, "capture", None)]


def connection_suspender(connection: InstrumentConnection, tube, restore, sleep_s: float = 1.0):
    """Suspend while ``connection`` is 0 (shutter closed first, quietly); when it is back,
    ``restore()`` (a plan: re-apply and check the settings) runs before the rewound set
    repeats, or :class:`InstrumentLost` ends the run if the connection was given up."""

    def shutter_closed():
        yield from close_shutter_quietly(tube)

    def reconnected():
        if connection.gave_up:
            raise InstrumentLost(connection.gave_up)
        yield from restore()

    return SuspendBoolLow(connection, sleep=sleep_s, pre_plan=shutter_closed, post_plan=reconnected,
                          tripped_message="an IOC of the instrument is disconnected")
