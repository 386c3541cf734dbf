"""Segmentation, tissue normalisation (eq. 2) and cluster analysis on synthetic projections.

The projections are made here: a tissue slab with a soft edge and a drifting dark-field,
clusters of spherical grains whose pixels have mu = ratio * eps, phase-stepped with Poisson
noise and retrieved by the library (85 um pixels: clusters ~2 mm, >= 4 mm apart).
"""

import numpy as np
import pytest
from scipy import special

from reconstruction import (
    analyse_clusters,
    classify_microtexture,
    normalise_to_surroundings,
    retrieve,
    segment_clusters,
)
from reconstruction.normalisation import surrounding_tissue
from reconstruction.segmentation import calcified_mask

SHAPE = (150, 230)
RATIOS = (0.12, 0.28, 0.47, 0.75)  # one per Table 1 class
CENTRES = ((40, 30), (110, 75), (40, 125), (110, 170))  # px; >= 80 px apart, off the edge


def grains(ratio, centre, seed, count=8, spread=8.0, radii=(1.5, 3.5)):
    """mu and eps of one cluster of spherical grains (radius in px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    eps = np.zeros(SHAPE)
    for _ in range(count):
        gy, gx = np.add(centre, rng.uniform(-spread, spread, 2))
        radius = rng.uniform(*radii)
        chord = np.sqrt(np.clip(radius**2 - (yy - gy) ** 2 - (xx - gx) ** 2, 0, None)) / radius
        eps += 0.6 * chord
    return ratio * eps, eps


def slab():
    """A tissue slab: mu 0.4 with a soft (erf, ~4 px) edge at column 212, eps drifting."""
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    inside = 0.5 * (1 - special.erf((xx - 212) / 4.0))
    return 0.4 * inside, (0.05 + 0.1 * yy / SHAPE[0]) * inside


def projection(mu, eps, seed=1, counts=20000.0, steps=9):
    """Retrieved T and V of a noisy phase-stepping scan (visibility 0.2-0.3, Moire phase)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    visibility = 0.3 * (1 - 0.3 * xx / SHAPE[1])
    phase = 0.05 * yy + 0.03 * xx
    t = 2 * np.pi * np.arange(steps)[:, None, None] / steps
    reference = rng.poisson(counts * (1 + visibility * np.cos(t + phase)))
    sample = rng.poisson(counts * np.exp(-mu) * (1 + visibility * np.exp(-eps) * np.cos(t + phase + 0.1)))
    result = retrieve(sample.astype(np.uint16), reference.astype(np.uint16))
    return result.transmission, result.dark_field


@pytest.fixture(scope="module")
def phantom():
    mu, eps = slab()
    for i, (ratio, centre) in enumerate(zip(RATIOS, CENTRES)):
        m, e = grains(ratio, centre, seed=10 + i)
        mu, eps = mu + m, eps + e
    return projection(mu, eps)


def test_segmentation_finds_each_cluster_once_and_nothing_else(phantom):
    labels = segment_clusters(*phantom)
    assert labels.dtype == np.int32
    assert labels.max() == len(CENTRES)
    found = [np.argwhere(labels == k).mean(axis=0) for k in range(1, labels.max() + 1)]
    for centre in CENTRES:  # each true cluster has exactly one label centred on it
        assert sum(np.hypot(*(f - centre)) < 5 for f in found) == 1, (centre, found)
    # no false positives on the slab's edge: at most a stray noise pixel (5 sigma) outside
    assert np.count_nonzero(calcified_mask(*phantom) & (labels == 0)) <= 2


def test_analysis_recovers_each_clusters_ratio_and_class(phantom):
    clusters = analyse_clusters(*phantom)
    assert [c.label for c in clusters] == [1, 2, 3, 4]
    truth = {centre: ratio for centre, ratio in zip(CENTRES, RATIOS)}
    for c in clusters:
        centre = min(CENTRES, key=lambda p: np.hypot(p[0] - c.centroid_px[0], p[1] - c.centroid_px[1]))
        expected = classify_microtexture(*grains(truth[centre], centre, seed=0))  # noise-free truth
        assert c.ratio == pytest.approx(truth[centre], rel=0.05), (centre, c.ratio)
        assert c.texture == expected.texture and c.suspicious == expected.suspicious
        assert c.n_pixels >= 20 and c.mu.shape == c.eps.shape == (c.n_pixels,)
        assert 0.6 < c.Ts < 0.72 and 0.8 < c.Vs < 0.98  # the slab around it: exp(-0.4), exp(-eps)


def test_tissue_pixels_between_grains_do_not_enter_the_ratio(phantom):
    labels = segment_clusters(*phantom)
    calcified = calcified_mask(*phantom)
    for c in analyse_clusters(*phantom, labels):
        inside = labels == c.label
        assert c.n_pixels <= np.count_nonzero(calcified & inside) < np.count_nonzero(inside)


