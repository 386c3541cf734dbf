"""The rotating-anode X-ray generator (Nonius FR 591) over EPICS, PVs under ``P + "tube:"``.

There is no public EPICS support for the FR 591; the PVs follow what generator IOCs expose:
kV and mA setpoints with readbacks, HV on/off, shutter, interlock chain, fault and arc
state, fault reset and the generator state.  Setpoints are put with completion and
complete only when their readback follows, so a command the generator refuses (shutter
open while interlocked) fails its Status instead of passing silently: at once with
:class:`RefusedCommand` when the IOC fails the put (the setpoint PV keeps its old value),
else after WRITE_TIMEOUT_S when the readback does not follow.  ``HVOn`` and ``Shutter``
may be enums (Off/On, Closed/Open): the signals read and take their index, 0 or 1.

Safety (docs/reliability.md):

- ``stop()`` of the shutter signal or of the tube closes the shutter, so the RunEngine's
  stop of every touched device on pause, halt, suspension and at the end of every run
  closes it whatever the plan was doing.
- :meth:`XRayTube.close_shutter_now` closes with a timeout and, when ophyd's channels do
  not take the put (read-only after a hung IOC, disconnected), writes through a fresh
  Channel Access connection and reads the readback back the same way.
- ``heartbeat`` feeds the generator's exposure timer: each put (s) re-arms it, and the
  generator closes the shutter by itself when the timer runs out (``watchdog_tripped``).
"""

from __future__ import annotations

import logging
import math
import threading
import time

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import Status

WRITE_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 3.0
"""How long one attempt to close the shutter may take (s), per channel tried."""

log = logging.getLogger(__name__)


class ShutterNotClosed(RuntimeError):
    """Neither ophyd's channel nor a fresh connection could confirm the shutter closed."""


class RefusedCommand(RuntimeError):
    """The generator refused a command: the IOC failed the put and the setpoint kept its
    old value."""


POLL_S = 0.02
"""How often ``ConfirmedSignal.set`` reads the readback while waiting for it (s)."""


class ConfirmedSignal(EpicsSignal):
    """A setpoint whose ``set`` puts with completion, then fails at once with
    :class:`RefusedCommand` if the setpoint PV did not take the value (the IOC refused the
    put), else waits for the readback to follow within ``tolerance``; the whole within
    ``timeout`` (WRITE_TIMEOUT_S), or ``TimeoutError``."""

    def __init__(self, read_pv, write_pv=None, *, tolerance=0.5, **kwargs):
        super().__init__(read_pv, write_pv=write_pv, tolerance=tolerance, **kwargs)

    def set(self, value, *, timeout=WRITE_TIMEOUT_S, settle_time=None, **kwargs):
        status = Status(self, settle_time=settle_time)

        def confirm():
            try:
                self._confirm(value, timeout)
            except Exception as err:  # the Status carries it to the caller
                status.set_exception(err)
            else:
                status.set_finished()

        threading.Thread(target=confirm, name=f"{self.name}.set", daemon=True).start()
        return status

    def _index(self, value):
        """An enum state name as its index (the signals read indices)."""
        if isinstance(value, str) and self.enum_strs and value in self.enum_strs:
            return self.enum_strs.index(value)
        return value

    def _matches(self, actual, value) -> bool:
        try:
            return abs(float(actual) - float(value)) <= (self.tolerance or 0.0)
        except (TypeError, ValueError):
            return actual == value

    def _confirm(self, value, timeout) -> None:
        timeout = math.inf if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        value = self._index(value)
        completed = threading.Event()
        self.put(value, use_complete=True, callback=lambda **kwargs: completed.set())
        if not completed.wait(min(max(deadline - time.monotonic(), 0.0), 1e6)):
            raise TimeoutError(f"{self.name}: the put of {value!r} to {self.setpoint_pvname} "
                               f"did not complete within {timeout:g} s")
        setpoint = self.get_setpoint(use_monitor=False)
        if not self._matches(setpoint, value):
            raise RefusedCommand(self._refusal_message(value, setpoint))
        while True:
            readback = self.get(use_monitor=False)
            if self._matches(readback, value):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: {self.pvname} reads {readback!r}, did not "
                                   f"follow to value {value!r} and timed out after {timeout:g} s")
            time.sleep(POLL_S)

    def _refusal_message(self, value, setpoint) -> str:
        state = ""
        parent_state = getattr(self.parent, "state", None)
        if parent_state is not None and parent_state is not self:
            try:
                state = f"; generator state {parent_state.get(use_monitor=False)!r}"
            except Exception:  # the message only
                pass
        return (f"{self.name}: the generator refused {self.setpoint_pvname} = {value!r} "
                f"(the put failed, the setpoint reads {setpoint!r}{state})")


