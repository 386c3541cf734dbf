"""The tissue calibration phantom: bead clusters of known radius on a breast-tissue step wedge.

What a lab would build to calibrate mu/eps against the tissue around a cluster
(docs/reconstruction.md, "Tissue calibration"): monodisperse hydroxyapatite beads, one
cluster per radius, repeated in every band of a step wedge of breast-equivalent tissue
(native, 50 % glandular, no texture).  Each cluster holds the grain surface of a Table 1
cluster (``descriptors.SURFACE_MM2``, Scherer et al. 2016, Results) in beads of one
radius, spread over a disc of ``descriptors.EXTENT_MM``; the same layout (same seed) in
every band.  These are calibration beads, not the scored cohort's clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .descriptors import EXTENT_MM, SURFACE_MM2, TYPE_II
from .phantom import Cluster, Grain, Phantom, TissueSlab

BEAD_RADII_UM = (40.0, 75.0, 175.0, 275.0)
"""Reference bead radii (um): from Table 1's small grains to its r >= 275 um grains."""
STEPS_MM = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0)
"""Breast thicknesses of the wedge's bands (mm): 10-60 mm covers specimens and the
paper's 45 mm; 5 mm reaches above the paraffin block's transmission."""
BAND_MM = 9.0
"""Width of one band (mm): a 3 mm cluster keeps 3 mm of uniform tissue either side."""
SLAB_HEIGHT_MM = 60.0
"""Height of the wedge (mm, along y): taller than the field, so its top and bottom edges
(a 60 mm step to air) are not imaged next to the clusters."""
RING_MM = 1.0
"""Tissue kept in view around the outer clusters (mm): the ring of eq. 2 (8 px = 0.7 mm)."""
BEAD_SPACING_MM = 7.0
"""Distance (mm) between the bead clusters along y in a band (>= 4 mm: segmented apart)."""


@dataclass(frozen=True)
class CalibrationPhantomSpec:
    """The calibration phantom: bead radii (um), wedge steps (mm), band width and spacing (mm)."""

    bead_radii_um: tuple[float, ...] = BEAD_RADII_UM
    steps_mm: tuple[float, ...] = STEPS_MM
    band_mm: float = BAND_MM
    bead_spacing_mm: float = BEAD_SPACING_MM
    height_mm: float = SLAB_HEIGHT_MM
    material: str = TYPE_II
    glandularity: float = 0.5
    seed: int = 14

    def __post_init__(self):
        if not self.bead_radii_um or any(not (0 < r <= 1000) for r in self.bead_radii_um):
            raise ValueError(f"bead_radii_um: give radii in (0, 1000] um, got {self.bead_radii_um}")
        if len(self.steps_mm) < 2 or any(not (0 < t <= 150) for t in self.steps_mm):
            raise ValueError(f"steps_mm: give two or more thicknesses in (0, 150] mm, got {self.steps_mm}")
        if not self.band_mm >= 2 * EXTENT_MM + 2:
            raise ValueError(f"band_mm: {self.band_mm} mm is too narrow for a {2 * EXTENT_MM:g} mm "
                             "cluster and its ring of tissue (need >= 2*EXTENT_MM + 2 mm)")
        if not self.bead_spacing_mm >= 2 * EXTENT_MM + 1:
            raise ValueError(f"bead_spacing_mm: {self.bead_spacing_mm} mm lets clusters touch")
        if not self.height_mm >= self.roi_mm[0]:
            raise ValueError(f"height_mm: {self.height_mm} mm does not hold the bead rows "
                             f"({self.roi_mm[0]:g} mm)")

    @property
    def width_mm(self) -> float:
        return self.band_mm * len(self.steps_mm)

    @property
    def roi_mm(self) -> tuple[float, float]:
        """(height, width) mm the bead clusters and their rings span: what must be imaged."""
        reach = 2 * (EXTENT_MM + RING_MM)
        return ((len(self.bead_radii_um) - 1) * self.bead_spacing_mm + reach,
                (len(self.steps_mm) - 1) * self.band_mm + reach)

    def band_centres_mm(self) -> np.ndarray:
        """x (mm) of each band's centre, in the order of ``steps_mm``."""
        return (np.arange(len(self.steps_mm)) + 0.5) * self.band_mm - self.width_mm / 2

    def bead_rows_mm(self) -> np.ndarray:
        """y (mm) of each bead radius's clusters, in the order of ``bead_radii_um``."""
        n = len(self.bead_radii_um)
        return (np.arange(n) - (n - 1) / 2) * self.bead_spacing_mm

    def describe(self) -> dict:
        """Plain values for start documents and the calibration file."""
        return {"bead_radii_um": list(self.bead_radii_um), "material": self.material,
                "grain_surface_mm2": SURFACE_MM2, "extent_mm": EXTENT_MM,
                "beads_per_cluster": [bead_count(r) for r in self.bead_radii_um],
                "tissue": {"embedding": "native", "glandularity": self.glandularity,
                           "steps_mm": list(self.steps_mm), "band_mm": self.band_mm},
                "band_centres_mm": self.band_centres_mm().tolist(),
                "bead_rows_mm": self.bead_rows_mm().tolist(),
                "width_mm": self.width_mm, "height_mm": self.height_mm,
                "roi_mm": list(self.roi_mm), "seed": self.seed}


