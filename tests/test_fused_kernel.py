"""The fused numba kernel and the blocked numpy path give the same retrieval (float32 rounding)."""

import subprocess
import sys

import numpy as np
import pytest

from reconstruction import SteppingFit, fit_stepping, retrieve
from reconstruction.kernels import KERNEL_VARIABLE, fused_module, kernel_choice

pytestmark = pytest.mark.skipif(fused_module() is None, reason="numba is not installed")

FIELDS = ("transmission", "dark_field", "differential_phase", "absorption", "scattering")


def scan(rng, steps, counts, visibility, phase, shape=(40, 56), dark=100.0):
    """A uint16 scan with Poisson noise on a dark offset (ADU); steps in periods."""
    t = 2 * np.pi * np.asarray(steps)[:, None, None]
    mean = counts * (1 + visibility * np.cos(t + phase)) + dark
    return np.clip(rng.poisson(np.broadcast_to(mean, (len(steps),) + shape)), 0, 65535).astype(np.uint16)


def both(monkeypatch, *args, **kwargs):
    """retrieve() on the numba path and on the numpy path."""
    results = []
    for kernel in ("numba", "numpy"):
        monkeypatch.setenv(KERNEL_VARIABLE, kernel)
        results.append(retrieve(*args, **kwargs))
    return results


def assert_same(fused, plain):
    """Same NaN pattern; values equal to a few float32 ulp of the image's scale; dphi to the
    round-off of (c, s) ~ eps * a0 / a1 (large where a pixel has almost no fringes)."""
    pairs = [(getattr(fused, name), getattr(plain, name)) for name in FIELDS[:2] + FIELDS[3:]]
    pairs += [(getattr(fused.sample_fit, name), getattr(plain.sample_fit, name)) for name in ("a0", "a1")]
    for a, b in pairs + [(fused.differential_phase, plain.differential_phase)]:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    for a, b in pairs:
        finite = np.isfinite(b)
        scale = np.abs(b[finite]).max() if finite.any() else 1.0
        np.testing.assert_allclose(a[finite], b[finite], rtol=4e-6,
                                   atol=8 * np.finfo(a.dtype).eps * scale)
    fit = plain.sample_fit
    finite = np.isfinite(plain.differential_phase)
    phase = fused.differential_phase[finite] - plain.differential_phase[finite]
    phase = np.abs(np.angle(np.exp(1j * phase)))  # +-pi may land either side
    eps = np.finfo(fit.a0.dtype).eps
    assert np.all(phase <= 1e-6 + 16 * eps * np.abs(fit.a0[finite]) / fit.a1[finite])


def test_random_stacks_at_non_equidistant_steps_with_a_dark_stack(monkeypatch):
    rng = np.random.default_rng(1)
    steps = np.array([0.0, 0.13, 0.21, 0.37, 0.45, 0.58, 0.66, 0.81, 0.9])
    phase = rng.uniform(-np.pi, np.pi, (40, 56))
    reference = scan(rng, steps + 0.01, 20000, 0.25, phase)
    sample = scan(rng, steps, 15000, 0.2, phase + rng.uniform(-3, 3, phase.shape))
    dark = rng.poisson(100.0, (4, 40, 56)).astype(np.uint16)
    fused, plain = both(monkeypatch, sample, reference, dark, steps=steps,
                        reference_steps=steps + 0.01)
    assert_same(fused, plain)
    assert np.isfinite(fused.transmission).all()


def test_edge_cases_saturated_zero_reference_and_negative_a0_after_dark(monkeypatch):
    rng = np.random.default_rng(2)
    steps = np.arange(7) / 7
    phase = rng.uniform(-np.pi, np.pi, (40, 56))
    reference = scan(rng, steps, 20000, 0.25, phase)
    sample = scan(rng, steps, 12000, 0.2, phase + 0.5)
    sample[:, 3, 4] = 65535  # hot pixel
    sample[2, 5, 6] = 65535  # one saturated step
    reference[4, 7, 8] = 65535  # saturated in the reference
    reference[:, 9, 10] = 0  # no beam in the reference
    sample[:, 11, 12] = 20  # below the dark: negative a0 after dark subtraction
    sample[:, 13, 14] = 100  # dead pixel at the dark level
    reference[:, 15, 16] = 20100  # flat reference: a1 is float round-off, compared only
    fused, plain = both(monkeypatch, sample, reference, np.full((40, 56), 100.0))
    assert_same(fused, plain)
    for row, column in ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14)):
        assert all(np.isnan(getattr(fused, name)[row, column]) for name in FIELDS)
    assert np.isfinite(fused.transmission).sum() == 40 * 56 - 6


