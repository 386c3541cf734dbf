"""Test specimens whose measured class is known from the physics, not from the classifier.

The phantoms of ``simulators.physics`` draw clusters from the paper's micro-CT descriptors
with a natural spread, so the class a drawn cluster reads as is a scientific result (see
``talbot-lau study``), not something a pipeline test can rely on.  Tests of the processing
chain (monitor, proxy, offline reconstruct) need clusters that read as a given class with
margin: clusters of monodisperse hydroxyapatite beads (``bead_cluster``, the calibration
phantom's clusters), whose noise-free mu/eps in the 10 mm paraffin block lies inside the
class's Table 1 range, checked by ``tests/test_specimens.py``.
"""

from __future__ import annotations

import dataclasses

from simulators.physics.calibration_phantom import bead_cluster

CLASS_BEAD_RADIUS_UM = {"ultra-fine": 40.0, "fine": 120.0, "pleomorphic": 250.0, "coarse": 700.0}
"""Bead radius (um) whose cluster reads, noise-free in 10 mm paraffin, as the class."""


def class_cluster(texture: str, centre_mm: tuple[float, float], *, seed: int = 1):
    """A bead cluster at ``centre_mm`` (mm) that reads as ``texture``, labelled so."""
    cluster = bead_cluster(CLASS_BEAD_RADIUS_UM[texture], centre_mm, seed=seed)
    return dataclasses.replace(cluster, texture=texture,
                               name=f"{texture}@{centre_mm[0]:+.1f},{centre_mm[1]:+.1f}")