class ShutterSignal(ConfirmedSignal):
    """The shutter (1 open); stopping it closes it, through a fresh channel if need be."""

    def stop(self, *, success=False):
        self.parent.close_shutter_now()


class XRayTube(Device):
    """Tube voltage (kV), current (mA), HV, shutter (1 open), interlock (1 = chain closed, ok),
    the exposure timer's heartbeat (s) and whether it tripped."""

    kv = Cpt(ConfirmedSignal, "kV_RBV", write_pv="kV", tolerance=0.2, kind="normal")
    ma = Cpt(ConfirmedSignal, "mA_RBV", write_pv="mA", tolerance=0.2, kind="normal")
    hv_on = Cpt(ConfirmedSignal, "HVOn_RBV", write_pv="HVOn", kind="normal")
    shutter = Cpt(ShutterSignal, "Shutter_RBV", write_pv="Shutter", kind="normal")
    interlock = Cpt(EpicsSignalRO, "Interlock_RBV", kind="normal")
    fault = Cpt(EpicsSignalRO, "Fault_RBV", kind="normal")
    arc = Cpt(EpicsSignalRO, "Arc_RBV", kind="omitted")
    fault_reset = Cpt(EpicsSignal, "FaultReset", kind="omitted")
    state = Cpt(EpicsSignalRO, "State_RBV", string=True, kind="config")
    heartbeat = Cpt(EpicsSignal, "Heartbeat", kind="omitted")
    watchdog_tripped = Cpt(EpicsSignalRO, "WatchdogTripped_RBV", kind="omitted")

    def close_shutter_now(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Close the shutter and confirm the readback (blocking, at most about 2 x timeout s).

        ophyd's channel first; if it refuses or times out, a fresh Channel Access
        connection.  Raises :class:`ShutterNotClosed` naming the PV when neither confirms."""
        try:
            self.shutter.set(0, timeout=timeout).wait(timeout)
            return
        except Exception as err:  # read-only after a hung IOC, disconnected, timed out
            first = err
        log.warning("%s: closing the shutter through ophyd failed (%r); trying a fresh channel",
                    self.name, first)
        from caproto.sync.client import read, write

        try:
            write(self.shutter.setpoint_pvname, 0, notify=True, timeout=timeout, repeater=False)
            readback = read(self.shutter.pvname, timeout=timeout, repeater=False,
                            force_int_enums=True).data[0]
        except Exception as err:
            raise ShutterNotClosed(
                f"{self.name}: could not close the shutter ({self.shutter.setpoint_pvname}): "
                f"ophyd: {first!r}; fresh channel: {err!r}. The generator's exposure timer "
                f"closes it when the heartbeat stops; check the IOC.") from err
        if readback != 0:
            raise ShutterNotClosed(f"{self.name}: {self.shutter.pvname} reads {readback} after "
                                   f"closing through a fresh channel")

    def stop(self, *, success=False):
        """Any stop of a plan touching the tube closes the shutter."""
        self.close_shutter_now()
        super().stop(success=success)
