"""Reference interpolation, drift correction and visibility debiasing."""

import numpy as np
import pytest

from reconstruction import SteppingFit, fit_stepping, retrieve
from reconstruction.corrections import correct_drift, debias_amplitude, interpolate_reference

STEPS = np.arange(8) / 8


def stack(a0, visibility, phase, shape=(32, 40)):
    t = 2 * np.pi * STEPS[:, None, None]
    return a0 * (1 + visibility * np.cos(t + phase)) * np.ones((len(STEPS), *shape))


def test_reference_interpolated_in_time():
    early = fit_stepping(stack(1000.0, 0.30, 0.2))
    late = fit_stepping(stack(1200.0, 0.26, 0.4))
    middle = interpolate_reference([early, late], [0.0, 100.0], 25.0)
    assert middle.a0.mean() == pytest.approx(1050.0)
    expected = 0.75 * 300 * np.exp(0.2j) + 0.25 * 312 * np.exp(0.4j)
    assert middle.a1.mean() == pytest.approx(abs(expected), rel=1e-9)
    assert middle.phi.mean() == pytest.approx(np.angle(expected), abs=1e-9)
    assert interpolate_reference([early, late], [0.0, 100.0], 500.0) is late
    with pytest.raises(ValueError, match="must increase"):
        interpolate_reference([early, late], [5.0, 5.0], 1.0)
    with pytest.raises(ValueError, match="2 reference fits but 3 times"):
        interpolate_reference([early, late], [0.0, 1.0, 2.0], 1.0)


def test_global_drift_is_measured_where_there_is_no_object():
    reference = stack(1000.0, 0.3, 0.0)
    # the tube gave 5 % less and the fringes crept by 0.3 rad between reference and sample
    sample = 0.95 * stack(1000.0, 0.3, 0.3)
    sample[:, 10:20, 10:20] = 0.95 * stack(600.0, 0.15, 0.8, shape=(10, 10))  # the object
    free = np.ones((32, 40), bool)
    free[5:25, 5:25] = False
    result, offset, scale = correct_drift(retrieve(sample, reference), free)
    assert offset == pytest.approx(0.3, abs=1e-9) and scale == pytest.approx(0.95)
    assert result.transmission[15, 15] == pytest.approx(0.6)
    assert result.differential_phase[15, 15] == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(result.differential_phase[free], 0, atol=1e-6)
    with pytest.raises(ValueError, match="fewer than 10 valid pixels"):
        correct_drift(result, np.zeros((32, 40), bool))


def test_debiased_visibility_is_nearly_unbiased_and_never_zero():
    """Rice posterior mean: within 2 % at 60 counts a step (amplitude/sigma ~ 3), > 0 always.
    The earlier sqrt(max(a1^2 - 4 var/n, 0)) came out ~4 % low here, with zeros."""
    for a0, tolerance in ((60.0, 0.02), (20.0, 0.1)):  # counts a step
        rng = np.random.default_rng(2)
        visibility = 0.2
        fits = fit_stepping(rng.poisson(stack(a0, visibility, 0.0, shape=(200, 200))).astype(float))
        assert fits.visibility.mean() > 1.04 * visibility  # biased up
        fixed = debias_amplitude(fits, len(STEPS), noise_gain=1.0)
        assert fixed.visibility.mean() == pytest.approx(visibility, rel=tolerance)
        assert fixed.a1.min() > 0
    with pytest.raises(ValueError, match="noise_gain > 0"):
        debias_amplitude(fits, 8, 0.0)
    assert isinstance(fixed, SteppingFit)
