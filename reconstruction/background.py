"""Local background and noise of a mu or eps image, robust against calcifications.

The background is a grey opening (erosion then dilation with a flat square of
``background_px``) of the 3x3-median-filtered image: it removes every bright feature
narrower than the square (grains, clusters) and keeps what is wider (a tissue slab, its
rounded or sharp edges, a slow drift of the visibility).  An opening sits below the noise,
so the residual ``image - opening`` still carries a smooth positive offset; that offset and
the noise sigma are estimated robustly per block (median and MAD of ``block_px`` x
``block_px`` tiles, then a median over neighbouring tiles), and interpolated back to full
resolution.  The result is the excess over the local tissue in units of the image and a
per-pixel noise sigma.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.4826
"""sigma of a normal distribution per median absolute deviation."""
MIN_SIGMA = 1e-6
"""Floor of the noise sigma (mu, eps are dimensionless): noise-free images still segment."""


def negative_log(image) -> np.ndarray:
    """``-ln(image)`` as float64; NaN where the image is <= 0 or not finite."""
    image = np.asarray(image, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(np.where(image > 0, image, np.nan))


_MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
                    (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))
"""Compare-exchanges after which element 4 of 9 is their median (Paeth; Devillard's opt_med9)."""


def median3x3(image: np.ndarray) -> np.ndarray:
    """3 x 3 median filter (edges: nearest), exact, as ``ndimage.median_filter(image, 3,
    mode="nearest")`` for finite images, by a sorting network on the nine shifted images,
    row block by row block (cache-sized), in place."""
    padded = np.pad(image, 1, mode="edge")
    ny, nx = image.shape
    out = np.empty_like(image)
    rows = max(1, (1 << 14) // max(nx, 1))
    for first in range(0, ny, rows):
        last = min(first + rows, ny)
        p = [padded[first + r:last + r, c:c + nx].copy() for r in range(3) for c in range(3)]
        spare = np.empty_like(p[0])
        for a, b in _MEDIAN9_NETWORK:
            np.minimum(p[a], p[b], out=spare)
            np.maximum(p[a], p[b], out=p[b])
            p[a], spare = spare, p[a]
        out[first:last] = p[4]
    return out


def _block_median(values: np.ndarray, block_px: int) -> np.ndarray:
    """The NaN-ignoring median of each block_px x block_px tile (NaN for an all-NaN tile)."""
    ny, nx = values.shape
    by, bx = -(-ny // block_px), -(-nx // block_px)
    padded = np.full((by * block_px, bx * block_px), np.nan, values.dtype)
    padded[:ny, :nx] = values
    tiles = padded.reshape(by, block_px, bx, block_px).transpose(0, 2, 1, 3).reshape(by, bx, -1)
    holed = np.isnan(tiles).any(axis=-1)
    result = np.median(tiles, axis=-1)  # a partition: fast; the few tiles with NaN again:
    if holed.any():
        result[holed] = np.nanmedian(tiles[holed], axis=-1)
    return result


def _smooth_tiles(tiles: np.ndarray, neighbourhood: int) -> np.ndarray:
    """Median over ``neighbourhood`` x ``neighbourhood`` tiles; empty tiles filled first."""
    finite = np.isfinite(tiles)
    if not finite.any():
        return np.zeros_like(tiles)
    if not finite.all():  # fill empty tiles from the nearest filled one
        index = ndimage.distance_transform_edt(~finite, return_distances=False, return_indices=True)
        tiles = tiles[tuple(index)]
    return ndimage.median_filter(tiles, size=neighbourhood, mode="nearest")


def _linear_weights(n_pixels: int, block_px: int, n_tiles: int):
    """Tile indices and weights of linear interpolation from tile centres to pixels."""
    position = np.clip((np.arange(n_pixels) + 0.5) / block_px - 0.5, 0, n_tiles - 1)
    low = np.minimum(np.floor(position).astype(int), max(n_tiles - 2, 0))
    high = np.minimum(low + 1, n_tiles - 1)
    return low, high, position - low


def _to_pixels(tiles: np.ndarray, block_px: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (separable) interpolation of tile values at tile centres to every pixel."""
    low, high, w = _linear_weights(shape[0], block_px, tiles.shape[0])
    rows = tiles[low] * (1 - w)[:, None] + tiles[high] * w[:, None]
    low, high, w = _linear_weights(shape[1], block_px, tiles.shape[1])
    return rows[:, low] * (1 - w) + rows[:, high] * w


def local_excess(image, *, background_px: int = 81, block_px: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Excess of ``image`` (e.g. mu or eps) over its local background, and the noise sigma.

    Returns two float32 arrays of the image's shape: the excess (0 where the image is not
    finite) and the robust per-pixel noise sigma of that excess (>= MIN_SIGMA).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if background_px < 3:
        raise ValueError(f"background_px must be >= 3 pixels, got {background_px}")
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros_like(image), np.full_like(image, np.inf)  # nothing to measure
    filled = np.where(finite, image, np.median(image[finite])).astype(np.float32)
    base = ndimage.grey_opening(median3x3(filled), size=(background_px, background_px), mode="nearest")
    residual = np.where(finite, filled - base, np.float32(np.nan))

    neighbourhood = max(3, 2 * (background_px // (2 * block_px)) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles give NaN, filled later
        offset_tiles = _smooth_tiles(_block_median(residual, block_px), neighbourhood)
        offset = _to_pixels(offset_tiles, block_px, image.shape)
        spread = np.abs(residual - offset)
        sigma_tiles = _smooth_tiles(MAD_TO_SIGMA * _block_median(spread, block_px), neighbourhood)
    sigma = np.maximum(_to_pixels(sigma_tiles, block_px, image.shape), MIN_SIGMA)
    return (np.where(finite, residual - offset, 0.0).astype(np.float32, copy=False),
            sigma.astype(np.float32, copy=False))
