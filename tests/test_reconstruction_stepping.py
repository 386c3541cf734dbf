"""Phase-stepping retrieval: exact on noise-free data, the right noise, clear errors."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from reconstruction import Retrieval, SteppingFit, fit_stepping, retrieve
from reconstruction.corrections import debias_amplitude
from reconstruction.noise import rice_amplitude
from reconstruction.stepping import wrap_phase

SHAPE = (24, 32)
PERIOD_UM = 4.8  # G2 period


def truth(seed=0):
    """Reference and sample curve parameters per pixel (ADU, rad)."""
    rng = np.random.default_rng(seed)
    a0r = rng.uniform(3000, 9000, SHAPE)
    vr = rng.uniform(0.2, 0.4, SHAPE)
    phir = rng.uniform(-np.pi, np.pi, SHAPE)
    t = rng.uniform(0.3, 0.95, SHAPE)
    v = rng.uniform(0.4, 1.0, SHAPE)
    dphi = rng.uniform(-2.5, 2.5, SHAPE)
    return a0r, vr, phir, t, v, dphi


def stack(a0, vis, phi, steps_um, dark=0.0):
    x = np.asarray(steps_um)[:, None, None]
    return dark + a0 * (1 + vis * np.cos(2 * np.pi * x / PERIOD_UM + phi))


def wrapped_difference(a, b):
    return np.angle(np.exp(1j * (a - b)))


def check_exact(result: Retrieval, t, v, dphi):
    np.testing.assert_allclose(result.transmission, t, rtol=1e-10)
    np.testing.assert_allclose(result.dark_field, v, rtol=1e-9)
    np.testing.assert_allclose(wrapped_difference(result.differential_phase, dphi), 0, atol=1e-9)
    np.testing.assert_allclose(result.absorption, -np.log(t), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.scattering, -np.log(v), rtol=1e-8, atol=1e-10)


def test_fit_recovers_the_curve_from_equidistant_steps_in_periods():
    a0r, vr, phir, *_ = truth()
    raw = stack(a0r, vr, phir, np.arange(9) * PERIOD_UM / 9)
    fit = fit_stepping(raw)  # steps default to k/n of a period of 1
    np.testing.assert_allclose(fit.a0, a0r, rtol=1e-12)
    np.testing.assert_allclose(fit.a1, a0r * vr, rtol=1e-10)
    np.testing.assert_allclose(fit.visibility, vr, rtol=1e-10)
    np.testing.assert_allclose(wrapped_difference(fit.phi, phir), 0, atol=1e-10)
    assert np.all((fit.phi > -np.pi) & (fit.phi <= np.pi))


def test_retrieval_is_exact_with_different_non_equidistant_steps_and_a_dark_stack():
    a0r, vr, phir, t, v, dphi = truth(1)
    rng = np.random.default_rng(2)
    ref_steps = np.sort(rng.uniform(0, PERIOD_UM, 7))
    smp_steps = np.arange(9) * PERIOD_UM / 9 + rng.normal(0, 0.08, 9)
    dark_frames = rng.uniform(90, 110, (3, *SHAPE))
    dark = dark_frames.mean(axis=0)
    reference = stack(a0r, vr, phir, ref_steps, dark)
    sample = stack(a0r * t, vr * v, phir + dphi, smp_steps, dark)
    result = retrieve(sample, reference, dark_frames, steps=smp_steps, reference_steps=ref_steps,
                      period=PERIOD_UM)
    check_exact(result, t, v, dphi)
    np.testing.assert_allclose(result.reference_fit.a0, a0r, rtol=1e-10)  # dark removed


def test_reference_as_a_fit_and_dark_as_an_image_give_the_same_result():
    a0r, vr, phir, t, v, dphi = truth(3)
    steps = np.linspace(0.1, PERIOD_UM * 0.9, 5)
    dark = np.full(SHAPE, 250.0)
    reference_fit = SteppingFit(a0=a0r, a1=a0r * vr, phi=phir)
    sample = stack(a0r * t, vr * v, phir + dphi, steps, dark).astype(np.float32)
    result = retrieve(sample, reference_fit, dark, steps=steps, period=PERIOD_UM)
    np.testing.assert_allclose(result.transmission, t, rtol=1e-6)  # float32 input
    np.testing.assert_allclose(result.dark_field, v, rtol=1e-5)
    np.testing.assert_allclose(wrapped_difference(result.differential_phase, dphi), 0, atol=1e-5)
    assert result.reference_fit is reference_fit


def test_integer_frames_from_an_hdf5_file(tmp_path):
    a0r, vr, phir, t, v, dphi = truth(4)
    steps = np.arange(9) * PERIOD_UM / 9
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["ref/entry/data/data"] = np.round(stack(a0r, vr, phir, steps, 100)).astype(np.uint16)
        f["smp/entry/data/data"] = np.round(stack(a0r * t, vr * v, phir + dphi, steps, 100)).astype(np.uint16)
        f["dark/entry/data/data"] = np.full((2, *SHAPE), 100, np.uint16)
    with h5py.File(path, "r") as f:
        result = retrieve(f["smp/entry/data/data"][()], f["ref/entry/data/data"][()],
                          f["dark/entry/data/data"][()], steps=steps, period=PERIOD_UM)
    np.testing.assert_allclose(result.transmission, t, rtol=2e-3)  # ADU rounding only
    np.testing.assert_allclose(result.dark_field, v, rtol=1e-2)


@pytest.mark.parametrize("shift", [np.pi - 1e-3, -np.pi + 1e-3, np.pi, 3.0, -3.1])
def test_differential_phase_wraps_into_minus_pi_to_pi(shift):
    a0r, vr, phir, *_ = truth(5)
    steps = np.arange(6) / 6
    reference = stack(a0r, vr, phir, steps * PERIOD_UM)
    sample = stack(a0r, vr, phir + shift, steps * PERIOD_UM)
    dphi = retrieve(sample, reference).differential_phase
    assert np.all((dphi > -np.pi) & (dphi <= np.pi))
    np.testing.assert_allclose(wrapped_difference(dphi, shift), 0, atol=1e-9)
    if abs(shift) < np.pi - 1e-6:
        np.testing.assert_allclose(dphi, shift, atol=1e-9)  # no jump by 2 pi inside the range


def test_wrap_phase_maps_minus_pi_to_plus_pi():
    np.testing.assert_allclose(wrap_phase([-np.pi, np.pi, 3 * np.pi, -3 * np.pi, 0.5 + 4 * np.pi]),
                               [np.pi, np.pi, np.pi, np.pi, 0.5], atol=1e-12)


def test_phase_noise_follows_sqrt_2_over_v2_n():
    """Poisson noise: sigma(dphi) = sqrt(2/(V^2 N)) with N photons over all steps, and
    sigma(T) = 1/sqrt(N), for a noise-free reference."""
    rng = np.random.default_rng(7)
    shape, n, a0, vis = (128, 128), 9, 2000.0, 0.3
    phi = rng.uniform(-np.pi, np.pi, shape)
    steps = np.arange(n) / n
    sample = rng.poisson(a0 * (1 + vis * np.cos(2 * np.pi * steps[:, None, None] + phi)))
    reference = SteppingFit(a0=np.full(shape, a0), a1=np.full(shape, a0 * vis), phi=phi)
    result = retrieve(sample, reference)
    photons = n * a0
    assert np.std(result.differential_phase) == pytest.approx(np.sqrt(2 / (vis**2 * photons)), rel=0.1)
    assert np.std(result.transmission) == pytest.approx(1 / np.sqrt(photons), rel=0.1)
    assert abs(np.mean(result.differential_phase)) < 1e-3


def test_dead_pixels_give_nan_not_warnings():
    a0r, vr, phir, t, v, dphi = truth(6)
    steps = np.arange(5) / 5
    reference = stack(a0r, vr, phir, steps * PERIOD_UM)
    sample = stack(a0r * t, vr * v, phir + dphi, steps * PERIOD_UM)
    reference[:, 0, 0] = 0.0  # dead in the reference
    sample[:, 1, 1] = 0.0  # no photons behind the sample
    with np.errstate(all="raise"):
        result = retrieve(sample, reference)
        fit = result.reference_fit
        no_fringes = SteppingFit(a0=fit.a0, a1=np.where(np.eye(*SHAPE) > 0, 0.0, fit.a1), phi=fit.phi)
        without_fringes = retrieve(sample, no_fringes)
    assert np.isnan(result.transmission[0, 0]) and np.isnan(result.absorption[0, 0])
    assert np.isnan(result.absorption[1, 1]) and np.isnan(result.scattering[1, 1])
    assert np.isfinite(result.scattering[2:, 2:]).all()
    assert np.isnan(without_fringes.dark_field[5, 5]) and np.isnan(without_fringes.scattering[5, 5])


def good_pair(n=5):
    a0r, vr, phir, t, v, dphi = truth(8)
    steps = np.arange(n) / n
    return stack(a0r * t, vr * v, phir + dphi, steps), stack(a0r, vr, phir, steps)


@pytest.mark.parametrize("change, message", [
    (lambda s, r: (s[0], r, {}), "sample must be a raw stack"),
    (lambda s, r: (s, r[:, :-1], {}), "reference frames are"),
    (lambda s, r: (s, r[0], {}), "reference must be a raw stack"),
    (lambda s, r: (s, r, {"dark": np.zeros((3, 3))}), "dark frames are"),
    (lambda s, r: (s, r, {"dark": np.zeros((1, 1, *SHAPE))}), "dark must be None"),
    (lambda s, r: (s[:2], r, {}), "sample has 2 phase steps"),
    (lambda s, r: (s, r[:2], {"reference_steps": [0, 0.5]}), "reference has 2 phase steps"),
    (lambda s, r: (s, r, {"steps": [0, 0.2, 0.4, 0.6]}), "steps has 4 positions"),
    (lambda s, r: (s, r, {"reference_steps": np.arange(6) / 6}), "reference_steps has 6 positions"),
    (lambda s, r: (s, r, {"steps": [0, 0.01, 0.02, 0.03, 0.04]}), "do not span the period"),
    (lambda s, r: (s, r, {"steps": [0, 1, 2, 3, 4]}), "do not span the period"),
    (lambda s, r: (s, r, {"period": 0.0}), "period must be a positive number"),
    (lambda s, r: (s, r, {"period": -4.8}), "period must be a positive number"),
    (lambda s, r: (s, np.zeros_like(r), {}), "reference has no pixel with a positive"),
    (lambda s, r: (s, np.full_like(r, np.nan), {}), "reference has no pixel with a positive"),
])
def test_bad_input_raises_one_clear_error(change, message):
    sample, reference, kwargs = change(*good_pair())
    dark = kwargs.pop("dark", None)
    with pytest.raises(ValueError, match=message):
        retrieve(sample, reference, dark, **kwargs)


def test_fit_stepping_rejects_a_single_image():
    with pytest.raises(ValueError, match="stack must have shape"):
        fit_stepping(np.ones(SHAPE))


def test_the_library_imports_nothing_of_ours():
    code = ("import sys, reconstruction; "
            "bad = [m for m in ('acquisition', 'devices', 'simulators', 'bluesky', 'ophyd') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_saturated_pixels_are_nan_in_every_output():
    rng = np.random.default_rng(4)
    steps = np.arange(5) / 5
    base = 30000 + 8000 * np.cos(2 * np.pi * steps)[:, None, None] * np.ones((5, 6, 7))
    sample = np.rint(base * 0.8 + rng.normal(0, 5, base.shape)).astype(np.uint16)
    reference = np.rint(base).astype(np.uint16)
    sample[:, 2, 3] = 65535  # a hot pixel
    reference[1, 4, 4] = 65535  # one overexposed step
    result = retrieve(sample, reference)
    for image in (result.transmission, result.dark_field, result.differential_phase,
                  result.absorption, result.scattering):
        assert np.isnan(image[2, 3]) and np.isnan(image[4, 4])
        assert np.isfinite(np.delete(image.ravel(), [2 * 7 + 3, 4 * 7 + 4])).all()
    # float stacks are not checked unless a saturation level is given
    floats = retrieve(sample.astype(float), reference.astype(float))
    assert np.isfinite(floats.transmission[2, 3])
    assert np.isnan(retrieve(sample.astype(float), reference.astype(float), saturation=65535).transmission[2, 3])


# --- issue 14, part 7: dead pixels at the dark level, the low-count bias of the dark-field ---

def poisson_scan(rng, counts, visibility, phase, n=9, dark=100):
    """A photon-counting scan (noise gain 1) on a dark offset, as uint16 frames."""
    t = 2 * np.pi * np.arange(n)[:, None, None] / n
    return (rng.poisson(counts * (1 + visibility * np.cos(t + phase))) + dark).astype(np.uint16)


def test_dead_pixels_at_the_dark_level_are_nan_in_every_output():
    """A dead pixel reads the dark level in every frame (as the twin's defect map does):
    after dark subtraction float32 round-off leaves a0 ~ 1e-5 > 0, which read T = V = 1."""
    rng = np.random.default_rng(14)
    shape, n, dark_level = (48, 64), 9, 118
    phase = rng.uniform(-np.pi, np.pi, shape)
    reference = poisson_scan(rng, 20000, 0.25, phase, n, dark_level)
    sample = poisson_scan(rng, 15000, 0.2, phase + 0.4, n, dark_level)
    darks = np.rint(dark_level + rng.normal(0, 3, (4, *shape))).astype(np.uint16)
    both, only_sample, only_reference = (3, 5), (10, 20), (30, 40)
    for y, x in (both, only_sample, only_reference):
        darks[:, y, x] = dark_level
    for stack_, pixels in ((sample, (both, only_sample)), (reference, (both, only_reference))):
        for y, x in pixels:
            stack_[:, y, x] = dark_level
    result = retrieve(sample, reference, darks)
    dead = np.zeros(shape, bool)
    for y, x in (both, only_sample, only_reference):
        dead[y, x] = True
    for name in ("transmission", "dark_field", "differential_phase", "absorption", "scattering"):
        image = getattr(result, name)
        assert np.isnan(image[dead]).all(), name
        assert np.isfinite(image[~dead]).all(), name
    # the same with the noise model on, and with the reference given as a fit
    debiased = retrieve(sample, result.reference_fit, darks, noise_gain=1.0)
    assert np.isnan(debiased.dark_field[dead]).all() and np.isfinite(debiased.dark_field[~dead]).all()


TRUE_V, REFERENCE_V = 0.25, 0.25


@pytest.mark.parametrize("counts", [400, 1000, 3000, 20000])
def test_debiased_dark_field_is_unbiased_and_positive_from_400_to_20000_counts(counts):
    """Monte Carlo, 9 steps, Poisson (noise gain 1), noisy reference with the same counts:
    the mean of V is within +-0.01 of the noise-free value, and no valid pixel has V <= 0 or
    a non-finite eps.  At 400 counts a step the plain amplitude is 0.02 high, and the
    earlier sqrt(max(a1^2 - 4 var/n, 0)) was 0.02 low with some V = 0 (eps infinite)."""
    rng = np.random.default_rng(counts)
    shape = (64, 64)
    phase = rng.uniform(-np.pi, np.pi, shape)
    reference = poisson_scan(rng, counts, REFERENCE_V, phase)
    sample = poisson_scan(rng, counts, REFERENCE_V * TRUE_V, phase + 0.3)
    darks = np.full((2, *shape), 100, np.uint16)

    result = retrieve(sample, reference, darks, noise_gain=1.0)
    assert abs(np.mean(result.dark_field) - TRUE_V) <= 0.01
    assert np.all(result.dark_field > 0) and np.all(np.isfinite(result.scattering))

    # the same estimator on separate fits (reconstruction.corrections.debias_amplitude)
    fits = [debias_amplitude(fit_stepping(stack_.astype(np.float64) - 100), 9, noise_gain=1.0)
            for stack_ in (sample, reference)]
    dark_field = fits[0].visibility / fits[1].visibility
    assert abs(np.mean(dark_field) - TRUE_V) <= 0.01
    assert np.all(dark_field > 0) and np.all(np.isfinite(-np.log(dark_field)))
    if counts == 400:  # without the correction the bias is twice the tolerance
        assert np.mean(retrieve(sample, reference, darks).dark_field) - TRUE_V > 0.015


def test_rice_amplitude_is_positive_smooth_and_exact_without_noise():
    amplitude = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 100.0])
    estimate = rice_amplitude(amplitude, 1.0)
    assert estimate[0] == pytest.approx(np.sqrt(2 / np.pi))  # never zero
    assert np.all(np.diff(estimate) > 0) and np.all(estimate > 0)
    assert estimate[-1] == pytest.approx(100 - 1 / 200, rel=1e-6)  # M - sigma^2/(2M)
    np.testing.assert_array_equal(rice_amplitude(amplitude, 0.0), amplitude)  # no noise
    assert rice_amplitude(np.float32([3.0]), np.float32(1.0)).dtype == np.float32
    assert np.isnan(rice_amplitude(np.array([np.nan, 1.0]), 1.0)[0])
    # Monte Carlo: relative bias below 1 % from amplitude/sigma = 2.5 on
    rng = np.random.default_rng(0)
    for snr in (2.5, 3.0, 5.0, 10.0):
        noisy = np.hypot(snr + rng.standard_normal(400_000), rng.standard_normal(400_000))
        assert np.mean(rice_amplitude(noisy, 1.0)) == pytest.approx(snr, rel=0.01)


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_gain": 0.0}, "noise_gain must be a positive number"),
    ({"noise_gain": -1.0}, "noise_gain must be a positive number"),
    ({"noise_gain": 1.0, "read_noise": -3.0}, "read_noise must be a number >= 0"),
    ({"noise_gain": "a"}, "noise_gain and read_noise must be numbers"),
])
def test_bad_noise_model_raises_one_clear_error(kwargs, message):
    sample, reference = good_pair()
    with pytest.raises(ValueError, match=message):
        retrieve(sample, reference, **kwargs)
