"""Classification of a large image in bands of rows: bit-identical to the whole image, in
bounded memory (issue 16: a stitched 16-tile mosaic is 5683 x 7104 pixels).

The image is an engine projection (breast45 with four clusters, 700 x 900 pixels of the
panel, 5 phase steps) retrieved by the library; bands of 160 and 250 rows cut it into
3-5 bands with halos.
"""

import tracemalloc

import numpy as np
import pytest

from reconstruction import analyse_clusters, retrieve, segmentation_kernels
from reconstruction.background import (
    _finite_count_and_median,
    local_excess,
    negative_log,
    row_bands,
)
from reconstruction.segmentation import (
    calcified_mask,
    check_images,
    label_clusters,
    merge_grains,
)
from simulators.physics import Detector, Setup, TubeState, simulate_frame, specimen

SHAPE = (700, 900)


@pytest.fixture(scope="module")
def engine_image():
    """float32 T and V of an engine projection (700 x 900 px, 85 um at the sample)."""
    setup = Setup(detector=Detector(region=(400, 500, *SHAPE)))
    phantom = specimen("breast45", clusters=4, spacing_mm=20.0)
    g2_um = np.arange(5) * setup.gratings.g2_period_um / 5
    common = {"stage_mm": (0.0, 0.0), "exposure_s": 1.0}
    sample = np.stack([simulate_frame(setup, phantom, g2_um=g, tube=TubeState(), seed=10 + i, **common)
                       for i, g in enumerate(g2_um)])
    reference = np.stack([simulate_frame(setup, None, g2_um=g, tube=TubeState(), seed=20 + i, **common)
                          for i, g in enumerate(g2_um)])
    dark = simulate_frame(setup, None, g2_um=0.0, tube=TubeState(shutter_open=False), seed=3, **common)
    result = retrieve(sample, reference, dark)
    return result.transmission, result.dark_field


@pytest.fixture(scope="module")
def holed_image(engine_image):
    """The engine image with NaN and zero pixels (a stitch's gaps, dead pixels): the
    background fills them with the median of the whole image."""
    transmission, dark_field = (image.copy() for image in engine_image)
    rng = np.random.default_rng(4)
    transmission[rng.random(SHAPE) < 2e-3] = np.nan
    dark_field[rng.random(SHAPE) < 2e-3] = 0.0
    transmission[:40, :60] = np.nan
    return transmission, dark_field


@pytest.mark.slow
@pytest.mark.parametrize("which", ["engine_image", "holed_image"])
def test_bands_give_the_whole_images_mask_labels_and_excess(which, request):
    transmission, dark_field = request.getfixturevalue(which)
    whole = calcified_mask(transmission, dark_field, band_rows=SHAPE[0])
    labels = label_clusters(whole, band_rows=SHAPE[0])
    assert labels.max() >= 4 and whole.sum() > 500  # the four clusters (and breast texture)
    mu = negative_log(transmission)
    excess, sigma = local_excess(mu, band_rows=SHAPE[0])
    for band_rows in (160, 250):
        np.testing.assert_array_equal(calcified_mask(transmission, dark_field, band_rows=band_rows), whole)
        banded = label_clusters(whole, band_rows=band_rows)
        assert banded.dtype == labels.dtype == np.int32
        np.testing.assert_array_equal(banded, labels)
        band_excess, band_sigma = local_excess(mu, band_rows=band_rows)
        assert band_excess.tobytes() == excess.tobytes() and band_sigma.tobytes() == sigma.tobytes()
        for radius in (3, 12, 40.5):  # a halo of twice the radius, up to a third of a band
            np.testing.assert_array_equal(merge_grains(whole, radius, band_rows=band_rows),
                                          merge_grains(whole, radius, band_rows=SHAPE[0]))


