"""The fast classification paths give the same numbers as the slower ones, bit for bit.

- ``excess_bands`` reads each image once and turns its residual into the excess in place,
  with compiled filters (or numpy's, ``TALBOT_LAU_KERNEL=numpy``): compared with the
  implementation it replaced (kept below as ``reference_excess_bands``, which read the
  image six times a band and used scipy's grey opening and median filter and np.median);
- the compiled closing (``reconstruction.segmentation_kernels.close_disc``) against the
  distance-transform closing (``TALBOT_LAU_KERNEL=numpy``), and the whole classification
  (mask, labels, every cluster's ratio and class) on an engine projection with clusters;
- the compiled 3 x 3 median and grey opening against scipy's, and the faster numpy block
  and tile medians against np.median and ``ndimage.median_filter``.
"""

import dataclasses
import warnings

import numpy as np
import pytest
from scipy import ndimage

from reconstruction import retrieve, segmentation_kernels
from reconstruction.background import (
    MAD_TO_SIGMA,
    MIN_SIGMA,
    _block_median,
    _finite_count_and_median,
    _float32_key,
    _linear_weights,
    _smooth_tiles,
    _to_pixels,
    excess_bands,
    local_excess,
    median3x3,
    negative_log,
    row_bands,
    tissue_base,
)
from reconstruction.clusters import analyse_clusters
from reconstruction.segmentation import calcified_mask, label_clusters, merge_grains
from simulators.physics import Detector, Setup, TubeState, simulate_frame, specimen

pytestmark = pytest.mark.slow  # the module's engine_image fixture simulates six 320 x 480 frames (~1.6 s)

SHAPE = (320, 480)
needs_numba = pytest.mark.skipif(not segmentation_kernels.enabled(), reason="numba not importable")


def reference_smooth_tiles(tiles, neighbourhood):
    """``_smooth_tiles`` as it was: scipy's median filter over the tiles."""
    finite = np.isfinite(tiles)
    if not finite.any():
        return np.zeros_like(tiles)
    if not finite.all():
        index = ndimage.distance_transform_edt(~finite, return_distances=False, return_indices=True)
        tiles = tiles[tuple(index)]
    return ndimage.median_filter(tiles, size=neighbourhood, mode="nearest")


def reference_excess_bands(read, shape, *, background_px=81, block_px=16, band_rows=None):
    """``excess_bands`` as it was before it read each image once (commit ca45453), with the
    block and tile medians of then (np.median, scipy's median filter)."""
    ny, nx = shape
    bands = row_bands(ny, nx, band_rows, block_px)
    _, _, fill = _finite_count_and_median(read, bands)  # (the images here have finite pixels)
    halo = background_px + 2
    residual = np.empty(shape, np.float32)
    for first, stop in bands:
        top, bottom = max(first - halo, 0), min(stop + halo, ny)
        image = read(slice(top, bottom))
        finite = np.isfinite(image)
        filled = image if fill is None else np.where(finite, image, fill).astype(np.float32)
        base = ndimage.grey_opening(median3x3(filled), size=(background_px, background_px), mode="nearest")
        core = slice(first - top, stop - top)
        residual[first:stop] = np.where(finite[core], filled[core] - base[core], np.float32(np.nan))
    neighbourhood = max(3, 2 * (background_px // (2 * block_px)) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        offset_tiles = reference_smooth_tiles(np.concatenate(
            [reference_block_median(residual[first:stop], block_px) for first, stop in bands]), neighbourhood)
        spread_tiles = [reference_block_median(np.abs(residual[first:stop] - _to_pixels(
            offset_tiles, block_px, shape, slice(first, stop))), block_px) for first, stop in bands]
        sigma_tiles = reference_smooth_tiles(MAD_TO_SIGMA * np.concatenate(spread_tiles), neighbourhood)
    for first, stop in bands:
        rows = slice(first, stop)
        band = residual[rows]
        sigma = np.maximum(_to_pixels(sigma_tiles, block_px, shape, rows), MIN_SIGMA)
        yield (rows, np.where(np.isnan(band), 0.0, band - _to_pixels(offset_tiles, block_px, shape, rows)
                              ).astype(np.float32, copy=False), sigma.astype(np.float32, copy=False))


