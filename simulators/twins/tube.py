"""A simulated rotating-anode generator with the component names of ``devices.XRayTube``.

Setpoints are checked like the generator would: kV and mA within limits, the shutter opens
only with HV on, the interlock chain closed (``interlock`` = 1) and no fault, HV and the
shutter take 0 or 1 (or the IOC's state names Off/On, Closed/Open); a refused command
fails its put and its Status with :class:`RefusedCommand`, as the IOC twin fails the put,
so a plan sees it.  ``trip_interlock()``/``clear_interlock()``
and ``trip_arc()`` let tests break the source the way the hardware breaks.

The generator's exposure timer (:class:`simulators.shared.generator.ExposureTimer`) closes
the shutter by itself when no ``heartbeat`` re-arms it in time; stopping the shutter
signal or the tube closes the shutter (the RunEngine stops every device it touched on
pause, halt, suspension and at the end of a run).
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, Signal

from simulators.physics import TubeState
from simulators.shared.generator import ExposureTimer, generator_state, refusal


class RefusedCommand(RuntimeError):
    """The generator refused a command (readback did not follow)."""


STATES = {"hv_on": ("Off", "On"), "shutter": ("Closed", "Open")}
"""The enum states of the IOC's ``HVOn`` and ``Shutter``: their names are taken, as indices."""


class CheckedSignal(Signal):
    """A setpoint whose puts the parent tube checks first."""

    def put(self, value, *, force=False, **kwargs):
        states = STATES.get(self.attr_name)
        if states is not None and isinstance(value, str) and value in states:
            value = states.index(value)
        if not force:
            self.parent.check(self.attr_name, value)
        super().put(value, **kwargs)


class ShutterSignal(CheckedSignal):
    """The shutter (1 open): opening arms the exposure timer, stopping closes it."""

    def put(self, value, *, force=False, **kwargs):
        super().put(value, force=force, **kwargs)
        self.parent.timer.shutter_changed(bool(self.get()))

    def stop(self, *, success=False):
        self.parent.close_shutter_now()


class HeartbeatSignal(Signal):
    """Each put (s, recorded time) re-arms the generator's exposure timer."""

    def put(self, value, **kwargs):
        super().put(value, **kwargs)
        self.parent.timer.beat(float(value))


class SimTube(Device):
    """Tube voltage (kV), current (mA), HV, shutter (1 open), interlock (1 = closed, ok)."""

    kv = Cpt(CheckedSignal, value=0.0, kind="normal")
    ma = Cpt(CheckedSignal, value=0.0, kind="normal")
    hv_on = Cpt(CheckedSignal, value=1, kind="normal")
    shutter = Cpt(ShutterSignal, value=0, kind="normal")
    interlock = Cpt(Signal, value=1, kind="normal")
    fault = Cpt(Signal, value=0, kind="normal")
    arc = Cpt(Signal, value=0, kind="omitted")
    fault_reset = Cpt(CheckedSignal, value=0, kind="omitted")
    state = Cpt(Signal, value="ready", kind="config")
    heartbeat = Cpt(HeartbeatSignal, value=0.0, kind="omitted")
    watchdog_tripped = Cpt(Signal, value=0, kind="omitted")

    def __init__(self, prefix="", *, name, kv_max=50.0, ma_max=100.0, time_scale=1.0,
                 watchdog_s=30.0, **kwargs):
        self.timer = ExposureTimer(self._watchdog_expired, time_scale=time_scale,
                                   default_s=watchdog_s)
        super().__init__(prefix, name=name, **kwargs)
        self.kv_max, self.ma_max = kv_max, ma_max

    def _watchdog_expired(self) -> None:
        self.shutter.put(0, force=True)
        self.watchdog_tripped.put(1)

    def close_shutter_now(self, timeout: float = 3.0) -> None:
        """Close the shutter at once (the same call as ``devices.XRayTube``'s)."""
        self.shutter.put(0, force=True)

    def check(self, attr: str, value) -> None:
        """Refuse what the generator refuses (raises RefusedCommand); a fault reset clears.
        HV and the shutter take 0 or 1 only (the IOC's enums refuse any other state)."""
        if attr in STATES and (isinstance(value, str) or value not in (0, 1)):
            raise RefusedCommand(f"{self.name}: {attr} takes 0 or 1 "
                                 f"({'/'.join(STATES[attr])}), not {value!r}")
        reason = refusal(attr, value, interlock=bool(self.interlock.get()), fault=bool(self.fault.get()),
                         hv_on=bool(self.hv_on.get()), kv_max=self.kv_max, ma_max=self.ma_max)
        if reason:
            raise RefusedCommand(f"{self.name}: {reason}")
        if attr == "shutter" and value:
            self.watchdog_tripped.put(0)
        if attr == "fault_reset" and value:
            self.fault.put(0)
            self.arc.put(0)
            self._update_state()

    def _update_state(self) -> None:
        self.state.put(generator_state(interlock=bool(self.interlock.get()),
                                       fault=bool(self.fault.get()), hv_on=bool(self.hv_on.get())))

    def tube_state(self) -> TubeState:
        """The operating point the physics engine needs."""
        return TubeState(kv=float(self.kv.get()), ma=float(self.ma.get()),
                         shutter_open=bool(self.shutter.get()), hv_on=bool(self.hv_on.get()))

    def stop(self, *, success=False):
        """Any stop of a plan touching the tube closes the shutter."""
        self.close_shutter_now()
        super().stop(success=success)

    def trip_interlock(self) -> None:
        """Open the interlock chain: the shutter closes at once (tests)."""
        self.interlock.put(0)
        self.shutter.put(0, force=True)
        self._update_state()

    def clear_interlock(self) -> None:
        self.interlock.put(1)
        self._update_state()

    def trip_arc(self) -> None:
        """An arc in the tube: fault, shutter closed until a fault reset (tests)."""
        self.arc.put(1)
        self.fault.put(1)
        self.shutter.put(0, force=True)
        self._update_state()
