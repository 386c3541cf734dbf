"""The physics of the simulated Talbot-Lau setup: pure numpy, scipy, spekpy and xraydb.

One engine for every twin (DESIGN.md rule 1): ``simulate_frame(setup, phantom, g2_um=...,
stage_mm=..., tube=..., exposure_s=..., seed=...)`` is a frame in ADU.  See docs/physics.md.

The names below are imported on first use (PEP 562): ``import simulators.physics.setup``
(the light dataclasses the configuration is built from) does not load spekpy and xraydb,
which take seconds; ``from simulators.physics import simulate_frame`` does.
"""

from __future__ import annotations

import importlib
import typing

_SOURCES = {
    **dict.fromkeys(("SampleSignals", "detector_shape", "expected_frame", "sample_pixel_mm",
                     "sample_signals", "simulate_frame", "truth_labels"), "engine"),
    **dict.fromkeys(("TEXTURES", "Cluster", "Grain", "Phantom", "PhantomSpec", "TissueSlab",
                     "build_phantom", "cluster_preset", "specimen"), "phantom"),
    **dict.fromkeys(("Descriptors", "describe", "descriptor_class", "draw_radii"), "descriptors"),
    **dict.fromkeys(("TextureMaps", "texture_maps"), "breast_texture"),
    **dict.fromkeys(("Detector", "Geometry", "Gratings", "Interferometer", "Setup", "Source",
                     "TubeState"), "setup"),
}

__all__ = [
    "TEXTURES", "Cluster", "Descriptors", "Detector", "Geometry", "Grain", "Gratings",
    "Interferometer", "Phantom", "PhantomSpec", "SampleSignals", "Setup", "Source", "TextureMaps",
    "TissueSlab", "TubeState", "build_phantom", "cluster_preset", "describe", "descriptor_class",
    "detector_shape", "draw_radii", "expected_frame", "sample_pixel_mm", "sample_signals",
    "simulate_frame", "specimen", "texture_maps", "truth_labels",
]

if typing.TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .breast_texture import TextureMaps, texture_maps
    from .descriptors import Descriptors, describe, descriptor_class, draw_radii
    from .engine import (
        SampleSignals,
        detector_shape,
        expected_frame,
        sample_pixel_mm,
        sample_signals,
        simulate_frame,
        truth_labels,
    )
    from .phantom import (
        TEXTURES,
        Cluster,
        Grain,
        Phantom,
        PhantomSpec,
        TissueSlab,
        build_phantom,
        cluster_preset,
        specimen,
    )
    from .setup import (
        Detector,
        Geometry,
        Gratings,
        Interferometer,
        Setup,
        Source,
        TubeState,
    )


_SUBMODULES = ("breast_texture", "darkfield", "descriptors", "engine", "interferometer", "materials",
               "phantom", "scene", "setup", "spectrum")


def __getattr__(name: str):
    if name in _SUBMODULES:  # ``simulators.physics.engine`` after ``import simulators.physics``
        return importlib.import_module(f".{name}", __name__)
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
