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

A large image is worked on in bands of rows (:func:`excess_bands`): the filters on each band
with a halo of ``background_px + 2`` rows, the block statistics on bands aligned to the
blocks, the median over tiles and the fill value (median of the finite pixels) over the whole
image, so every band equals those rows of the whole-image result, bit for bit.

With numba (:func:`segmentation_kernels.enabled`), the 3 x 3 median, the opening and the
interpolation of the tile statistics are compiled and give the same numbers
(tests/test_classification_speed_paths.py); with the compiled closing, a full frame's
classification takes 0.28 s of CPU against 0.93 s (docs/reconstruction.md).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from . import segmentation_kernels

MAD_TO_SIGMA = 1.4826
"""sigma of a normal distribution per median absolute deviation."""
MIN_SIGMA = 1e-6
"""Floor of the noise sigma (mu, eps are dimensionless): noise-free images still segment."""


def negative_log(image) -> np.ndarray:
    """``-ln(image)`` as float64; NaN where the image is <= 0 or not finite."""
    image = np.array(image, dtype=np.float64)  # a copy, worked on in place
    image[~(image > 0)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(image, out=image)
    return np.negative(image, out=image)


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
    padded = values
    if ny % block_px or nx % block_px:  # the edge tiles padded with NaN
        padded = np.full((by * block_px, bx * block_px), np.nan, values.dtype)
        padded[:ny, :nx] = values
    tiles = padded.reshape(by, block_px, bx, block_px).transpose(0, 2, 1, 3).reshape(by, bx, -1)
    if np.may_share_memory(tiles, values):  # a view of the caller's values (one tile wide)
        tiles = tiles.copy()
    holed = np.isnan(tiles).any(axis=-1)
    middle = tiles.shape[-1] // 2  # np.median's numbers from one partition (it makes two),
    tiles.partition(middle, axis=-1)  # in place (nanmedian below takes any order)
    result = tiles[..., middle] if tiles.shape[-1] % 2 else (
        tiles[..., :middle].max(axis=-1) + tiles[..., middle]) / 2  # np.mean of the two, in dtype
    if holed.any():  # the few tiles with NaN again
        result[holed] = np.nanmedian(tiles[holed], axis=-1)
    return result


def tissue_base(filled: np.ndarray, background_px: int, compiled: bool) -> np.ndarray:
    """The grey opening (flat ``background_px`` square, edges nearest) of the 3 x 3 median
    of a finite image: ``compiled`` (:func:`segmentation_kernels.enabled`) or scipy's, the
    same numbers."""
    if compiled:
        return segmentation_kernels.grey_opening(segmentation_kernels.median3x3(filled), background_px)
    return ndimage.grey_opening(median3x3(filled), size=(background_px, background_px), mode="nearest")


def _smooth_tiles(tiles: np.ndarray, neighbourhood: int) -> np.ndarray:
    """Median over ``neighbourhood`` x ``neighbourhood`` tiles; empty tiles filled first."""
    finite = np.isfinite(tiles)
    if not finite.any():
        return np.zeros_like(tiles)
    if not finite.all():  # fill empty tiles from the nearest filled one
        index = ndimage.distance_transform_edt(~finite, return_distances=False, return_indices=True)
        tiles = tiles[tuple(index)]
    # ndimage.median_filter(tiles, size=neighbourhood, mode="nearest")'s numbers, 4x faster:
    # the middle of each (odd) window's values
    reach = neighbourhood // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(tiles, reach, mode="edge"),
                                                       (neighbourhood, neighbourhood))
    values = windows.reshape(*tiles.shape, -1)
    if not values.flags.writeable:  # a view (a single tile)
        values = values.copy()
    middle = values.shape[-1] // 2
    values.partition(middle, axis=-1)
    return values[..., middle].copy()


def _linear_weights(n_pixels: int, block_px: int, n_tiles: int):
    """Tile indices and weights of linear interpolation from tile centres to pixels."""
    position = np.clip((np.arange(n_pixels) + 0.5) / block_px - 0.5, 0, n_tiles - 1)
    low = np.minimum(np.floor(position).astype(int), max(n_tiles - 2, 0))
    high = np.minimum(low + 1, n_tiles - 1)
    return low, high, position - low


def _interpolation(tiles: np.ndarray, block_px: int, shape: tuple[int, int], rows: slice):
    """(along, low, high, w): the tile values interpolated along ``rows`` of an image of
    ``shape``, and the columns' tile indices and weights (:func:`_to_pixels`)."""
    low, high, w = (a[rows] for a in _linear_weights(shape[0], block_px, tiles.shape[0]))
    along = tiles[low] * (1 - w)[:, None] + tiles[high] * w[:, None]
    return (along, *_linear_weights(shape[1], block_px, tiles.shape[1]))


