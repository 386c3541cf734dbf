"""The micro-CT descriptors of calcification clusters (Scherer et al. 2016, Table 1) and the
grain-size distributions the phantoms draw from them: every constant in one place.

Table 1 classifies a cluster by its particle-surface distribution sigma_r/sigma, the share
of the cluster's total grain surface (4 pi r^2 summed) held by grains of radius r:

- ultra-fine: r_max <= 275 um and sigma(r <= 175 um)/sigma >= 0.7
- fine: r_max <= 275 um and sigma(r <= 175 um)/sigma <= 0.7
- pleomorphic: 0.25 <= sigma(r >= 275 um)/sigma <= 0.75
- coarse: sigma(r >= 275 um)/sigma >= 0.85

The distributions below are fixed from the paper's text (Results, "Dependence of
absorption ... on their inherent micromorphology", and Methods); where the paper gives no
number the choice is named as ours.  Nothing here was adjusted by running the classifier
or by looking at mu/eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURES = ("ultra-fine", "fine", "pleomorphic", "coarse")

SMALL_UM = 175.0
"""Table 1: 'ultra small grains (r <= 175 um)'."""
LARGE_UM = 275.0
"""Table 1: r_max <= 275 um for (ultra-)fine; 'large calcium grains (r >= 275 um)'."""
ULTRA_FINE_MIN_SMALL = 0.7
"""Table 1: ultra-fine sigma(r <= 175)/sigma >= 0.7, fine <= 0.7."""
PLEOMORPHIC_LARGE = (0.25, 0.75)
"""Table 1: pleomorphic 0.25 <= sigma(r >= 275)/sigma <= 0.75."""
COARSE_MIN_LARGE = 0.85
"""Table 1: coarse sigma(r >= 275)/sigma >= 0.85."""

MICRO_CT_VOXEL_UM = 6.0
"""Methods: micro-CT effective resolution 6 um; particles of more than 5 voxels counted."""
MIN_RADIUS_UM = float((5 * 3 / (4 * np.pi)) ** (1 / 3) * MICRO_CT_VOXEL_UM)
"""Smallest counted grain: a sphere of 5 voxels (6.4 um)."""

SMALL_MEDIAN_UM = 75.0
"""Results (Fig. 2): ultra-fine 'very small calcium particles (grain radius of r ~ 75 um)
only', pleomorphic 'very small (r ~ 75 um)' grains."""
SMALL_LOG_SD = 0.35
"""Ours: the paper gives no width; log-normal sd 0.35 puts 95 % of the small grains
within 38-149 um, inside Table 1's r <= 175 um."""
MEDIUM_UM = (SMALL_UM, LARGE_UM)
"""Results: fine clusters add 'slightly larger particles (175 <= r <= 275 um)' (Fig. 2:
r ~ 175 um); uniform over the interval."""
PLEOMORPHIC_LARGE_UM = (LARGE_UM, 475.0)
"""Results: pleomorphic 'distinctly larger calcium particles (r ~ 275 um)' with 'a
progression towards the inclusion of larger particles (r >= 425 um)' (MC11-12); uniform
275-475 um (the upper end ours)."""
COARSE_LARGE_UM = (425.0, 1000.0)
"""Results: coarse 'very large calcium structures only (r ~ 700 um)', MC15 'a single,
compact calcification'; uniform 425-1000 um (mean 712 um; the bounds ours)."""

SMALL_SHARE = {
    "ultra-fine": (ULTRA_FINE_MIN_SMALL, 1.0),
    "fine": (0.3, ULTRA_FINE_MIN_SMALL),
}
"""Surface share of the small grains (the rest 175-275 um grains), drawn uniformly per
cluster.  Fine: Table 1 gives only <= 0.7; the text's 'more than 30 % of the surface'
in larger particles and Fig. 2's 'some additional larger particles' -> we take >= 0.3."""
LARGE_SHARE = {
    "pleomorphic": PLEOMORPHIC_LARGE,
    "coarse": (COARSE_MIN_LARGE, 1.0),
}
"""Surface share of the large grains (the rest small grains), drawn uniformly per cluster."""

SURFACE_MM2 = 200.0 / 31
"""Total grain surface sigma of a cluster (6.5 mm2): Results, 'the overall amount of
investigated material corresponds to a microcalcified surface area of approximately
200 mm2' over the 31 biopsied clusters (read as sigma, the paper's surface)."""
EXTENT_MM = 1.5
"""Ours: radius of the disc the grain centres spread over (a cluster ~3 mm across, as
the micro-CT images of Figs 2-4); large grains are kept inside it."""
TYPE_I = "calcium_oxalate_dihydrate"
"""Discussion: type I calcifications are calcium oxalate dihydrate."""
TYPE_II = "hydroxyapatite"
"""Discussion: type II calcifications are calcium hydroxyapatite."""


