"""Phantoms: a tissue slab with calcification clusters built from grains of known radius.

A cluster's micromorphology is its grain-radius distribution.  The grains are drawn from
the micro-CT descriptors of Scherer et al. 2016, Table 1 (``descriptors.py``): each
cluster draws its own descriptor values inside its class's range, so mu/eps spreads
within a class as in the paper's Fig. 5B; its class is the one its realised grains have
by Table 1's rules.  Nothing here was calibrated on the classifier (docs/physics.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .descriptors import (
    EXTENT_MM,
    SURFACE_MM2,
    TEXTURES,
    TYPE_I,
    TYPE_II,
    Descriptors,
    describe,
    descriptor_class,
    draw_radii,
)


@dataclass(frozen=True)
class Grain:
    """One spherical calcium grain: centre in sample coordinates (mm), radius (um)."""

    x_mm: float
    y_mm: float
    radius_um: float
    material: str = "hydroxyapatite"


@dataclass(frozen=True)
class Cluster:
    """A calcification cluster: its true Table 1 class, grains, chemistry and descriptors."""

    name: str
    texture: str
    grains: tuple[Grain, ...]
    chemistry: str = TYPE_II
    """Material of its grains: hydroxyapatite (type II) or calcium oxalate dihydrate (type I)."""
    descriptors: Descriptors | None = None
    """Table 1's descriptors of the realised grains (surface shares, r_max)."""

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
    """Mean glandular fraction of the thickness (native tissue; volume fraction)."""
    embedding: str = "paraffin"
    """"paraffin" (a biopsy block) or "native" (breast tissue of the given glandularity)."""
    width_mm: float = 60.0
    height_mm: float = 60.0
    dark_field_per_mm: float = 0.002
    """The tissue's own weak scattering power per mm of thickness at 20 keV."""
    edge_mm: float = 0.5
    """Width of the slab's rounded edge."""
    steps_mm: tuple[float, ...] = ()
    """A step wedge: equal-width bands along x of these thicknesses (mm), soft edges as the
    outline's; when given it replaces ``thickness_mm``."""
    glandular_sd: float = 0.0
    """Native tissue: sd of the per-pixel glandular fraction about ``glandularity`` (a
    1/f^beta pattern, clipped to [0, 1]); 0 = uniform."""
    texture_beta: float = 3.0
    """Exponent of the fibroglandular power spectrum 1/f^beta (Burgess et al. 2001: ~3)."""
    fibres_per_cm2: float = 0.0
    """Native tissue: thin scattering strands (fibres) per cm2 of slab."""
    ducts_per_cm2: float = 0.0
    """Native tissue: branching scattering tubes (duct trees) per cm2 of slab."""
    strand_dark_field_per_mm: float = 0.1
    """Scattering power of fibre and duct tissue per mm of path at 20 keV (~1/E^2)."""
    texture_seed: int = 1

    @property
    def material(self) -> str:
        return "paraffin" if self.embedding == "paraffin" else "breast"

    @property
    def max_thickness_mm(self) -> float:
        """The thickest part of the slab (mm): the thickest step, or ``thickness_mm``."""
        return max(self.steps_mm) if self.steps_mm else self.thickness_mm

    @property
    def textured(self) -> bool:
        """Native tissue with a glandular pattern, fibres or ducts."""
        return self.embedding == "native" and (
            self.glandular_sd > 0 or self.fibres_per_cm2 > 0 or self.ducts_per_cm2 > 0)


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
    material: str = TYPE_II
    """Material of the type II clusters."""
    type_i_fraction: float = 0.25
    """Share of the clusters that are type I (calcium oxalate dihydrate), chosen by seed."""
    seed: int = 1


def cluster_preset(texture: str, centre_mm: tuple[float, float], *, seed: int,
                   material: str = TYPE_II, name: str | None = None) -> Cluster:
    """A cluster of class ``texture`` centred at ``centre_mm``, reproducible from ``seed``.

    Its grains come from :func:`descriptors.draw_radii` (Table 1's descriptors, drawn
    inside the class's range) and are spread uniformly over a disc of radius EXTENT_MM.
    """
    if texture not in TEXTURES:
        raise ValueError(f"texture: unknown class {texture!r} (expected one of {', '.join(TEXTURES)})")
    rng = np.random.default_rng(seed)
    radii = draw_radii(texture, rng, surface_mm2=SURFACE_MM2)
    radii = radii[rng.permutation(radii.size)]
    # uniform over the disc, large grains kept inside it
    limit = np.clip(EXTENT_MM - radii / 1000.0, 0.2 * EXTENT_MM, None)
    rho = limit * np.sqrt(rng.uniform(0, 1, radii.size))
    angle = rng.uniform(0, 2 * np.pi, radii.size)
    grains = tuple(Grain(float(centre_mm[0] + p * np.cos(a)), float(centre_mm[1] + p * np.sin(a)),
                         float(r), material) for p, a, r in zip(rho, angle, radii))
    true_class = descriptor_class(grains)
    return Cluster(name or f"{texture}@{centre_mm[0]:+.1f},{centre_mm[1]:+.1f}", true_class, grains,
                   chemistry=material, descriptors=describe(grains))


