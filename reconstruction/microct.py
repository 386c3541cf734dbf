"""Micro-CT validation of the microtexture (paper Methods "Voxel-based segmentation", Table 1).

A micro-CT volume is thresholded into calcium and paraffin; face-connected particles of
more than 5 voxels are labelled (``scipy.ndimage.label`` with 6-connectivity); each has a
volume, a surface and the radius of the sphere of equal volume.  The surface of a voxel
object is estimated from its exposed voxel faces times 2/3: a smooth surface seen by
axis-aligned faces is over-counted by 3/2 on average over orientations (Cauchy's
projection formula), which brings voxelised spheres within a few per cent.  The particle
surface distribution sigma_r/sigma (the fraction of the total surface in particles of
radius r) then gives Table 1's descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FACE_CONNECTED = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class Particle:
    """One calcium particle: volume (um^3), surface (um^2), sphere-equivalent radius (um)."""

    volume_um3: float
    surface_um2: float
    radius_um: float


def particles(volume, threshold: float, voxel_um: float, *, min_voxels: int = 5) -> list[Particle]:
    """Particles of more than ``min_voxels`` face-connected voxels above ``threshold``."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    if not voxel_um > 0:
        raise ValueError(f"voxel_um must be > 0, got {voxel_um}")
    solid = volume > threshold
    labels, count = ndimage.label(solid, structure=FACE_CONNECTED)
    if count == 0:
        return []
    voxels = np.bincount(labels.ravel(), minlength=count + 1)
    faces = np.zeros(count + 1)
    padded = np.pad(labels, 1)
    for axis in range(3):
        a = np.moveaxis(padded, axis, 0)
        boundary = a[1:] != a[:-1]  # a face between two different labels (or background)
        faces += np.bincount(a[1:][boundary], minlength=count + 1)
        faces += np.bincount(a[:-1][boundary], minlength=count + 1)
    result = []
    for label in range(1, count + 1):
        if voxels[label] <= min_voxels:
            continue
        volume_um3 = voxels[label] * voxel_um**3
        result.append(Particle(volume_um3, faces[label] * voxel_um**2 * 2 / 3,
                               (3 * volume_um3 / (4 * np.pi)) ** (1 / 3)))
    return result


def surface_distribution(found: list[Particle], edges_um=(175.0, 275.0)) -> dict[str, float]:
    """Fractions of the total surface in particles with r <= 175, 175 < r < 275, r >= 275 um."""
    if not found:
        raise ValueError("no particles")
    small, large = edges_um
    radius = np.array([p.radius_um for p in found])
    surface = np.array([p.surface_um2 for p in found])
    total = surface.sum()
    return {"small": float(surface[radius <= small].sum() / total),
            "medium": float(surface[(radius > small) & (radius < large)].sum() / total),
            "large": float(surface[radius >= large].sum() / total)}


def table1_descriptor(found: list[Particle]) -> str:
    """The Table 1 class the micro-CT descriptors point to, or "unclassified" (a gap)."""
    fractions = surface_distribution(found)
    r_max = max(p.radius_um for p in found)
    if r_max <= 275.0:
        return "ultra-fine" if fractions["small"] >= 0.7 else "fine"
    if fractions["large"] >= 0.85:
        return "coarse"
    if 0.25 <= fractions["large"] <= 0.75:
        return "pleomorphic"
    return "unclassified"
