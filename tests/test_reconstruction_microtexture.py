"""Microtexture classification: Table 1 of Scherer et al. 2016, the 0.33 cut-off, errors."""

import numpy as np
import pytest

from reconstruction import SUSPICIOUS_RATIO, TEXTURES, classify_microtexture


def cluster(ratio, n=40, seed=0):
    """Pixels with mu = ratio * eps exactly, eps spread like a real cluster's."""
    eps = np.random.default_rng(seed).uniform(0.02, 0.6, n)
    return ratio * eps, eps


@pytest.mark.parametrize("ratio, texture, borderline, suspicious", [
    (0.05, "ultra-fine", False, False),
    (0.17, "ultra-fine", False, False),
    (0.19, "ultra-fine", True, False),
    (0.21, "fine", True, False),
    (0.22, "fine", False, False),
    (0.33, "fine", False, False),
    (0.34, "fine", True, True),
    (0.38, "pleomorphic", True, True),
    (0.40, "pleomorphic", False, True),
    (0.55, "pleomorphic", False, True),
    (0.57, "pleomorphic", True, True),
    (0.59, "coarse", True, True),
    (0.60, "coarse", False, True),
    (1.50, "coarse", False, True),
])
def test_table_1_classes_gaps_and_cut_off(ratio, texture, borderline, suspicious):
    result = classify_microtexture(*cluster(ratio))
    assert result.ratio == pytest.approx(ratio, abs=1e-12)
    assert (result.texture, result.borderline, result.suspicious) == (texture, borderline, suspicious)


def test_constants_are_the_papers():
    assert TEXTURES == ("ultra-fine", "fine", "pleomorphic", "coarse")
    assert SUSPICIOUS_RATIO == 0.33


def test_ratio_is_the_least_squares_slope_through_the_origin_and_variance_the_spread():
    eps = np.array([0.1, 0.2, 0.4, 0.8])
    mu = np.array([0.02, 0.08, 0.12, 0.2])
    result = classify_microtexture(mu, eps)
    assert result.ratio == pytest.approx(np.sum(mu * eps) / np.sum(eps**2))
    assert result.variance == pytest.approx(np.sum(eps**2 * (mu / eps - result.ratio) ** 2) / np.sum(eps**2))
    assert result.n_pixels == 4
    # a large pixel weighs more in the slope than in the mean of mu/eps
    assert result.ratio < np.mean(mu / eps)


def test_nans_are_dropped_and_any_shape_is_accepted():
    mu, eps = cluster(0.45, n=30)
    mu[3], eps[7] = np.nan, np.inf
    result = classify_microtexture(mu.reshape(5, 6), eps.reshape(5, 6))
    assert result.n_pixels == 28 and result.mu.shape == (28,) and result.eps.shape == (28,)
    assert result.ratio == pytest.approx(0.45) and result.texture == "pleomorphic"
    assert result.variance == pytest.approx(0.0, abs=1e-20)


def test_noise_scatters_the_pixels_but_keeps_the_mean_ratio():
    rng = np.random.default_rng(3)
    eps = rng.uniform(0.1, 0.5, 400)
    mu = 0.27 * eps + rng.normal(0, 0.01, eps.size)
    result = classify_microtexture(mu, eps)
    assert result.ratio == pytest.approx(0.27, abs=0.01)
    assert result.texture == "fine" and not result.suspicious
    # the weighted spread is the noise of mu/eps at the typical eps
    assert result.variance == pytest.approx(0.01**2 / np.mean(eps**2), rel=0.2)


@pytest.mark.parametrize("mu, eps, message", [
    ([0.1, 0.2], [0.3, 0.4], "at least 3 valid"),
    ([0.1, np.nan, 0.2, 0.3], [0.3, 0.4, np.nan, 0.5], "at least 3 valid"),
    ([0.1, 0.2, 0.3], [0.0, -0.1, -0.2], "does not scatter"),
    ([0.1, 0.2, 0.3], [0.1, 0.2], "must pair up"),
])
def test_unclassifiable_input_raises(mu, eps, message):
    with pytest.raises(ValueError, match=message):
        classify_microtexture(mu, eps)