def test_soft_slab_edge_and_drifting_visibility_alone_give_no_cluster():
    assert segment_clusters(*projection(*slab(), seed=4)).max() == 0


def test_a_small_grain_is_dropped_below_min_pixels():
    mu, eps = slab()
    m, e = grains(0.3, (75, 100), seed=3, count=1, radii=(2.0, 2.0))  # ~12 pixels
    transmission, dark_field = projection(mu + m, eps + e, seed=5)
    assert segment_clusters(transmission, dark_field).max() == 0  # < 20 calcified pixels
    assert segment_clusters(transmission, dark_field, min_pixels=3).max() == 1


def test_absolute_thresholds_replace_the_noise_estimate(phantom):
    strict = calcified_mask(*phantom, eps_threshold=5.0, mu_threshold=5.0)
    assert not strict.any()
    assert segment_clusters(*phantom, eps_threshold=5.0, mu_threshold=5.0).max() == 0
    loose = calcified_mask(*phantom, eps_threshold=0.02, mu_threshold=0.02)  # ~1 sigma of eps
    assert loose.sum() > 5 * calcified_mask(*phantom).sum()


def test_normalisation_cancels_the_tissue_background():
    """The same cluster under thin and thick tissue gives the same Tc and Vc (eq. 2)."""
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    tissue_t = np.where(xx < 115, 0.9, 0.45)
    tissue_v = np.where(xx < 115, 0.95, 0.6)
    cluster_t = np.ones(SHAPE)
    cluster_v = np.ones(SHAPE)
    labels = np.zeros(SHAPE, np.int32)
    for label, col in ((1, 55), (2, 170)):
        disc = (yy - 75) ** 2 + (xx - col) ** 2 <= 36
        cluster_t[disc] = 0.8 - 0.01 * np.arange(disc.sum()) / disc.sum()
        cluster_v[disc] = 0.5
        labels[disc] = label
    normalised = normalise_to_surroundings(tissue_t * cluster_t, tissue_v * cluster_v, labels)
    assert sorted(normalised) == [1, 2]
    for label in (1, 2):
        tc, vc = normalised[label]
        np.testing.assert_allclose(tc, cluster_t[labels == label], rtol=1e-12)
        np.testing.assert_allclose(vc, 0.5, rtol=1e-12)
    np.testing.assert_allclose(normalised[1][0], normalised[2][0], rtol=1e-12)


def test_the_ring_ignores_other_clusters_and_nans():
    transmission = np.full(SHAPE, 0.7)
    dark_field = np.full(SHAPE, 0.9)
    labels = np.zeros(SHAPE, np.int32)
    labels[70:80, 70:80] = 1
    labels[70:80, 82:100] = 2  # a strongly absorbing neighbour right next to it
    transmission[labels == 2] = 0.01
    transmission[60:68, 60:90] = np.nan  # a dead band over part of the ring
    (ts, vs), _ = surrounding_tissue(transmission, dark_field, labels).values()
    assert (ts, vs) == (0.7, 0.9)


@pytest.mark.parametrize("call, message", [
    (lambda t, v: segment_clusters(t[None], v[None]), "transmission must be a 2-D image"),
    (lambda t, v: segment_clusters(t, v[:-1]), "dark_field has shape"),
    (lambda t, v: segment_clusters(t, v, eps_threshold=-0.1), "eps_threshold must be a positive"),
    (lambda t, v: segment_clusters(t, v, min_pixels=0), "min_pixels must be a positive integer"),
    (lambda t, v: segment_clusters(t, v, closing=-1), "closing must be a radius"),
    (lambda t, v: normalise_to_surroundings(t, v, np.zeros((3, 3), int)), "labels has shape"),
    (lambda t, v: normalise_to_surroundings(t, v, np.zeros(SHAPE), ring_px=6), "integer label image"),
    (lambda t, v: normalise_to_surroundings(t, v, np.zeros(SHAPE, int), ring_px=0), "ring_px"),
    (lambda t, v: analyse_clusters(t, v[:, :-1]), "dark_field has shape"),
])
def test_bad_input_raises_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.full(SHAPE, 0.8), np.full(SHAPE, 0.9))


def test_median3x3_equals_scipys_median_filter_with_ties_and_thin_images():
    from scipy import ndimage

    from reconstruction.background import median3x3

    rng = np.random.default_rng(4)
    for shape in ((1, 1), (2, 9), (37, 3), (64, 80)):
        image = rng.integers(0, 5, shape).astype(np.float32)  # many ties
        np.testing.assert_array_equal(median3x3(image), ndimage.median_filter(image, 3, mode="nearest"))
