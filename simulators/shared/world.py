"""The simulated world the twins share: physics setup, phantom, clock and noise seeds."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import numpy as np

from simulators.physics import Phantom, Setup, simulate_frame

READBACK_TYPES = {"g2.RBV": "<f8", "stage:x.RBV": "<f8", "stage:y.RBV": "<f8",
                  "tube:kV_RBV": "<f8", "tube:mA_RBV": "<f8", "tube:Shutter_RBV": "<i2",
                  "tube:HVOn_RBV": "<i2"}
"""The readback PVs (names after the IOC prefix) the twins give NDAttributes from, with the
numpy dtype of their native Channel Access type (motor RBV and ai: double; enums: short)."""


def readbacks(state: dict) -> dict[str, float]:
    """The READBACK_TYPES PVs' values in a frame ``state`` (``SimWorld.state``): G2 um,
    stage mm, tube kV and mA, shutter and high voltage 0/1."""
    tube = state["tube"]
    x_mm, y_mm = state["stage_mm"]
    return {"g2.RBV": float(state["g2_um"]), "stage:x.RBV": float(x_mm),
            "stage:y.RBV": float(y_mm), "tube:kV_RBV": float(tube.kv),
            "tube:mA_RBV": float(tube.ma), "tube:Shutter_RBV": int(bool(tube.shutter_open)),
            "tube:HVOn_RBV": int(bool(tube.hv_on))}


@dataclass
class SimWorld:
    """What the detector twin needs to make a frame: where G2 and the stage are, the tube.

    ``time_scale`` is wall seconds per recorded second; ``clock_s`` is the recorded time
    the exposures have taken so far (drives the fringe-phase drift of the engine).
    """

    setup: Setup
    phantom: Phantom | None
    time_scale: float = 1.0
    seed: int = 0
    clock_s: float = 0.0
    g2: object = None
    stage: object = None
    tube: object = None
    last_frame: np.ndarray | None = None
    """The last frame read out (the engine adds the panel's lag from it)."""
    _frames: itertools.count = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self) -> dict:
        """What a frame depends on now: G2 (um), stage (mm) and the tube's operating point."""
        return {"g2_um": float(self.g2.position),
                "stage_mm": (float(self.stage.x.position), float(self.stage.y.position)),
                "tube": self.tube.tube_state()}

    def frame(self, exposure_s: float, state: dict | None = None) -> np.ndarray:
        """One frame of ``state`` (default: the state now) in uint16 ADU; advances the
        recorded clock.  Frames are made in the order they are asked for (the panel's lag
        carries the previous one over)."""
        state = self.state() if state is None else state
        with self._lock:
            seed = self.seed * 1_000_003 + next(self._frames)
            time_s = self.clock_s
            self.clock_s += exposure_s
            frame = simulate_frame(self.setup, self.phantom, exposure_s=exposure_s, seed=seed,
                                   time_s=time_s, previous_frame=self.last_frame, **state)
            self.last_frame = frame
        return frame
