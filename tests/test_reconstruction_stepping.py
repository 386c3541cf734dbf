"""Phase-stepping retrieval: exact on noise-free data, the right noise, clear errors."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from reconstruction import Retrieval, SteppingFit, fit_stepping, retrieve
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