def reference_block_median(values, block_px=16):
    """The block median, as it was: np.median of each tile, np.nanmedian where one has NaN."""
    ny, nx = values.shape
    by, bx = -(-ny // block_px), -(-nx // block_px)
    padded = np.full((by * block_px, bx * block_px), np.nan, values.dtype)
    padded[:ny, :nx] = values
    tiles = padded.reshape(by, block_px, bx, block_px).transpose(0, 2, 1, 3).reshape(by, bx, -1)
    holed = np.isnan(tiles).any(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = np.median(tiles, axis=-1)
        result[holed] = np.nanmedian(tiles[holed], axis=-1)
    return result


def bits(array):
    return np.ascontiguousarray(array).view(np.uint8)


@pytest.fixture(scope="module")
def engine_image():
    """float32 T and V of an engine projection with four clusters (320 x 480 px, 3 steps), with
    NaN pixels (saturated or dead) so the fill value of the background is exercised."""
    setup = Setup(detector=Detector(region=(608, 720, *SHAPE)))
    phantom = specimen("breast45", clusters=4, spacing_mm=8.0)
    g2_um = np.arange(3) * setup.gratings.g2_period_um / 3
    common = {"stage_mm": (0.0, 0.0), "exposure_s": 1.0}
    sample = np.stack([simulate_frame(setup, phantom, g2_um=g, tube=TubeState(), seed=10 + i, **common)
                       for i, g in enumerate(g2_um)])
    reference = np.stack([simulate_frame(setup, None, g2_um=g, tube=TubeState(), seed=20 + i, **common)
                          for i, g in enumerate(g2_um)])
    result = retrieve(sample, reference)
    transmission, dark_field = result.transmission.copy(), result.dark_field.copy()
    transmission[np.random.default_rng(4).random(SHAPE) < 1e-3] = np.nan
    return transmission, dark_field


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("band_rows", [None, 48, 160])  # 48 rows: the halo spans two bands
def test_excess_bands_equal_the_implementation_that_read_six_times(engine_image, band_rows, kernel,
                                                                   monkeypatch):
    if kernel == "numba" and not segmentation_kernels.enabled():
        pytest.skip("numba not importable")
    monkeypatch.setenv("TALBOT_LAU_KERNEL", kernel)
    for image in engine_image:
        mu = negative_log(image).astype(np.float32)
        new = list(excess_bands(mu.__getitem__, mu.shape, band_rows=band_rows))
        old = list(reference_excess_bands(mu.__getitem__, mu.shape, band_rows=band_rows))
        assert [rows for rows, *_ in new] == [rows for rows, *_ in old]
        for (_, excess, sigma), (_, old_excess, old_sigma) in zip(new, old):
            assert excess.dtype == old_excess.dtype == np.float32
            assert np.array_equal(bits(excess), bits(old_excess))
            assert np.array_equal(bits(sigma), bits(old_sigma))


def test_local_excess_reads_the_image_once_a_band(engine_image):
    mu = negative_log(engine_image[0]).astype(np.float32)
    calls = []

    def read(rows):
        calls.append(rows)
        return mu[rows]

    list(excess_bands(read, mu.shape, band_rows=160))
    assert len(calls) == len(row_bands(*mu.shape, 160, 16))
    assert np.array_equal(bits(local_excess(mu)[0]), bits(local_excess(mu, band_rows=48)[0]))


@needs_numba
@pytest.mark.parametrize("radius", [12, 3, 4.5, 1])
def test_compiled_closing_equals_the_distance_transform_closing(engine_image, monkeypatch, radius):
    rng = np.random.default_rng(int(radius * 10))
    masks = [calcified_mask(*engine_image), rng.random((90, 130)) < 0.03, rng.random((40, 50)) < 0.4,
             np.ones((20, 30), bool), np.eye(25, 40, 3, dtype=bool)]
    # sparse and denser rows (the kernel's two ways to measure a row), runs at the borders
    masks += [rng.random((60, 300)) < density for density in (0.002, 0.01, 0.05, 0.2)]
    bars = np.zeros((50, 60), bool)
    bars[10:14, :25] = bars[20:23, 40:] = bars[30:40, 29:31] = True
    masks.append(bars)
    fast = [merge_grains(mask, radius) for mask in masks]
    monkeypatch.setenv("TALBOT_LAU_KERNEL", "numpy")
    assert not segmentation_kernels.enabled()
    for mask, closed in zip(masks, fast):
        assert np.array_equal(closed, merge_grains(mask, radius)), mask.shape
        assert (closed >= mask).all()


@needs_numba
def test_classification_is_the_same_on_either_path(engine_image, monkeypatch):
    def classify():
        mask = calcified_mask(*engine_image)
        labels = label_clusters(mask)
        return mask, labels, analyse_clusters(*engine_image, labels, mask=mask)

    mask, labels, clusters = classify()
    monkeypatch.setenv("TALBOT_LAU_KERNEL", "numpy")
    slow_mask, slow_labels, slow_clusters = classify()
    assert labels.max() >= 3 and len(clusters) >= 3  # an image with clusters
    assert np.array_equal(mask, slow_mask) and np.array_equal(labels, slow_labels)
    for cluster, slow in zip(clusters, slow_clusters, strict=True):
        for field in dataclasses.fields(cluster):
            a, b = getattr(cluster, field.name), getattr(slow, field.name)
            assert np.array_equal(a, b), field.name  # bit for bit: ratio, variance, class, pixels


def test_the_helpers_made_faster_in_place_give_the_same_bits(engine_image):
    mu = negative_log(engine_image[0])
    with np.errstate(divide="ignore", invalid="ignore"):  # negative_log as it was
        assert np.array_equal(bits(mu), bits(-np.log(np.where(engine_image[0] > 0, engine_image[0].astype(
            np.float64), np.nan))))
    residual = mu.astype(np.float32)
    residual[:20, :30] = np.nan  # an all-NaN tile and holed ones
    for values in (residual, np.abs(residual.astype(np.float64) - 0.25), residual[:100, :250]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN tile, as in excess_bands
            fast = _block_median(values, 16)
        assert np.array_equal(bits(fast), bits(reference_block_median(values)))
    tiles = np.random.default_rng(2).random((20, 30))
    for rows in (slice(None), slice(37, 211)):
        low, high, w = (a[rows] for a in _linear_weights(SHAPE[0], 16, 20))
        along = tiles[low] * (1 - w)[:, None] + tiles[high] * w[:, None]
        low, high, w = _linear_weights(SHAPE[1], 16, 30)
        assert np.array_equal(bits(_to_pixels(tiles, 16, SHAPE, rows)),
                              bits(along[:, low] * (1 - w) + along[:, high] * w))
    finite = residual[np.isfinite(residual)]
    finite[:4] = [-0.0, 0.0, -1.5, 2.5]
    plain = (finite.astype(np.float32) + np.float32(0)).view(np.uint32)
    assert np.array_equal(_float32_key(finite), np.where(plain >> 31, ~plain, plain | np.uint32(1 << 31)))


@needs_numba
def test_compiled_median_and_opening_equal_scipys_for_any_size_and_shape():
    rng = np.random.default_rng(7)
    for shape in ((1, 1), (2, 9), (37, 3), (70, 130), (150, 90)):  # thinner, wider than the square
        for image in (rng.random(shape).astype(np.float32),  # ties, and zeros of both signs:
                      rng.integers(-2, 3, shape).astype(np.float32) * np.float32(0.5)):
            median = ndimage.median_filter(image, 3, mode="nearest")
            assert np.array_equal(segmentation_kernels.median3x3(image), median)
            for size in (3, 4, 9, 81, 82, 200):  # even sizes: scipy's asymmetric windows
                opened = ndimage.grey_opening(median, size=(size, size), mode="nearest")
                assert np.array_equal(segmentation_kernels.grey_opening(median, size), opened), (shape, size)
                assert np.array_equal(tissue_base(image, size, True), tissue_base(image, size, False))


@needs_numba
def test_compiled_opening_of_an_engine_image_is_scipys_to_the_bit(engine_image):
    mu = negative_log(engine_image[1]).astype(np.float32)
    mu[~np.isfinite(mu)] = np.median(mu[np.isfinite(mu)])
    old = ndimage.grey_opening(median3x3(mu), size=(81, 81), mode="nearest")
    assert np.array_equal(bits(tissue_base(mu, 81, True)), bits(old))


def test_tile_and_block_medians_equal_scipys_and_numpys(engine_image):
    rng = np.random.default_rng(3)
    for tiles in (rng.random((20, 30)), rng.integers(0, 4, (7, 5)).astype(np.float32), rng.random((1, 1))):
        holed = tiles.copy()
        holed[2:4, 1:3] = np.nan  # empty tiles, filled from the nearest
        for values in (tiles, holed):
            for neighbourhood in (3, 5, 9):
                assert np.array_equal(bits(_smooth_tiles(values, neighbourhood)),
                                      bits(reference_smooth_tiles(values, neighbourhood)))
    mu = negative_log(engine_image[0]).astype(np.float32)
    for values in (mu[:100, :16], mu[:37, :50], mu[:16, :480], mu.astype(np.float64)):
        given = values.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert np.array_equal(bits(_block_median(values, 16)), bits(reference_block_median(values)))
        assert np.array_equal(values, given, equal_nan=True)  # the caller's values untouched


@needs_numba
def test_warm_up_loads_every_compiled_kernel():
    segmentation_kernels.warm_up()  # from the numba cache: fast after the first process
    assert set(segmentation_kernels._compiled()) == {"close_disc", "median3x3", "extreme_filter",
                                                     "interpolate", "subtract"}
