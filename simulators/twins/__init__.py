"""In-process twins of the four devices, driven by the physics engine (DESIGN.md rules 1-2).

They expose the component names of the EPICS classes in ``devices/`` so plans run on
either unchanged, and the detector twin writes real HDF5 files and emits the same
Resource/Datum documents as areaDetector's HDF5 plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ophyd import Component as Cpt
from ophyd import Device

from simulators.physics import Phantom, Setup
from simulators.shared.world import SimWorld

from .motor import G2_VELOCITY_UM_S, STAGE_VELOCITY_MM_S, SimMotor, SimPiezo
from .paxscan import SimPaxScan
from .tube import RefusedCommand, SimTube


class SimSampleStage(Device):
    """Sample stage twin: ``x`` and ``y`` motors in mm."""

    x = Cpt(SimMotor, "x", egu="mm", velocity=STAGE_VELOCITY_MM_S)
    y = Cpt(SimMotor, "y", egu="mm", velocity=STAGE_VELOCITY_MM_S)


class Twins(NamedTuple):
    tube: SimTube
    g2: SimPiezo
    stage: SimSampleStage
    detector: SimPaxScan
    world: SimWorld


def build_twins(setup: Setup, phantom: Phantom | None, *, write_path: Path, time_scale: float = 1.0,
                seed: int = 0, g2_limits_um=(-5.0, 15.0),
                stage_limits_mm=((-150.0, 150.0), (-150.0, 150.0)),
                g2_settle_s: float = 0.05, kv_max: float = 50.0, ma_max: float = 100.0,
                watchdog_s: float = 30.0) -> Twins:
    """The four twins sharing one :class:`SimWorld` (device names tube, g2, stage, detector);
    ``watchdog_s``: the generator's exposure timer when the shutter opens (s)."""
    world = SimWorld(setup=setup, phantom=phantom, time_scale=time_scale, seed=seed)
    g2 = SimPiezo(name="g2", limits=g2_limits_um, egu="um", velocity=G2_VELOCITY_UM_S,
                  settle_s=g2_settle_s, time_scale=time_scale, labels={"motors"})
    stage = SimSampleStage(name="stage", labels={"motors"})
    for motor, limits in ((stage.x, stage_limits_mm[0]), (stage.y, stage_limits_mm[1])):
        motor._limits = (float(limits[0]), float(limits[1]))
        motor.time_scale = float(time_scale)
    tube = SimTube(name="tube", kv_max=kv_max, ma_max=ma_max, time_scale=time_scale,
                   watchdog_s=watchdog_s, labels={"source"})
    detector = SimPaxScan(name="detector", world=world, write_path=write_path, labels={"detectors"})
    world.g2, world.stage, world.tube = g2, stage, tube
    return Twins(tube, g2, stage, detector, world)


__all__ = ["RefusedCommand", "SimMotor", "SimPiezo", "SimPaxScan", "SimSampleStage", "SimTube", "SimWorld",
           "Twins", "build_twins"]
