"""Phantoms: a tissue slab with calcification clusters built from grains of known radius.

A cluster's micromorphology is its grain-radius distribution (Scherer et al. 2016, Results
and Table 1): ultra-fine clusters hold only small grains, fine ones add a few larger ones,
pleomorphic ones mix small grains with distinctly larger ones, coarse ones are a few
compact grains.  The presets below keep those shapes and were calibrated so the simulated
mean mu/eps of each class lands inside Table 1's range; the radii this model needs are
about 2-2.5x smaller than the paper's micro-CT sphere-equivalent radii (docs/physics.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TEXTURES = ("ultra-fine", "fine", "pleomorphic", "coarse")


@dataclass(frozen=True)
class Grain:
    """One spherical calcium grain: centre in sample coordinates (mm), radius (um)."""

    x_mm: float
    y_mm: float
    radius_um: float
    material: str = "hydroxyapatite"


@dataclass(frozen=True)
class Cluster:
    """A calcification cluster with its true microtexture class."""

    name: str
    texture: str
    grains: tuple[Grain, ...]

    @property
    def centre_mm(self) -> tuple[float, float]:
        volume = np.array([g.radius_um**3 for g in self.grains])
        x = np.array([g.x_mm for g in self.grains])
        y = np.array([g.y_mm for g in self.grains])
        return float(np.average(x, weights=volume)), float(np.average(y, weights=volume))


@dataclass(frozen=True)
class TissueSlab:
    """The specimen around the clusters: a slab of tissue or paraffin (mm), centred at 0."""

    thickness_mm: float = 10.0
    glandularity: float = 0.5
    embedding: str = "paraffin"
    """"paraffin" (a biopsy block) or "native" (breast tissue of the given glandularity)."""
    width_mm: float = 60.0
    height_mm: float = 60.0
    dark_field_per_mm: float = 0.002
    """The tissue's own weak scattering power per mm of thickness at 20 keV."""
    edge_mm: float = 0.5
    """Width of the slab's rounded edge."""

    @property
    def material(self) -> str:
        return "paraffin" if self.embedding == "paraffin" else "breast"


@dataclass(frozen=True)
class Phantom:
    """A specimen: an optional slab and the clusters in it (sample coordinates, mm)."""

    slab: TissueSlab | None = field(default_factory=TissueSlab)
    clusters: tuple[Cluster, ...] = ()


@dataclass(frozen=True)
class PhantomSpec:
    """How to build a phantom: a slab and a grid of clusters of each class."""

    slab: TissueSlab = field(default_factory=TissueSlab)
    clusters_per_class: int = 3
    textures: tuple[str, ...] = TEXTURES
    spacing_mm: float = 9.0
    material: str = "hydroxyapatite"
    seed: int = 1


# (count, smallest and largest radius in um) of each grain population, and the radius (mm)
# of the disc the grain centres are spread over.
PRESETS = {
    "ultra-fine": ([(800, 12.0, 40.0)], 1.6),
    "fine": ([(550, 15.0, 45.0), (28, 90.0, 130.0)], 1.6),
    "pleomorphic": ([(500, 15.0, 45.0), (5, 190.0, 260.0)], 1.7),
    "coarse": ([(4, 260.0, 350.0)], 0.9),
}


def cluster_preset(texture: str, centre_mm: tuple[float, float], *, seed: int,
                   material: str = "hydroxyapatite", name: str | None = None) -> Cluster:
    """A cluster of class ``texture`` centred at ``centre_mm``, reproducible from ``seed``."""
    if texture not in PRESETS:
        raise ValueError(f"unknown texture {texture!r} (expected one of {', '.join(TEXTURES)})")
    populations, spread_mm = PRESETS[texture]
    rng = np.random.default_rng(seed)
    grains = []
    for count, r_min, r_max in populations:
        radii = rng.uniform(r_min, r_max, count)
        # uniform over the disc, large grains kept inside it
        limit = np.clip(spread_mm - radii / 1000.0, 0.2 * spread_mm, None)
        rho = limit * np.sqrt(rng.uniform(0, 1, count))
        angle = rng.uniform(0, 2 * np.pi, count)
        grains += [Grain(centre_mm[0] + p * np.cos(a), centre_mm[1] + p * np.sin(a), r, material)
                   for p, a, r in zip(rho, angle, radii)]
    return Cluster(name or f"{texture}@{centre_mm[0]:+.1f},{centre_mm[1]:+.1f}", texture,
                   tuple(grains))


def build_phantom(spec: PhantomSpec) -> Phantom:
    """Clusters on a grid centred at (0, 0): one row per repetition, one column per class."""
    for texture in spec.textures:
        if texture not in PRESETS:
            raise ValueError(f"unknown texture {texture!r} (expected one of {', '.join(TEXTURES)})")
    columns = len(spec.textures)
    rows = spec.clusters_per_class
    clusters = []
    for row in range(rows):
        for column, texture in enumerate(spec.textures):
            centre = ((column - (columns - 1) / 2) * spec.spacing_mm,
                      (row - (rows - 1) / 2) * spec.spacing_mm)
            clusters.append(cluster_preset(texture, centre, seed=spec.seed * 1000 + len(clusters),
                                           material=spec.material,
                                           name=f"{texture}-{row + 1}"))
    return Phantom(slab=spec.slab, clusters=tuple(clusters))
