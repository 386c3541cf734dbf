"""The simulator against analytic expectations (issue 3's validation list)."""

import dataclasses

import numpy as np
import pytest
from scipy import integrate

from reconstruction import fit_stepping
from simulators.physics import Detector, Interferometer, Setup, TubeState, expected_frame, simulate_frame
from simulators.physics.darkfield import sphere_autocorrelation
from simulators.physics.engine import defect_map
from simulators.physics.interferometer import fringe_harmonic, wavelength_um
from simulators.physics.scene import scene
from simulators.physics.spectrum import half_value_layer_mm_al, incident_air_kerma

QUIET = Setup(
    detector=Detector(region=(720, 900, 64, 80), read_noise=False),
    interferometer=Interferometer(visibility_variation=0.0, moire_periods=0.0),
)
STEPS = np.arange(9) * 4.8 / 9
OUT = (120.0, 0.0)


def stack(setup, tube, exposure_s, seed0, noisy=True):
    """A phase-stepping set of the open beam, offset and dark current subtracted (ADU)."""
    dark = setup.detector.offset_adu + setup.detector.dark_current_adu_per_s * exposure_s
    if not noisy:
        return np.stack([expected_frame(setup, None, g2_um=x, stage_mm=OUT, tube=tube,
                                        exposure_s=exposure_s) for x in STEPS]) - dark
    return np.stack([simulate_frame(setup, None, g2_um=x, stage_mm=OUT, tube=tube,
                                    exposure_s=exposure_s, seed=seed0 + k)
                     for k, x in enumerate(STEPS)]).astype(float) - dark


def test_visibility_at_the_design_energy_is_the_ideal_pi_half_gratings():
    setup = Setup()
    opaque = dataclasses.replace(setup.gratings, g0_gold_um=2000.0, g2_gold_um=2000.0)
    g = setup.geometry
    z_um = g.g0_g1_mm * g.g1_g2_mm / (g.g0_g1_mm + g.g1_g2_mm) * 1e3
    u = wavelength_um(27.0) * z_um / opaque.g1_period_um**2
    # independent check: propagate a sampled pi/2 grating by FFT and measure the fringe
    x = (np.arange(4096) + 0.5) / 4096
    field = np.exp(1j * np.pi / 2 * (x < 0.5))
    n = np.fft.fftfreq(x.size, 1 / x.size)
    intensity = np.abs(np.fft.ifft(np.fft.fft(field) * np.exp(-1j * np.pi * u * n**2))) ** 2
    fringe = 2 * np.abs(np.fft.fft(intensity)[1]) / np.abs(np.fft.fft(intensity)[0])
    expected = fringe * (2 / np.pi) ** 2  # opaque G0 and G2: 2/pi each
    assert abs(fringe_harmonic([27.0], g, opaque)[0]) == pytest.approx(expected, rel=2e-3)
    assert fringe == pytest.approx(4 / np.pi, rel=0.01)  # near the ideal u = 3/2
    # the fringes vanish where lambda z / p1^2 = 2 (about 20.3 keV) and change sign there
    energies = np.linspace(19.0, 22.0, 301)
    h = fringe_harmonic(energies, g, opaque)
    zero = energies[np.argmin(np.abs(h))]
    assert zero == pytest.approx(27.0 * u / 2, abs=0.02)
    assert np.sign(h[0].real) != np.sign(h[-1].real)


def test_sphere_autocorrelation_is_the_projected_3d_autocorrelation():
    def gamma(r):  # 3-D autocorrelation of a unit sphere, normalised to 1 at r = 0
        return 1 - 0.75 * r + r**3 / 16 if r < 2 else 0.0

    def projected(z):
        return 2 * integrate.quad(lambda t: gamma(np.hypot(z, t)), 0, 2, limit=200)[0]

    norm = projected(0.0)
    for z in (0.05, 0.3, 0.8, 1.2, 1.7, 1.95):
        assert sphere_autocorrelation(z) == pytest.approx(projected(z) / norm, abs=1e-6)


def test_phase_noise_is_sqrt_2_over_v2_n():
    tube = TubeState(ma=2.0)  # a few thousand photons per step: quantum noise only
    reference = fit_stepping(stack(QUIET, tube, 9.0, 0, noisy=False), STEPS, 4.8)
    noisy = fit_stepping(stack(QUIET, tube, 9.0, 100), STEPS, 4.8)
    view = scene(QUIET, None, OUT, 40.0)
    photons = len(STEPS) * reference.a0 / (view.adu_per_photon * view.noise_factor)
    predicted = np.sqrt(2 / (reference.visibility**2 * photons))
    dphi = np.angle(np.exp(1j * (noisy.phi - reference.phi)))
    assert np.std(dphi) == pytest.approx(np.median(predicted), rel=0.1)


