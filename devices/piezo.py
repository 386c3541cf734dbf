"""The G2 piezo stepper: a motor record (PI motorPIGCS2 / motorPI), positions in um."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import EpicsMotor, EpicsSignal
from ophyd.status import Status


class NotInPosition(RuntimeError):
    """The move finished but the readback is further from the target than the tolerance."""


class PiezoStepper(EpicsMotor):
    """G2 stepper (PV ``P + "g2"``): a move succeeds only within ``tolerance_um`` of the target.

    ``settle_time`` (s) waits after the motor record reports done, for the piezo to settle
    (the record's own DLY and RDBD do the same on the IOC side and are exposed here).
    """

    retry_deadband = Cpt(EpicsSignal, ".RDBD", kind="config")
    settle_delay = Cpt(EpicsSignal, ".DLY", kind="config")

    def __init__(self, prefix="", *, name, settle_time=0.05, tolerance_um=0.01, **kwargs):
        super().__init__(prefix, name=name, settle_time=settle_time, **kwargs)
        self.tolerance_um = tolerance_um

    def move(self, position, wait=True, **kwargs):
        motion = super().move(position, wait=False, **kwargs)
        status = Status(obj=self)

        def arrived(done):
            error = done.exception()
            if error is not None:
                status.set_exception(error)
            elif abs(self.position - position) > self.tolerance_um:
                status.set_exception(NotInPosition(
                    f"{self.name}: at {self.position:.4f} um after a move to {position:.4f} um "
                    f"(tolerance {self.tolerance_um} um)"))
            else:
                status.set_finished()

        motion.add_callback(arrived)
        if wait:
            status.wait()
        return status
