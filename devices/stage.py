"""The sample stage: two motor records, x and y in mm (PVs ``P + "stage:x"``, ``"stage:y"``)."""

from ophyd import Component as Cpt
from ophyd import Device

from .positioner import CheckedMotor


class SampleStage(Device):
    """Moves the specimen in the beam (x, y, mm); the reference position takes it out.
    A move fails unless the axis ends within 5 um of its target."""

    x = Cpt(CheckedMotor, "stage:x", tolerance=0.005)
    y = Cpt(CheckedMotor, "stage:y", tolerance=0.005)
