"""Mosaics: tiles placed from stage positions, refined by phase correlation, feathered.

Sign convention (the instrument's): the stage carries the specimen, so a stage move of
+dx mm moves the specimen's image by +dx/pixel_mm columns (+dy: rows).  A sample point u
is seen in a tile taken at stage position s at pixel (u + s)/pixel_mm from the tile
centre; the mosaic is built in sample coordinates, so tile k sits at the offset
``-s_k/pixel_mm`` (rows from y, columns from x), shifted so the first row/column is 0.

Overlaps are refined by phase correlation of the neighbours' absorption images and a
least-squares solve of all pairwise shifts (the first tile fixed); tiles are then placed
at whole pixels and blended with feathered weights (a linear ramp of ``feather_px`` from
each tile edge): mu = -ln T and eps = -ln V are averaged (the log domain, where tissue
adds), dphi as a circular mean.  NaN pixels contribute nothing.

Memory: tiles may be float32 (as the live processor keeps them) and are never converted
whole to float64; the refinement takes -ln T of the overlaps only, and the stitch's peak
is seven float32 images of the mosaic's size (sums and weights), the means computed in
their place (a 4 x 4 full-frame mosaic: 5683 x 7104 pixels, 161 MB each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


MIN_PEAK = 0.2
"""Phase-correlation peaks weaker than this (thin overlaps, no structure) are not trusted."""


@dataclass(frozen=True)
class Tile:
    """One retrieved tile and the stage position it was taken at.

    Attributes
    ----------
    transmission, dark_field : numpy.ndarray
        T and V (fractions, 0-1), 2-D, float32 or float64.
    differential_phase : numpy.ndarray
        dphi (rad), same shape.
    stage_mm : (float, float)
        Stage position (x, y) in mm.
    """

    transmission: np.ndarray
    dark_field: np.ndarray
    differential_phase: np.ndarray
    stage_mm: tuple[float, float]


@dataclass(frozen=True)
class Mosaic:
    """The stitched images, in sample coordinates.

    Attributes
    ----------
    transmission, dark_field : numpy.ndarray
        T = exp(-mu) and V = exp(-eps) of the mosaic (float32 fractions, NaN where no tile).
    differential_phase : numpy.ndarray
        Circular mean of the tiles' dphi (float32, rad).
    absorption, scattering : numpy.ndarray
        Feathered means of mu = -ln T and eps = -ln V (float32, dimensionless).
    offsets_px : list of (int, int)
        (row, column) of each tile's first pixel in the mosaic.
    weight : numpy.ndarray
        Sum of the feather weights of the tiles' finite mu (float32; 0: no data).
    """

    transmission: np.ndarray
    dark_field: np.ndarray
    differential_phase: np.ndarray
    absorption: np.ndarray
    scattering: np.ndarray
    offsets_px: list[tuple[int, int]]
    """(row, column) of each tile's first pixel in the mosaic."""
    weight: np.ndarray


def place_tiles(stage_positions_mm, pixel_mm: float) -> np.ndarray:
    """Offsets of the tiles in the mosaic from their stage positions.

    Parameters
    ----------
    stage_positions_mm : array_like of float
        (n, 2) stage positions (x, y) in mm.
    pixel_mm : float
        Effective pixel size at the sample (mm), > 0.

    Returns
    -------
    numpy.ndarray
        (n, 2) float offsets (rows, columns; pixels), the smallest 0: tile k at
        ``-stage_k/pixel_mm`` (the stage carries the specimen).

    Raises
    ------
    ValueError
        If ``pixel_mm`` is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import place_tiles
    >>> print(place_tiles([(0.0, 0.0), (0.85, 0.0), (0.0, 0.85)], pixel_mm=0.085))
    [[10. 10.]
     [10.  0.]
     [ 0. 10.]]
    """
    if not pixel_mm > 0:
        raise ValueError(f"pixel_mm must be > 0, got {pixel_mm}")
    stage = np.asarray(stage_positions_mm, dtype=np.float64).reshape(-1, 2)
    offsets = -stage[:, ::-1] / pixel_mm  # (y, x) -> (rows, columns)
    return offsets - offsets.min(axis=0)