def test_noise_model_float_stacks_and_a_fitted_reference(monkeypatch):
    rng = np.random.default_rng(3)
    steps = np.arange(5) / 5
    phase = rng.uniform(-np.pi, np.pi, (40, 56))
    reference = scan(rng, steps, 400, 0.25, phase)
    sample = scan(rng, steps, 300, 0.02, phase)  # low counts, almost no fringes
    assert_same(*both(monkeypatch, sample, reference, 100.0 * np.ones((40, 56)),
                      noise_gain=1.0, read_noise=2.0))
    fitted = fit_stepping(reference.astype(np.float32))
    fitted = SteppingFit(a0=fitted.a0 - 100, a1=fitted.a1, phi=fitted.phi)
    assert_same(*both(monkeypatch, sample.astype(np.float32), fitted, np.full((40, 56), 100.0),
                      saturation=60000))
    fused, plain = both(monkeypatch, sample.astype(np.float64), reference.astype(np.float64))
    assert fused.transmission.dtype == np.float64
    np.testing.assert_allclose(fused.transmission, plain.transmission, rtol=1e-12)


def test_fit_stepping_agrees_on_both_paths(monkeypatch):
    rng = np.random.default_rng(4)
    stack = scan(rng, np.arange(9) / 9, 25000, 0.2, rng.uniform(-np.pi, np.pi, (40, 56)))
    fits = []
    for kernel in ("numba", "numpy"):
        monkeypatch.setenv(KERNEL_VARIABLE, kernel)
        fits.append(fit_stepping(stack))
    np.testing.assert_allclose(fits[0].a0, fits[1].a0, rtol=1e-6)
    np.testing.assert_allclose(fits[0].a1, fits[1].a1, rtol=1e-5)
    np.testing.assert_allclose(np.angle(np.exp(1j * (fits[0].phi - fits[1].phi))), 0, atol=1e-5)


def test_float32_log_and_atan2_within_a_few_ulp_of_numpy():
    """The vectorised float32 -ln and atan2 of the kernel, over the whole float32 range
    (subnormal and infinite included for the log; zeros of either sign and NaN for atan2)."""
    import numba

    from reconstruction import fused_kernel

    @numba.njit
    def apply(y, x, minus_log, atan2):
        for j in range(y.size):
            minus_log[j] = fused_kernel._minus_log(y[j])
            atan2[j] = fused_kernel._atan2(y[j], x[j])

    rng = np.random.default_rng(5)
    values = np.concatenate([np.logspace(-45, 38.5, 4001).astype(np.float32),
                             rng.uniform(0.5, 2, 4000).astype(np.float32),
                             np.float32([1.1754942e-38, 1.1754944e-38, 1, 1.4142135, 1.4142137])])
    values = values[values > 0]
    x, y = (rng.standard_normal(values.size).astype(np.float32)
            * np.float32(10) ** rng.integers(-20, 20, values.size) for _ in range(2))
    minus_log, atan2 = np.empty_like(values), np.empty_like(values)
    apply(values, x, minus_log, np.empty_like(values))
    apply(y, x, np.empty_like(values), atan2)
    for got, exact in ((minus_log, -np.log(values.astype(np.float64))),
                       (atan2, np.arctan2(y.astype(np.float64), x.astype(np.float64)))):
        ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
        assert np.all(np.abs(got - exact) <= 2.5 * ulp)
    special = np.float32([np.inf, 0.0, -0.0, 1.0, -1.0, np.nan])
    y, x = (a.ravel() for a in np.meshgrid(special[1:], special[1:]))
    minus_log, atan2 = np.empty(2, np.float32), np.empty_like(y)
    apply(special[:2], special[:2], minus_log, np.empty(2, np.float32))
    assert minus_log[0] == -np.inf
    apply(y, x, np.empty_like(y), atan2)
    exact = np.arctan2(y, x)
    np.testing.assert_allclose(atan2, exact, rtol=2e-7, atol=0)
    np.testing.assert_array_equal(np.signbit(atan2), np.signbit(exact))


def test_kernel_choice_and_a_clear_error(monkeypatch):
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    assert kernel_choice() == "numba"
    assert kernel_choice("numpy") == "numpy"
    monkeypatch.setenv(KERNEL_VARIABLE, "cuda")
    with pytest.raises(ValueError, match=KERNEL_VARIABLE):
        kernel_choice()


@pytest.mark.slow
def test_importing_reconstruction_does_not_import_numba():
    code = "import sys, reconstruction; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_without_numba_the_numpy_path_is_used():
    code = ("import sys; sys.modules['numba'] = None; import numpy as np; "
            "from reconstruction import retrieve; from reconstruction.kernels import kernel_choice; "
            "assert kernel_choice() == 'numpy'; "
            "s = np.random.default_rng(0).integers(1000, 30000, (5, 8, 8), dtype=np.uint16); "
            "assert np.isfinite(retrieve(s, s).transmission).all()")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([sys.executable, "-c", ("import sys; sys.modules['numba'] = None; "
                        "from reconstruction.kernels import kernel_choice; kernel_choice('numba')")],
                       check=True, capture_output=True)
