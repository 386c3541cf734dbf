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
    """One calcium particle of a micro-CT volume.

    Attributes
    ----------
    volume_um3 : float
        Volume (um^3).
    surface_um2 : float
        Surface (um^2): exposed voxel faces times 2/3.
    radius_um : float
        Radius of the sphere of equal volume (um).
    """

    volume_um3: float
    surface_um2: float
    radius_um: float


def particles(volume, threshold: float, voxel_um: float, *, min_voxels: int = 5) -> list[Particle]:
    """Particles of more than ``min_voxels`` face-connected voxels above ``threshold``.

    Parameters
    ----------
    volume : array_like
        3-D micro-CT volume (grey values, any unit).
    threshold : float
        Grey value above which a voxel is calcium (unit of ``volume``).
    voxel_um : float
        Voxel side (um), > 0.
    min_voxels : int
        Particles of this many voxels or fewer are dropped (paper: 5).

    Returns
    -------
    list of Particle
        In label (scan) order; empty if no voxel exceeds ``threshold``.

    Raises
    ------
    ValueError
        If ``volume`` is not 3-D or ``voxel_um`` is not positive.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Methods, "Voxel-based segmentation".

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import particles
    >>> volume = np.zeros((6, 6, 6))
    >>> volume[1:4, 1:4, 1:4] = 1.0  # a 3 x 3 x 3 voxel grain; the lone voxel is too small
    >>> volume[5, 5, 5] = 1.0
    >>> found = particles(volume, threshold=0.5, voxel_um=100.0)
    >>> grain = found[0]
    >>> print(len(found), grain.volume_um3, grain.surface_um2, round(grain.radius_um, 1))
    1 27000000.0 360000.0 186.1
    """
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
    """Fractions of the total surface in particles with r <= 175, 175 < r < 275, r >= 275 um.

    Parameters
    ----------
    found : list of Particle
        Particles of one cluster (:func:`particles`), at least one.
    edges_um : (float, float)
        Radii (um) between small, medium and large particles (Table 1: 175, 275).

    Returns
    -------
    dict of str to float
        ``small``, ``medium``, ``large``: fractions (0-1) of the total surface, sum 1.

    Raises
    ------
    ValueError
        If ``found`` is empty.

    Notes
    -----
    The particle surface distribution sigma_r/sigma of Scherer et al., Sci Rep 6:36991
    (2016), Table 1.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import particles, surface_distribution
    >>> volume = np.zeros((6, 6, 6))
    >>> volume[1:4, 1:4, 1:4] = 1.0  # a 3 x 3 x 3 voxel grain; the lone voxel is too small
    >>> volume[5, 5, 5] = 1.0
    >>> found = particles(volume, threshold=0.5, voxel_um=100.0)
    >>> print(surface_distribution(found))
    {'small': 0.0, 'medium': 1.0, 'large': 0.0}
    """
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
    """The Table 1 class the micro-CT descriptors point to, or "unclassified" (a gap).

    Parameters
    ----------
    found : list of Particle
        Particles of one cluster (:func:`particles`), at least one.

    Returns
    -------
    str
        "ultra-fine" or "fine" (all radii <= 275 um; ultra-fine if >= 70 % of the surface
        is in r <= 175 um), "coarse" (>= 85 % in r >= 275 um), "pleomorphic" (25-75 %),
        else "unclassified".

    Raises
    ------
    ValueError
        If ``found`` is empty.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Table 1 (micro-CT descriptors of each class).

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import particles, table1_descriptor
    >>> volume = np.zeros((6, 6, 6))
    >>> volume[1:4, 1:4, 1:4] = 1.0  # a 3 x 3 x 3 voxel grain; the lone voxel is too small
    >>> volume[5, 5, 5] = 1.0
    >>> found = particles(volume, threshold=0.5, voxel_um=100.0)
    >>> print(table1_descriptor(found))
    fine
    """
    fractions = surface_distribution(found)
    r_max = max(p.radius_um for p in found)
    if r_max <= 275.0:
        return "ultra-fine" if fractions["small"] >= 0.7 else "fine"
    if fractions["large"] >= 0.85:
        return "coarse"
    if 0.25 <= fractions["large"] <= 0.75:
        return "pleomorphic"
    return "unclassified"
