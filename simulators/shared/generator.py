"""The X-ray generator's command rules, shared by the in-process tube twin and the IOC twin.

What a generator accepts: kV within 0..kv_max, mA within 0..ma_max; high voltage on only
with the interlock chain closed and no fault; the shutter open only with high voltage on,
the chain closed and no fault; a fault reset only with the chain closed.
"""

from __future__ import annotations

import math
import threading


def refusal(command: str, value, *, interlock: bool, fault: bool, hv_on: bool,
            kv_max: float, ma_max: float) -> str | None:
    """Why the generator refuses ``command`` (kv, ma, hv_on, shutter, fault_reset) set to
    ``value``; None when it accepts it."""
    if command == "kv" and not 0 <= value <= kv_max:
        return f"{value} kV is outside 0..{kv_max} kV"
    if command == "ma" and not 0 <= value <= ma_max:
        return f"{value} mA is outside 0..{ma_max} mA"
    if command in ("hv_on", "shutter", "fault_reset") and value:
        if not interlock:
            return f"{command.replace('_', ' ')} refused, interlock open"
        if command != "fault_reset" and fault:
            return f"{command.replace('_', ' ')} refused, generator fault"
        if command == "shutter" and not hv_on:
            return "shutter refused, high voltage off"
    return None


def generator_state(*, interlock: bool, fault: bool, hv_on: bool) -> str:
    """The generator's state string: interlocked, fault, ready (HV on) or standby."""
    if not interlock:
        return "interlocked"
    if fault:
        return "fault"
    return "ready" if hv_on else "standby"


WATCHDOG_FLOOR_WALL_S = 10.0
"""Shortest wall time the exposure timer runs however small the time scale (s): a client's
steps (moves, reads, staging) take wall time even when recorded time is compressed."""
WATCHDOG_MAX_S = 120.0
"""Longest a heartbeat may arm the timer for (s, recorded time)."""


class ExposureTimer:
    """The generator's exposure (backup) timer, shared by both tube twins.

    Opening the shutter arms it for ``default_s``; every heartbeat re-arms it for the
    seconds it names (at most WATCHDOG_MAX_S; a non-positive or non-finite beat means
    ``default_s``); closing the shutter disarms it.  When it runs out with the shutter
    open, ``on_expiry()`` is called from the timer's thread: the twin closes the shutter.
    Times are recorded seconds, run at ``time_scale`` wall seconds each, never shorter
    than ``floor_wall_s``.
    """

    def __init__(self, on_expiry, *, time_scale: float = 1.0, default_s: float = 30.0,
                 floor_wall_s: float = WATCHDOG_FLOOR_WALL_S):
        if not (math.isfinite(default_s) and 0 < default_s <= WATCHDOG_MAX_S):
            raise ValueError(f"watchdog_s={default_s!r}: must be in (0, {WATCHDOG_MAX_S}] s")
        self.on_expiry = on_expiry
        self.time_scale = float(time_scale)
        self.default_s = float(default_s)
        self.floor_wall_s = float(floor_wall_s)
        self.expiries = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def beat(self, seconds: float) -> None:
        """Re-arm for ``seconds`` of recorded time."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            seconds = self.default_s
        self._arm(min(float(seconds), WATCHDOG_MAX_S))

    def shutter_changed(self, is_open: bool) -> None:
        """Opening arms the timer (unless a heartbeat already has), closing disarms it."""
        if not is_open:
            self._disarm()
        elif self._timer is None:
            self._arm(self.default_s)

    def _arm(self, seconds: float) -> None:
        wall = max(seconds * self.time_scale, self.floor_wall_s)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(wall, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        with self._lock:
            if self._timer is None or threading.current_thread() is not self._timer:
                return  # re-armed or disarmed meanwhile
            self._timer = None
            self.expiries += 1
        self.on_expiry()
