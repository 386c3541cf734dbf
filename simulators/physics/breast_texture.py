"""Anatomical texture of native breast tissue, in sample coordinates (mm).

Two maps over the slab, fixed by the slab's ``texture_seed`` and sampled at any pixel
grid, so the texture moves with the stage and every tile of a mosaic sees the same tissue:

- the glandular fraction of the thickness: the mean glandularity plus a 1/f^beta
  power-law pattern (beta ~ 3: Burgess, Jacobson and Judy, Med. Phys. 28:419, 2001) of
  sd ``glandular_sd``, clipped to [0, 1];
- the scattering of fibres (thin curved strands) and ducts (branching tubes with a
  lumen): their path length through the pixel's column times
  ``strand_dark_field_per_mm``, i.e. eps at 20 keV (~1/E^2 at other energies).

The strand geometry below is ours (no number in Scherer et al. 2016): fibres 5-20 mm
long, radius 50-150 um; duct trees of 4 generations, segments 3-6 mm, root radius
0.4 mm shrinking by 0.75 a generation, lumen 0.6 of the radius.  Strands scatter only;
their attenuation is part of the glandular pattern.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

GRID_MM = 0.05
"""Spacing of the texture grid (mm), below the 85 um sample-plane pixel."""
MAX_GRID = 2048
"""Largest grid side: bigger slabs get a coarser grid."""
FIBRE_LENGTH_MM = (5.0, 20.0)
FIBRE_RADIUS_MM = (0.05, 0.15)
FIBRE_BEND_RAD = 0.05
"""rms change of a fibre's direction per GRID step of 0.5 mm."""
DUCT_ROOT_RADIUS_MM = 0.4
DUCT_SHRINK = 0.75
DUCT_GENERATIONS = 4
DUCT_SEGMENT_MM = (3.0, 6.0)
DUCT_BRANCH_DEG = (20.0, 45.0)
DUCT_LUMEN = 0.6


@dataclass(frozen=True)
class TextureMaps:
    """Glandular fraction and strand scattering (eps at 20 keV) on a grid over the slab."""

    origin_mm: tuple[float, float]
    """(x, y) of the grid's first node."""
    step_mm: float
    glandular: np.ndarray
    strands: np.ndarray

    def sample(self, u_mm: np.ndarray, v_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(glandular fraction, strand eps at 20 keV) at rows ``v_mm`` x columns ``u_mm``."""
        cols = (np.asarray(u_mm) - self.origin_mm[0]) / self.step_mm
        rows = (np.asarray(v_mm) - self.origin_mm[1]) / self.step_mm
        return _bilinear(self.glandular, rows, cols), _bilinear(self.strands, rows, cols)


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Separable linear interpolation on an outer (rows x cols) grid, edges held."""
    def weights(x, n):
        x = np.clip(x, 0, n - 1)
        i = np.minimum(np.floor(x).astype(int), max(n - 2, 0))
        return i, np.minimum(i + 1, n - 1), (x - i).astype(image.dtype)[..., None]
    r, r1, fr = weights(rows, image.shape[0])
    c, c1, fc = weights(cols, image.shape[1])
    along = image[r] * (1 - fr) + image[r1] * fr  # (rows, grid columns)
    return along[:, c] * (1 - fc[:, 0]) + along[:, c1] * fc[:, 0]


def power_law_field(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian field with power spectrum ~ 1/f^beta (f the radial
    spatial frequency), by filtering white noise in Fourier space."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf  # no mean
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) * f ** (-beta / 2)
    field = np.fft.irfft2(spectrum, s=shape)
    return (field - field.mean()) / field.std()


def _polyline_points(start, angle, length, bend, rng, step):
    """Points every ``step`` mm along a path whose direction wanders by ``bend`` rad rms."""
    n = max(2, int(length / step) + 1)
    angles = angle + np.cumsum(bend * np.sqrt(step / 0.5) * rng.standard_normal(n))
    xy = np.cumsum(np.stack([np.cos(angles), np.sin(angles)], axis=1) * step, axis=0)
    return np.asarray(start) + xy - xy[0]


def _strands(slab, rng) -> list[tuple[np.ndarray, float, float]]:
    """(centre-line points, radius mm, lumen fraction) of every fibre and duct segment."""
    area_cm2 = slab.width_mm * slab.height_mm / 100.0
    half = np.array([slab.width_mm, slab.height_mm]) / 2
    out = []
    for _ in range(rng.poisson(slab.fibres_per_cm2 * area_cm2)):
        start = rng.uniform(-half, half)
        points = _polyline_points(start, rng.uniform(0, 2 * np.pi), rng.uniform(*FIBRE_LENGTH_MM),
                                  FIBRE_BEND_RAD, rng, GRID_MM / 2)
        out.append((points, rng.uniform(*FIBRE_RADIUS_MM), 0.0))
    for _ in range(rng.poisson(slab.ducts_per_cm2 * area_cm2)):
        stack = [(rng.uniform(-half, half), rng.uniform(0, 2 * np.pi), DUCT_ROOT_RADIUS_MM, 0)]
        while stack:
            start, angle, radius, generation = stack.pop()
            points = _polyline_points(start, angle, rng.uniform(*DUCT_SEGMENT_MM), FIBRE_BEND_RAD,
                                      rng, GRID_MM / 2)
            out.append((points, radius, DUCT_LUMEN))
            if generation + 1 < DUCT_GENERATIONS:
                for sign in (-1, 1):
                    turn = sign * np.deg2rad(rng.uniform(*DUCT_BRANCH_DEG))
                    stack.append((points[-1], angle + turn, radius * DUCT_SHRINK, generation + 1))
    return out


@functools.lru_cache(maxsize=4)
def texture_maps(slab) -> TextureMaps:
    """The texture of a (native) TissueSlab, reproducible from its ``texture_seed``."""
    step = max(GRID_MM, max(slab.width_mm, slab.height_mm) / MAX_GRID)
    shape = (int(np.ceil(slab.height_mm / step)) + 1, int(np.ceil(slab.width_mm / step)) + 1)
    origin = (-(shape[1] - 1) * step / 2, -(shape[0] - 1) * step / 2)
    rng = np.random.default_rng([slab.texture_seed, 45])
    glandular = np.full(shape, float(slab.glandularity))
    if slab.glandular_sd > 0:
        glandular = np.clip(glandular + slab.glandular_sd * power_law_field(shape, slab.texture_beta, rng),
                            0.0, 1.0)
    strands = np.zeros(shape)
    pieces = _strands(slab, rng) if slab.strand_dark_field_per_mm > 0 else []
    if pieces:
        centre = np.zeros(shape, dtype=bool)
        radius = np.zeros(shape)
        lumen = np.zeros(shape)
        for points, r, inner in pieces:
            col = np.rint((points[:, 0] - origin[0]) / step).astype(int)
            row = np.rint((points[:, 1] - origin[1]) / step).astype(int)
            keep = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
            centre[row[keep], col[keep]] = True
            radius[row[keep], col[keep]] = np.maximum(radius[row[keep], col[keep]], r)
            lumen[row[keep], col[keep]] = inner
        distance, (iy, ix) = ndimage.distance_transform_edt(~centre, sampling=step, return_indices=True)
        a, b = radius[iy, ix], lumen[iy, ix] * radius[iy, ix]
        path = 2 * (np.sqrt(np.clip(a**2 - distance**2, 0, None)) - np.sqrt(np.clip(b**2 - distance**2, 0, None)))
        strands = path * slab.strand_dark_field_per_mm
    return TextureMaps(origin, step, glandular.astype(np.float32), strands.astype(np.float32))