@pytest.mark.slow
def test_float32_images_classify_as_their_float64_values(holed_image):
    as32 = holed_image
    as64 = tuple(image.astype(np.float64) for image in as32)
    assert all(np.shares_memory(a, b) for a, b in zip(check_images(*as32, dtype=None), as32))  # no copy
    mask = calcified_mask(*as32, band_rows=160)
    np.testing.assert_array_equal(mask, calcified_mask(*as64, band_rows=SHAPE[0]))
    labels = label_clusters(mask)
    found32 = analyse_clusters(*as32, labels, mask=mask)
    found64 = analyse_clusters(*as64, labels, mask=mask)
    assert len(found32) == len(found64) >= 4
    for a, b in zip(found32, found64):
        assert (a.label, a.centroid_px, a.n_pixels, a.ratio, a.Ts, a.Vs, a.texture) == \
            (b.label, b.centroid_px, b.n_pixels, b.ratio, b.Ts, b.Vs, b.texture)


def test_the_fill_value_is_numpys_median_of_the_finite_pixels():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 400, 401):
        for scale in (1e-3, 1.0, 1e5):
            values = (scale * rng.standard_normal(n)).astype(np.float32)
            values[::3] = np.round(values[::3])  # ties and zeros of both signs
            values[::7] = -0.0
            image = np.concatenate([values, [np.nan, np.inf, -np.inf]]).astype(np.float32)
            image = np.pad(image, (0, -image.size % 9), constant_values=np.nan).reshape(-1, 9)
            total, finite, fill = _finite_count_and_median(image.__getitem__, row_bands(image.shape[0], 9, 5))
            expected = np.median(image[np.isfinite(image)])
            assert (total, finite) == (image.size, n)
            assert fill == expected and fill.dtype == np.float32, (n, scale)


def _peak_bytes(function, *args, **kwargs) -> int:
    tracemalloc.start()
    try:
        function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_the_banded_classification_peak_is_a_fraction_of_the_whole_images(engine_image, monkeypatch):
    transmission, dark_field = (np.tile(image, (2, 2)) for image in engine_image)  # 1400 x 1800
    pixels = transmission.size
    band = (128 + 2 * 83) * transmission.shape[1]  # a band and its halos (background_px 81)
    mask = calcified_mask(transmission, dark_field)
    if segmentation_kernels.enabled():  # compiled filters (their few-row buffers untraced) and closing
        banded = _peak_bytes(calcified_mask, transmission, dark_field, band_rows=128)
        assert banded < 5 * pixels + 40 * band, banded / pixels
        compiled = _peak_bytes(label_clusters, mask)
        assert compiled < 5 * pixels + 40 * band, compiled / pixels
    monkeypatch.setenv("TALBOT_LAU_KERNEL", "numpy")  # scipy's filters, the distance-transform closing
    whole = _peak_bytes(calcified_mask, transmission, dark_field, band_rows=transmission.shape[0])
    banded = _peak_bytes(calcified_mask, transmission, dark_field, band_rows=128)
    label_whole = _peak_bytes(label_clusters, mask, band_rows=transmission.shape[0])
    label_banded = _peak_bytes(label_clusters, mask, band_rows=128)
    # kept: the mask (1 byte/px) and one float32 residual (4 bytes/px), plus one band's filters
    assert banded < 5 * pixels + 40 * band < whole / 3, (banded / pixels, whole / pixels)
    # kept: the int32 labels and the closed mask (5 bytes/px), plus one band's distance maps
    assert label_banded < 5 * pixels + 40 * band < label_whole / 2, (label_banded / pixels, label_whole / pixels)


@pytest.mark.parametrize("band_rows", [0, -16, 2.5, float("nan"), "many", True])
def test_a_bad_band_size_names_band_rows(band_rows):
    images = (np.full(SHAPE, 0.9, np.float32), np.full(SHAPE, 0.8, np.float32))  # any T, V will do
    with pytest.raises(ValueError, match="band_rows"):
        calcified_mask(*images, band_rows=band_rows)
    with pytest.raises(ValueError, match="band_rows"):
        label_clusters(np.zeros(SHAPE, bool) | (np.arange(SHAPE[1]) == 5), band_rows=band_rows)
