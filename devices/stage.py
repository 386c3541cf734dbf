"""The sample stage: two motor records, x and y in mm (PVs ``P + "stage:x"``, ``"stage:y"``)."""

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor


class SampleStage(Device):
    """Moves the specimen in the beam (x, y, mm); the reference position takes it out."""

    x = Cpt(EpicsMotor, "stage:x")
    y = Cpt(EpicsMotor, "stage:y")