def _check_textures(textures) -> None:
    for texture in textures:
        if texture not in TEXTURES:
            raise ValueError(f"textures: unknown class {texture!r} (expected one of {', '.join(TEXTURES)})")


def _chemistries(count: int, fraction: float, seed: int, type_ii: str) -> list[str]:
    """round(fraction * count) clusters of type I, which ones chosen by ``seed``."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"type_i_fraction must be in [0, 1], got {fraction}")
    chosen = set(np.random.default_rng([seed, 14]).permutation(count)[:round(fraction * count)].tolist())
    return [TYPE_I if i in chosen else type_ii for i in range(count)]


def build_phantom(spec: PhantomSpec) -> Phantom:
    """Clusters on a grid centred at (0, 0): one row per repetition, one column per class."""
    _check_textures(spec.textures)
    columns = len(spec.textures)
    rows = spec.clusters_per_class
    chemistry = _chemistries(rows * columns, spec.type_i_fraction, spec.seed, spec.material)
    clusters = []
    for row in range(rows):
        for column, texture in enumerate(spec.textures):
            centre = ((column - (columns - 1) / 2) * spec.spacing_mm,
                      (row - (rows - 1) / 2) * spec.spacing_mm)
            clusters.append(cluster_preset(texture, centre, seed=spec.seed * 1000 + len(clusters),
                                           material=chemistry[len(clusters)],
                                           name=f"{texture}-{row + 1}"))
    return Phantom(slab=spec.slab, clusters=tuple(clusters))


BREAST_TEXTURE = {"glandular_sd": 0.15, "texture_beta": 3.0, "fibres_per_cm2": 1.0, "ducts_per_cm2": 0.1}
"""The native breast specimen's texture (docs/physics.md): glandular-fraction sd, the
power-law exponent (Burgess et al., Med. Phys. 28:419, 2001), fibres and duct trees."""
_SPECIMEN = re.compile(r"(breast|paraffin)(\d+(?:\.\d+)?)")


def specimen(name: str, *, clusters: int = 12, seed: int = 1, spacing_mm: float = 9.0,
             type_i_fraction: float = 0.25) -> Phantom:
    """A named specimen: "breast45" (45 mm of native breast, 50 % glandular, textured) or
    "paraffin10" (a 10 mm paraffin block), any thickness in mm; ``clusters`` on a grid
    centred at 0, the four classes in turn, reproducible from ``seed``."""
    match = _SPECIMEN.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"name: {name!r} is not a specimen (expected breastMM or paraffinMM, "
                         "e.g. 'breast45', 'paraffin10')")
    thickness = float(match.group(2))
    if not 0 < thickness <= 150:
        raise ValueError(f"name: {name!r}: thickness must be in (0, 150] mm")
    if isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 0:
        raise ValueError(f"clusters must be a whole number >= 0, got {clusters!r}")
    if not (math.isfinite(spacing_mm) and spacing_mm > 2 * EXTENT_MM):
        raise ValueError(f"spacing_mm must be more than a cluster ({2 * EXTENT_MM:g} mm), got {spacing_mm!r}")
    columns = max(1, math.ceil(math.sqrt(clusters)))
    rows = max(1, math.ceil(clusters / columns))
    size = max(60.0, (max(columns, rows) + 1) * spacing_mm)
    texture = BREAST_TEXTURE if match.group(1) == "breast" else {}
    slab = TissueSlab(thickness_mm=thickness, embedding="native" if texture else "paraffin",
                      width_mm=size, height_mm=size, texture_seed=seed, **texture)
    chemistry = _chemistries(clusters, type_i_fraction, seed, TYPE_II)
    made = []
    for i in range(clusters):
        row, column = divmod(i, columns)
        centre = ((column - (columns - 1) / 2) * spacing_mm, (row - (rows - 1) / 2) * spacing_mm)
        texture_name = TEXTURES[i % len(TEXTURES)]
        made.append(cluster_preset(texture_name, centre, seed=seed * 100_003 + i, material=chemistry[i],
                                   name=f"{texture_name}-{i // len(TEXTURES) + 1}"))
    return Phantom(slab=slab, clusters=tuple(made))
