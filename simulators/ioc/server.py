"""One caproto server hosting all four twins as SubGroups under one prefix.

PVs: ``P g2``, ``P stage:x``, ``P stage:y`` (motor records), ``P tube:*`` (generator),
``P det:cam1:*`` and ``P det:HDF1:*`` (PaxScan).  Frames come from the same physics
engine and the same :class:`simulators.twins.SimWorld` as the in-process twins, fed with
the readbacks served here.  One process, because several caproto servers sharing UDP
5064 on loopback do not all receive unicast searches.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from caproto.asyncio.server import run
from caproto.server import PVGroup, SubGroup

from simulators.physics import Phantom, Setup, detector_shape
from simulators.twins.motor import G2_VELOCITY_UM_S, STAGE_VELOCITY_MM_S
from simulators.twins.world import SimWorld

from .detector import PaxScanGroup
from .motor import MotorAxis
from .tube import TubeGroup


class TwinIOC(PVGroup):
    """The instrument's twins over Channel Access; call :meth:`configure` before serving."""

    g2 = SubGroup(MotorAxis, prefix="g2")
    stage_x = SubGroup(MotorAxis, prefix="stage:x")
    stage_y = SubGroup(MotorAxis, prefix="stage:y")
    tube = SubGroup(TubeGroup, prefix="tube:")
    det = SubGroup(PaxScanGroup, prefix="det:")

    def configure(self, setup: Setup, phantom: Phantom | None, *, time_scale: float = 1.0,
                  seed: int = 0, write_path: str | Path | None = None,
                  g2_limits_um=(-5.0, 15.0), stage_limits_mm=((-150.0, 150.0), (-150.0, 150.0)),
                  g2_settle_s: float = 0.05, g2_start_um: float = 0.0,
                  g2_retry_deadband_um: float = 0.001, kv_max: float = 50.0,
                  ma_max: float = 100.0, kv: float = 0.0, ma: float = 0.0) -> SimWorld:
        """Set limits, speeds and the physics world; returns the world the detector uses."""
        if not isinstance(setup, Setup):
            raise TypeError(f"setup must be a simulators.physics.Setup, got {type(setup).__name__}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        if len(stage_limits_mm) != 2:
            raise ValueError(f"stage_limits_mm must be ((x_low, x_high), (y_low, y_high)), "
                             f"got {stage_limits_mm!r}")
        self.g2.configure(limits=g2_limits_um, egu="um", velocity=G2_VELOCITY_UM_S,
                          settle_s=g2_settle_s, retry_deadband=g2_retry_deadband_um,
                          start=g2_start_um, time_scale=time_scale)
        for axis, limits in ((self.stage_x, stage_limits_mm[0]), (self.stage_y, stage_limits_mm[1])):
            axis.configure(limits=limits, egu="mm", velocity=STAGE_VELOCITY_MM_S,
                           retry_deadband=0.001, time_scale=time_scale)
        self.tube.configure(kv_max=kv_max, ma_max=ma_max, kv=kv, ma=ma)
        world = SimWorld(setup=setup, phantom=phantom, time_scale=time_scale, seed=seed)
        world.g2 = self.g2
        world.stage = SimpleNamespace(x=self.stage_x, y=self.stage_y)
        world.tube = self.tube
        det = setup.detector
        self.det.configure(world=world, shape=detector_shape(setup),
                           full_shape=(det.rows, det.columns))
        if write_path is not None:
            try:
                Path(write_path).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(f"write_path {str(write_path)!r} cannot be created: {err}") from err
        self.world = world
        return world


def interfaces_from_environment() -> list[str]:
    """``EPICS_CAS_INTF_ADDR_LIST`` (space separated), loopback when unset."""
    return os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1").split() or ["127.0.0.1"]


def build_ioc(prefix: str, setup: Setup, phantom: Phantom | None, **options) -> TwinIOC:
    """A configured :class:`TwinIOC` (options: see :meth:`TwinIOC.configure`)."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    ioc = TwinIOC(prefix=prefix)
    ioc.configure(setup, phantom, **options)
    return ioc


def run_ioc(prefix: str, setup: Setup, phantom: Phantom | None, **options) -> None:
    """Serve the twins until interrupted (SIGINT), on ``interfaces_from_environment()``
    and the port ``EPICS_CA_SERVER_PORT`` (5064 when unset)."""
    ioc = build_ioc(prefix, setup, phantom, **options)
    run(ioc.pvdb, interfaces=interfaces_from_environment(), log_pv_names=False)