def test_retrieved_visibility_is_biased_up_at_low_counts():
    truth = fit_stepping(stack(QUIET, TubeState(), 9.0, 0, noisy=False), STEPS, 4.8).visibility
    view = scene(QUIET, None, OUT, 40.0)
    for ma, biased in ((0.02, True), (70.0, False)):
        tube = TubeState(ma=ma)
        fit = fit_stepping(stack(QUIET, tube, 9.0, 7), STEPS, 4.8)
        mean = fit_stepping(stack(QUIET, tube, 9.0, 0, noisy=False), STEPS, 4.8).a0
        photons = len(STEPS) * mean / (view.adu_per_photon * view.noise_factor)
        rms = np.sqrt(np.mean(fit.visibility**2))
        expected = np.sqrt(np.mean(truth**2 + 4 / photons))
        assert rms == pytest.approx(expected, rel=0.05)
        assert (rms > 1.1 * np.mean(truth)) == biased


def test_no_fringes_outside_the_g2_field():
    edge = dataclasses.replace(QUIET, detector=dataclasses.replace(QUIET.detector, region=(700, 0, 16, 16)))
    fit = fit_stepping(stack(edge, TubeState(), 9.0, 0, noisy=False), STEPS, 4.8)
    assert np.all(fit.visibility < 1e-6) and np.all(fit.a0 > 1000)


def test_defects_are_fixed_on_the_panel():
    setup = dataclasses.replace(QUIET, detector=dataclasses.replace(
        QUIET.detector, region=None, defect_fraction=1e-3))
    dead, hot = defect_map(setup.detector)
    assert dead.sum() == pytest.approx(0.5e-3 * dead.size, rel=0.1) and not (dead & hot).any()
    region = dataclasses.replace(setup.detector, region=(100, 200, 50, 60))
    dead_r, hot_r = defect_map(region)
    assert np.array_equal(dead_r, dead[100:150, 200:260]) and np.array_equal(hot_r, hot[100:150, 200:260])
    small = dataclasses.replace(setup, detector=region)
    frame = simulate_frame(small, None, g2_um=0.0, stage_mm=OUT, tube=TubeState(), exposure_s=9.0, seed=1)
    assert np.all(frame[hot_r] == 65535) and np.all(frame[dead_r] == 118)


def test_lag_and_offset_drift():
    lagging = dataclasses.replace(QUIET, detector=dataclasses.replace(
        QUIET.detector, lag_fraction=0.02, quantum_noise=False))
    bright = simulate_frame(lagging, None, g2_um=0.0, stage_mm=OUT, tube=TubeState(), exposure_s=9.0, seed=1)
    dark = TubeState(shutter_open=False)
    after = simulate_frame(lagging, None, g2_um=0.0, stage_mm=OUT, tube=dark, exposure_s=9.0, seed=2,
                           previous_frame=bright)
    assert (after.mean() - 118) == pytest.approx(0.02 * (bright.mean() - 118), rel=0.01)
    later = simulate_frame(lagging, None, g2_um=0.0, stage_mm=OUT, tube=dark, exposure_s=9.0, seed=3,
                           time_s=2 * 3600)
    assert later.mean() - 118 == pytest.approx(2 * QUIET.detector.offset_drift_adu_per_h, abs=0.5)


def test_noise_is_widened_by_energy_spread_and_swank_factor():
    tube = TubeState()
    mean = expected_frame(QUIET, None, g2_um=0.0, stage_mm=OUT, tube=tube, exposure_s=9.0)
    frames = np.stack([simulate_frame(QUIET, None, g2_um=0.0, stage_mm=OUT, tube=tube,
                                      exposure_s=9.0, seed=s) for s in range(40)]).astype(float)
    view = scene(QUIET, None, OUT, 40.0)
    variance_per_signal = np.mean(frames.var(axis=0, ddof=1) / (mean - 118))
    assert view.noise_factor > 1 / QUIET.detector.swank_factor  # polyenergetic spread
    assert variance_per_signal == pytest.approx(view.adu_per_photon * view.noise_factor, rel=0.05)


def test_beam_at_the_sample_is_the_measured_one_and_the_open_beam_fits_16_bit():
    # paper, Methods "Dose": incident air kerma 2.1 mGy/s, HVL 0.8 mm Al at 40 kVp / 70 mA
    setup = Setup()
    kerma = incident_air_kerma(40.0, setup.source, setup.geometry, setup.gratings) * 70.0
    assert kerma == pytest.approx(2.1, abs=0.1)
    assert half_value_layer_mm_al(40.0, setup.source, setup.geometry.source_sample_mm) == pytest.approx(0.8, abs=0.05)
    frames = stack(QUIET, TubeState(), 9.0, 0, noisy=False)  # one 9 s phase-stepping set
    assert 10_000 < frames.mean() < 30_000 and frames.max() < 0.8 * 65535
