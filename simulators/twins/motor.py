"""A simulated motor with the component names of ophyd's EpicsMotor.

``user_readback`` reads under the motor's own name (``g2``), ``user_setpoint`` as
``g2_user_setpoint``, so events look the same as with the EPICS motor record.  Moves are
checked against the limits (ophyd ``LimitError``) and take distance / velocity plus the
settle time, in recorded seconds (``time_scale`` wall s each), as the IOC twin's motor record.
"""

from __future__ import annotations

import threading

from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.positioner import PositionerBase
from ophyd.utils import LimitError

from simulators.shared.motion import G2_VELOCITY_UM_S, STAGE_VELOCITY_MM_S  # noqa: F401  (twins' API)


class SimMotor(Device, PositionerBase):
    """A positioner in ``egu`` with soft limits (low, high) and a settle time (s)."""

    user_readback = Cpt(Signal, value=0.0, kind="hinted")
    user_setpoint = Cpt(Signal, value=0.0, kind="normal")
    user_offset = Cpt(Signal, value=0.0, kind="config")
    user_offset_dir = Cpt(Signal, value=0, kind="config")
    velocity = Cpt(Signal, value=1.0, kind="config")
    acceleration = Cpt(Signal, value=0.2, kind="config")
    motor_egu = Cpt(Signal, value="", kind="config")

    def __init__(self, prefix="", *, name, limits=(0.0, 0.0), egu="mm", velocity=1.0,
                 settle_s=0.0, time_scale=1.0, **kwargs):
        super().__init__(prefix, name=name, **kwargs)
        self.user_readback.name = self.name
        self._limits = (float(limits[0]), float(limits[1]))
        self.motor_egu.put(egu)
        self.velocity.put(float(velocity))
        self.settle_s = float(settle_s)
        self.time_scale = float(time_scale)
        self.stalled = False
        """When True the next moves never finish (a stalled motor, for tests)."""

    @property
    def limits(self):
        return self._limits

    @property
    def egu(self):
        return self.motor_egu.get()

    @property
    def position(self):
        return self.user_readback.get()

    def check_value(self, value):
        low, high = self._limits
        if not (low <= value <= high):
            raise LimitError(f"{self.name}: {value} {self.egu} is outside the limits {low}..{high}")

    def move(self, position, wait=True, timeout=None, moved_cb=None):
        position = float(position)
        status = super().move(position, moved_cb=moved_cb, timeout=timeout)
        self.user_setpoint.put(position)
        if not self.stalled:
            travel_s = abs(position - self.position) / float(self.velocity.get()) + self.settle_s
            timer = threading.Timer(travel_s * self.time_scale, self._arrive, args=(position,))
            timer.daemon = True
            timer.start()
        if wait:
            status.wait()
        return status

    def set(self, position, **kwargs):
        return self.move(position, wait=False, **kwargs)

    def _arrive(self, position):
        self.user_readback.put(position)
        self._set_position(position)
        self._done_moving(success=True)

    def stop(self, *, success=False):
        self.user_setpoint.put(self.position)
        super().stop(success=success)


class SimPiezo(SimMotor):
    """The G2 stepper twin: a SimMotor with the record's RDBD and DLY fields of
    ``devices.PiezoStepper`` (the settle time is DLY, s)."""

    retry_deadband = Cpt(Signal, value=0.001, kind="config")
    settle_delay = Cpt(Signal, value=0.0, kind="config")

    def __init__(self, prefix="", *, name, settle_s=0.0, **kwargs):
        super().__init__(prefix, name=name, settle_s=settle_s, **kwargs)
        self.settle_delay.put(float(settle_s))