@dataclass(frozen=True)
class Descriptors:
    """Table 1's descriptors of a set of grains: surface shares, r_max (um), totals."""

    small_fraction: float
    """sigma(r <= 175 um) / sigma."""
    large_fraction: float
    """sigma(r >= 275 um) / sigma."""
    r_max_um: float
    surface_mm2: float
    volume_mm3: float
    grains: int


def _radii(grains) -> np.ndarray:
    radii = np.array([getattr(g, "radius_um", g) for g in grains], dtype=float)
    if radii.size == 0:
        raise ValueError("grains: a cluster needs at least one grain")
    if not np.all(np.isfinite(radii) & (radii > 0)):
        raise ValueError("grains: every radius_um must be finite and positive")
    return radii


def describe(grains) -> Descriptors:
    """Descriptors of ``grains`` (Grain objects or radii in um)."""
    radii = _radii(grains)
    surface = 4 * np.pi * (radii / 1000.0) ** 2
    total = float(surface.sum())
    return Descriptors(
        small_fraction=float(surface[radii <= SMALL_UM].sum() / total),
        large_fraction=float(surface[radii >= LARGE_UM].sum() / total),
        r_max_um=float(radii.max()),
        surface_mm2=total,
        volume_mm3=float((4 / 3 * np.pi * (radii / 1000.0) ** 3).sum()),
        grains=int(radii.size),
    )


def descriptor_class(grains) -> str | None:
    """Table 1 class of realised grains (Grain objects or radii in um), None in a gap."""
    d = describe(grains)
    if d.r_max_um <= LARGE_UM:
        return "ultra-fine" if d.small_fraction >= ULTRA_FINE_MIN_SMALL else "fine"
    if PLEOMORPHIC_LARGE[0] <= d.large_fraction <= PLEOMORPHIC_LARGE[1]:
        return "pleomorphic"
    if d.large_fraction >= COARSE_MIN_LARGE:
        return "coarse"
    return None


def _small(rng, n):
    radii = SMALL_MEDIAN_UM * np.exp(SMALL_LOG_SD * rng.standard_normal(n))
    return radii[(radii >= MIN_RADIUS_UM) & (radii <= SMALL_UM)]


def _fill(rng, draw, target_mm2: float, *, at_least_one: bool) -> list[float]:
    """Radii (um) drawn from ``draw`` until their surface is nearest ``target_mm2``."""
    radii, total = [], 0.0
    while total < target_mm2:
        batch = draw(rng)
        for r in batch:
            s = 4 * np.pi * (r / 1000.0) ** 2
            if (total + s - target_mm2 > target_mm2 - total) and (radii or not at_least_one):
                return radii  # the next grain would overshoot more than it fills
            radii.append(float(r))
            total += s
            if total >= target_mm2:
                return radii
    return radii


def draw_radii(texture: str, rng: np.random.Generator, *, surface_mm2: float = SURFACE_MM2,
               tries: int = 200) -> np.ndarray:
    """Grain radii (um) of one cluster of class ``texture``: its descriptor values drawn
    uniformly inside the class's range, realised grain by grain, redrawn until the
    realised grains are of that class by :func:`descriptor_class`."""
    if texture not in TEXTURES:
        raise ValueError(f"texture: unknown class {texture!r} (expected one of {', '.join(TEXTURES)})")
    if not (np.isfinite(surface_mm2) and surface_mm2 > 0):
        raise ValueError(f"surface_mm2 must be finite and positive, got {surface_mm2}")

    def small(g):
        return _small(g, 64)

    for _ in range(tries):
        if texture in SMALL_SHARE:
            share = rng.uniform(*SMALL_SHARE[texture])
            span, batch = MEDIUM_UM, 4
        else:
            share = 1 - rng.uniform(*LARGE_SHARE[texture])
            span = PLEOMORPHIC_LARGE_UM if texture == "pleomorphic" else COARSE_LARGE_UM
            batch = 1

        def other(g, span=span, batch=batch):
            return g.uniform(*span, batch)

        radii = []
        if share > 0:
            radii += _fill(rng, small, share * surface_mm2, at_least_one=False)
        if share < 1:  # pleomorphic and coarse clusters hold at least one large grain
            radii += _fill(rng, other, (1 - share) * surface_mm2,
                           at_least_one=texture not in SMALL_SHARE)
        if radii and descriptor_class(radii) == texture:
            return np.array(radii)
    raise RuntimeError(f"no {texture} cluster realised in {tries} draws")  # pragma: no cover
