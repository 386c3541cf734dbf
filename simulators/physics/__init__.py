"""The physics of the simulated Talbot-Lau setup: pure numpy, scipy, spekpy and xraydb.

One engine for every twin (DESIGN.md rule 1): ``simulate_frame(setup, phantom, g2_um=...,
stage_mm=..., tube=..., exposure_s=..., seed=...)`` is a frame in ADU.  See docs/physics.md.
"""

from .engine import (
    SampleSignals,
    detector_shape,
    expected_frame,
    sample_pixel_mm,
    sample_signals,
    simulate_frame,
    truth_labels,
)
from .phantom import TEXTURES, Cluster, Grain, Phantom, PhantomSpec, TissueSlab, build_phantom, cluster_preset
from .setup import Detector, Geometry, Gratings, Interferometer, Setup, Source, TubeState

__all__ = [
    "Cluster", "Detector", "Geometry", "Grain", "Gratings", "Interferometer", "Phantom",
    "PhantomSpec", "SampleSignals", "Setup", "Source", "TEXTURES", "TissueSlab", "TubeState",
    "build_phantom", "cluster_preset", "detector_shape", "expected_frame", "sample_pixel_mm",
    "sample_signals", "simulate_frame", "truth_labels",
]