def _shift_between(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(rows, cols) by which ``b``'s content lies displaced against ``a``'s, and the peak
    strength, by phase correlation (NaN -> mean)."""
    a = np.where(np.isfinite(a), a, np.nanmean(a)) - np.nanmean(a)
    b = np.where(np.isfinite(b), b, np.nanmean(b)) - np.nanmean(b)
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    cross = np.fft.fft2(b * window) * np.conj(np.fft.fft2(a * window))
    cross /= np.abs(cross) + 1e-12
    correlation = np.fft.ifft2(cross).real
    peak = np.unravel_index(np.argmax(correlation), correlation.shape)
    shift = np.array([p if p <= n // 2 else p - n for p, n in zip(peak, correlation.shape)], float)
    return shift, float(correlation.max())


STAGE_PRIOR_WEIGHT = 1e-3
"""Weight of a tile's stage offset against a phase-correlation equation (weight 1)."""


def _overlap_mu(tile: Tile, start, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """mu = -ln T of the part of ``tile`` (first pixel at ``start``) in a mosaic window: only
    the overlap is converted, never a whole tile (in the tile's own float type)."""
    window = tile.transmission[top - start[0]:bottom - start[0], left - start[1]:right - start[1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(window)


def refine_offsets(tiles: list[Tile], offsets: np.ndarray, *, max_shift_px: int = 10,
                   min_overlap_px: int = 16) -> np.ndarray:
    """Offsets corrected by phase correlation of every overlapping pair (tile 0 fixed).

    Parameters
    ----------
    tiles : list of Tile
        Tiles of one shape.
    offsets : array_like of float
        (n, 2) offsets (rows, columns; pixels), e.g. :func:`place_tiles`.
    max_shift_px : int
        Largest correction (pixels) trusted; larger correlation peaks are ignored.
    min_overlap_px : int
        Fewest overlapping rows and columns (pixels) of a pair that is correlated.

    Returns
    -------
    numpy.ndarray
        (n, 2) float offsets (pixels): the least-squares solution of all trusted pairwise
        shifts, each tile weakly held to its given offset; ``offsets`` unchanged if no pair
        is trusted.

    Examples
    --------
    Two 40 x 40 px tiles of one scene overlapping by 20 columns, the stage off by 3 px:

    >>> import numpy as np
    >>> from reconstruction import Tile, place_tiles, refine_offsets
    >>> scene = np.exp(-np.random.default_rng(0).uniform(0.1, 1.0, (40, 60)))
    >>> ones, zeros = np.ones((40, 40)), np.zeros((40, 40))
    >>> tiles = [Tile(scene[:, :40], ones, zeros, (0.0, 0.0)),
    ...          Tile(scene[:, 20:], ones, zeros, (-20 * 0.085, 0.0))]
    >>> stage = place_tiles([t.stage_mm for t in tiles], 0.085) + [[0, 0], [0, 3]]
    >>> print(np.round(refine_offsets(tiles, stage), 2))
    [[ 0.  0.]
     [ 0. 20.]]
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    rows, cols = tiles[0].transmission.shape
    start = np.rint(offsets).astype(int)
    equations = []
    for i in range(len(tiles)):
        for j in range(i + 1, len(tiles)):
            top, left = np.maximum(start[i], start[j])
            bottom = min(start[i][0], start[j][0]) + rows
            right = min(start[i][1], start[j][1]) + cols
            if bottom - top < min_overlap_px or right - left < min_overlap_px:
                continue
            a = _overlap_mu(tiles[i], start[i], top, bottom, left, right)
            b = _overlap_mu(tiles[j], start[j], top, bottom, left, right)
            shift, strength = _shift_between(a, b)
            if np.all(np.abs(shift) <= max_shift_px) and strength > MIN_PEAK:
                # b's content displaced by +shift: tile j sits shift too far in the mosaic
                equations.append((i, j, (start[j] - start[i]) - shift))
    if not equations:
        return offsets
    # every measured pair difference, plus a weak pull of each tile to its stage offset:
    # tiles that no pair ties to tile 0 keep their stage placement (as a group)
    n = len(tiles)
    matrix = np.zeros((len(equations) + n, n))
    rhs = np.zeros((len(equations) + n, 2))
    for k, (i, j, difference) in enumerate(equations):
        matrix[k, i], matrix[k, j] = -1, 1
        rhs[k] = difference
    for i in range(n):
        weight = 1.0 if i == 0 else STAGE_PRIOR_WEIGHT  # tile 0 stays where the stage put it
        matrix[len(equations) + i, i] = weight
        rhs[len(equations) + i] = weight * offsets[i]
    solved, *_ = np.linalg.lstsq(matrix, rhs, rcond=None)
    return solved


def _feather(shape: tuple[int, int], feather_px: int) -> np.ndarray:
    rows = np.minimum(np.arange(shape[0]), np.arange(shape[0])[::-1]) + 1
    cols = np.minimum(np.arange(shape[1]), np.arange(shape[1])[::-1]) + 1
    ramp = np.minimum(rows[:, None], cols[None, :]) / max(feather_px, 1)
    return np.minimum(ramp, 1.0).astype(np.float32)


def stitch(tiles: list[Tile], pixel_mm: float, *, refine: bool = True, feather_px: int = 32) -> Mosaic:
    """The mosaic of ``tiles`` taken at their stage positions.

    Parameters
    ----------
    tiles : list of Tile
        At least one; all images of one shape.
    pixel_mm : float
        Effective pixel size at the sample (mm), > 0.
    refine : bool
        Correct the stage offsets by phase correlation (:func:`refine_offsets`).
    feather_px : int
        Width (pixels) of the linear weight ramp from each tile edge.

    Returns
    -------
    Mosaic
        mu and eps averaged with feathered weights, dphi as a circular mean; NaN pixels of
        a tile contribute nothing.

    Raises
    ------
    ValueError
        If ``tiles`` is empty, a tile's images differ in shape from tile 0's, or
        ``pixel_mm`` is not positive.

    Examples
    --------
    Two 8 x 8 px tiles 4 px (0.34 mm) apart make an 8 x 12 px mosaic:

    >>> import numpy as np
    >>> from reconstruction import Tile, stitch
    >>> images = (np.full((8, 8), 0.5), np.full((8, 8), 0.8), np.zeros((8, 8)))
    >>> mosaic = stitch([Tile(*images, (0.0, 0.0)), Tile(*images, (-0.34, 0.0))], 0.085,
    ...                 refine=False, feather_px=2)
    >>> print(mosaic.transmission.shape, mosaic.offsets_px,
    ...       f"{float(mosaic.transmission[4, 6]):.3f} {float(mosaic.scattering[4, 6]):.3f}")
    (8, 12) [(0, 0), (0, 4)] 0.500 0.223
    """
    if not tiles:
        raise ValueError("no tiles to stitch")
    shape = tiles[0].transmission.shape
    for k, t in enumerate(tiles):
        if not (t.transmission.shape == t.dark_field.shape == t.differential_phase.shape == shape):
            raise ValueError(f"tile {k} has images of shape {t.transmission.shape}, "
                             f"{t.dark_field.shape}, {t.differential_phase.shape}; tile 0 {shape}")
    offsets = place_tiles([t.stage_mm for t in tiles], pixel_mm)
    if refine and len(tiles) > 1:
        offsets = refine_offsets(tiles, offsets)
    placed = np.rint(offsets - offsets.min(axis=0)).astype(int)
    total = (placed[:, 0].max() + shape[0], placed[:, 1].max() + shape[1])
    sums = {name: np.zeros(total, np.float32) for name in ("mu", "eps", "cos", "sin")}
    weights = {name: np.zeros(total, np.float32) for name in ("mu", "eps", "phase")}
    feather = _feather(shape, feather_px)
    for tile, (r, c) in zip(tiles, placed):
        window = (slice(r, r + shape[0]), slice(c, c + shape[1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {"mu": -np.log(np.asarray(tile.transmission, np.float32)),
                      "eps": -np.log(np.asarray(tile.dark_field, np.float32)),
                      "phase": np.asarray(tile.differential_phase, np.float32)}
        for name, value in values.items():
            ok = np.isfinite(value)
            w = np.where(ok, feather, np.float32(0))
            weights[name][window] += w
            value = np.where(ok, value, np.float32(0))
            if name == "phase":  # a circular mean: average the unit vectors
                sums["cos"][window] += np.cos(value) * w
                sums["sin"][window] += np.sin(value) * w
            else:
                sums[name][window] += value * w
    # the means replace the sums in place: the peak is the seven float32 accumulators
    absorption = _weighted_mean(sums.pop("mu"), weights["mu"])
    scattering = _weighted_mean(sums.pop("eps"), weights.pop("eps"))
    phase = np.arctan2(sums["sin"], sums["cos"], out=sums["cos"])
    del sums
    phase[weights.pop("phase") == 0] = np.nan
    return Mosaic(_exp_minus(absorption), _exp_minus(scattering), phase, absorption, scattering,
                  [tuple(map(int, p)) for p in placed], weights["mu"])


def _weighted_mean(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """total / weight, in place of ``total``; NaN where the weight is 0."""
    positive = weight > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(total, weight, out=total, where=positive)
    total[~positive] = np.nan
    return total


def _exp_minus(values: np.ndarray) -> np.ndarray:
    """exp(-values) with one new array (T from mu, V from eps)."""
    out = np.negative(values)
    return np.exp(out, out=out)