def bead_count(radius_um: float) -> int:
    """Beads of ``radius_um`` (um) holding a Table 1 cluster's grain surface (at least 1)."""
    return max(1, round(float(SURFACE_MM2 / (4 * np.pi * (radius_um / 1000.0) ** 2))))


def bead_cluster(radius_um: float, centre_mm: tuple[float, float], *, seed: int,
                 material: str = TYPE_II, name: str | None = None) -> Cluster:
    """A cluster of monodisperse beads (um) centred at ``centre_mm`` (mm), from ``seed``."""
    rng = np.random.default_rng(seed)
    count = bead_count(radius_um)
    limit = max(EXTENT_MM - radius_um / 1000.0, 0.2 * EXTENT_MM)
    rho = limit * np.sqrt(rng.uniform(0, 1, count))
    angle = rng.uniform(0, 2 * np.pi, count)
    grains = tuple(Grain(centre_mm[0] + p * np.cos(a), centre_mm[1] + p * np.sin(a), float(radius_um),
                         material) for p, a in zip(rho, angle))
    return Cluster(name or f"bead{radius_um:g}um@{centre_mm[0]:+.1f},{centre_mm[1]:+.1f}",
                   "reference", grains, chemistry=material)


def calibration_phantom(spec: CalibrationPhantomSpec | None = None) -> Phantom:
    """The step wedge with one bead cluster per radius in every band (see module)."""
    spec = spec or CalibrationPhantomSpec()
    slab = TissueSlab(thickness_mm=max(spec.steps_mm), glandularity=spec.glandularity,
                      embedding="native", width_mm=spec.width_mm, height_mm=spec.height_mm,
                      steps_mm=tuple(spec.steps_mm))
    clusters = []
    for step, x in zip(spec.steps_mm, spec.band_centres_mm()):
        for index, (radius, y) in enumerate(zip(spec.bead_radii_um, spec.bead_rows_mm())):
            clusters.append(bead_cluster(radius, (float(x), float(y)), seed=spec.seed * 100 + index,
                                         material=spec.material,
                                         name=f"bead{radius:g}um-step{step:g}mm"))
    return Phantom(slab=slab, clusters=tuple(clusters))


def block_transmission(setup, kv: float = 40.0, *, thickness_mm: float = 10.0,
                       embedding: str = "paraffin") -> float:
    """Transmission T (0-1) of a uniform block (default: Table 1's 10 mm paraffin block)
    in the centre of ``setup``'s field at ``kv`` (kV): the reference Ts of the calibration."""
    from .engine import sample_signals
    from .setup import TubeState

    block = Phantom(slab=TissueSlab(thickness_mm=thickness_mm, embedding=embedding), clusters=())
    transmission = sample_signals(setup, block, (0.0, 0.0), TubeState(kv=kv)).transmission
    rows, cols = transmission.shape
    return float(np.nanmedian(transmission[rows // 4:3 * rows // 4, cols // 4:3 * cols // 4]))
