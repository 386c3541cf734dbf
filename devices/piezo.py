"""The G2 piezo stepper: a motor record (PI motorPIGCS2 / motorPI), positions in um."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import EpicsSignal

from .positioner import CheckedMotor, NotInPosition

__all__ = ["NotInPosition", "PiezoStepper"]


class PiezoStepper(CheckedMotor):
    """G2 stepper (PV ``P + "g2"``): a move succeeds only within ``tolerance_um`` of the target.

    ``settle_time`` (s) waits after the motor record reports done, for the piezo to settle
    (the record's own DLY and RDBD do the same on the IOC side and are exposed here).
    """

    retry_deadband = Cpt(EpicsSignal, ".RDBD", kind="config")
    settle_delay = Cpt(EpicsSignal, ".DLY", kind="config")

    def __init__(self, prefix="", *, name, settle_time=0.05, tolerance_um=0.01, timeout=30.0,
                 **kwargs):
        super().__init__(prefix, name=name, settle_time=settle_time, tolerance=tolerance_um,
                         timeout=timeout, **kwargs)

    @property
    def tolerance_um(self) -> float:
        return self.tolerance