def _to_pixels(tiles: np.ndarray, block_px: int, shape: tuple[int, int],
               rows: slice = slice(None)) -> np.ndarray:
    """Bilinear (separable) interpolation of tile values at tile centres to every pixel
    of ``rows`` of an image of ``shape``."""
    along, low, high, w = _interpolation(tiles, block_px, shape, rows)
    pixels = np.take(along, low, axis=1)  # along[:, low] * (1 - w) + along[:, high] * w, in place
    pixels *= 1 - w
    right = np.take(along, high, axis=1)
    right *= w
    pixels += right
    return pixels


BAND_PIXELS = 1 << 21
"""Pixels of one band (about 2.1 Mpx, 17 MB as float64) when an image is worked on in bands
of rows: a full 1536 x 1920 frame is two bands, a 5683 x 7104 mosaic nineteen.  Smaller
bands save little more memory (the halos grow) and are not faster."""


def row_bands(n_rows: int, n_columns: int, band_rows: int | None = None,
              multiple: int = 1) -> list[tuple[int, int]]:
    """(first, stop) of consecutive bands of rows covering ``n_rows``: ``band_rows`` rows
    each (rounded up to a multiple of ``multiple``), None: about BAND_PIXELS pixels each."""
    if band_rows is None:
        band_rows = BAND_PIXELS // max(n_columns, 1)
    elif isinstance(band_rows, bool) or not isinstance(band_rows, (int, float, np.integer, np.floating)) \
            or not 1 <= band_rows < np.inf or int(band_rows) != band_rows:
        raise ValueError(f"band_rows must be a positive number of rows or None, got {band_rows!r}")
    band_rows = -(-max(int(band_rows), 1) // multiple) * multiple
    return [(first, min(first + band_rows, n_rows)) for first in range(0, n_rows, band_rows)] or [(0, 0)]


def _float32_key(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort as the float32 ``values`` do (finite values; -0 as +0)."""
    bits = np.add(values, np.float32(0), dtype=np.float32).view(np.uint32)
    key = bits >> 31  # negative: all bits flipped; positive: the sign bit set
    np.negative(key, out=key)
    key |= np.uint32(1 << 31)
    key ^= bits
    return key


def _from_key(key: int) -> np.float32:
    bits = np.uint32(key)
    bits = bits & np.uint32(0x7FFFFFFF) if bits >> 31 else ~bits
    return np.array([bits], np.uint32).view(np.float32)[0]


def _finite_count_and_median(read, bands) -> tuple[int, int, np.float32 | None]:
    """Pixels, finite pixels and, if some are not finite, the median of the finite values
    of the float32 image whose rows ``read(slice)`` returns: ``np.median(image[finite])``
    exactly (a radix selection on the float32 bits, two more reads of the image, in bands)."""
    total = n = 0
    for first, stop in bands:  # a first read, to count: an image all finite needs no median
        image = read(slice(first, stop))
        total += image.size
        n += int(np.count_nonzero(np.isfinite(image)))
    if n == 0 or n == total:
        return total, n, None
    high = np.zeros(1 << 16, np.int64)
    for first, stop in bands:
        image = read(slice(first, stop))
        high += np.bincount((_float32_key(image[np.isfinite(image)]) >> 16).astype(np.intp),
                            minlength=1 << 16)
    ranks = (n // 2,) if n % 2 else (n // 2 - 1, n // 2)
    cumulative = np.cumsum(high)
    wanted = {rank: int(np.searchsorted(cumulative, rank, side="right")) for rank in ranks}
    low = {h: np.zeros(1 << 16, np.int64) for h in set(wanted.values())}
    for first, stop in bands:
        image = read(slice(first, stop))
        keys = _float32_key(image[np.isfinite(image)])
        for h, counts in low.items():
            counts += np.bincount((keys[(keys >> 16) == h] & 0xFFFF).astype(np.intp), minlength=1 << 16)
    middle = []
    for rank, h in wanted.items():
        within = rank - (int(cumulative[h - 1]) if h else 0)
        middle.append(_from_key((h << 16) | int(np.searchsorted(np.cumsum(low[h]), within, side="right"))))
    return total, n, np.median(np.array(middle, np.float32))


def excess_bands(read, shape: tuple[int, int], *, background_px: int = 81, block_px: int = 16,
                 band_rows: int | None = None):
    """:func:`local_excess` of a large image, band of rows by band: yields ``(rows, excess,
    sigma)`` for consecutive bands (``rows`` a slice), each equal to those rows of the
    whole-image result.  ``read(rows)`` returns those rows of the image as float32; it is
    called once per band.  Memory: one float32 residual of the image plus a band's
    filters (``band_rows`` rows, a multiple of ``block_px``; None: about BAND_PIXELS pixels).
    """
    if background_px < 3:
        raise ValueError(f"background_px must be >= 3 pixels, got {background_px}")
    if int(block_px) != block_px or block_px < 1:
        raise ValueError(f"block_px must be a positive number of pixels, got {block_px}")
    ny, nx = shape
    bands = row_bands(ny, nx, band_rows, block_px)
    residual = np.empty(shape, np.float32)  # the image (read once), then its residual, then the excess
    for first, stop in bands:
        residual[first:stop] = read(slice(first, stop))
    _, n_finite, fill = _finite_count_and_median(residual.__getitem__, bands)
    if n_finite == 0:  # nothing to measure
        for first, stop in bands:
            yield (slice(first, stop), np.zeros((stop - first, nx), np.float32),
                   np.full((stop - first, nx), np.inf, np.float32))
        return
    compiled = segmentation_kernels.enabled()
    halo = background_px + 2  # the 3 x 3 median, then erosion and dilation of background_px
    above = residual[:0].copy()  # the image's rows within halo above the band (overwritten since)
    for first, stop in bands:
        top, bottom = first - len(above), min(stop + halo, ny)
        image = np.concatenate([above, residual[first:bottom]])
        finite = np.isfinite(image)
        filled = image if fill is None else np.where(finite, image, fill).astype(np.float32, copy=False)
        base = tissue_base(filled, background_px, compiled)
        core = slice(first - top, stop - top)
        residual[first:stop] = np.where(finite[core], filled[core] - base[core], np.float32(np.nan))
        above = image[max(stop - halo, top) - top:stop - top]
        del image, finite, filled, base
    del above

    neighbourhood = max(3, 2 * (background_px // (2 * block_px)) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles give NaN, filled later
        offset_tiles = _smooth_tiles(np.concatenate(
            [_block_median(residual[first:stop], block_px) for first, stop in bands]), neighbourhood)
        spread_tiles = []
        for first, stop in bands:  # the spread about the offset; the residual becomes the excess
            band = residual[first:stop]
            if compiled:  # the same numbers in one pass
                spread = segmentation_kernels.subtract_interpolated(
                    band, *_interpolation(offset_tiles, block_px, shape, slice(first, stop)))
                spread_tiles.append(_block_median(spread, block_px))
                del spread
                continue
            excess = _to_pixels(offset_tiles, block_px, shape, slice(first, stop))
            np.subtract(band, excess, out=excess)  # float64, in place
            spread_tiles.append(_block_median(np.abs(excess), block_px))
            excess[np.isnan(band)] = 0.0
            band[...] = excess
            del excess
        sigma_tiles = _smooth_tiles(MAD_TO_SIGMA * np.concatenate(spread_tiles), neighbourhood)
    for first, stop in bands:
        rows = slice(first, stop)
        if compiled:
            sigma = segmentation_kernels.interpolate(*_interpolation(sigma_tiles, block_px, shape, rows),
                                                     MIN_SIGMA, np.float32)
        else:
            sigma = np.maximum(_to_pixels(sigma_tiles, block_px, shape, rows), MIN_SIGMA)
        # a copy: a view would keep the whole residual alive as long as the caller keeps the band
        yield rows, residual[rows].copy(), sigma.astype(np.float32, copy=False)


def local_excess(image, *, background_px: int = 81, block_px: int = 16,
                 band_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Excess of ``image`` (e.g. mu or eps) over its local background, and the noise sigma.

    Returns two float32 arrays of the image's shape: the excess (0 where the image is not
    finite) and the robust per-pixel noise sigma of that excess (>= MIN_SIGMA).  Computed in
    bands of ``band_rows`` rows (:func:`excess_bands`; the result does not depend on it).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    excess, sigma = np.empty_like(image), np.empty_like(image)
    for rows, band_excess, band_sigma in excess_bands(image.__getitem__, image.shape,
                                                      background_px=background_px,
                                                      block_px=block_px, band_rows=band_rows):
        excess[rows], sigma[rows] = band_excess, band_sigma
    return excess, sigma
