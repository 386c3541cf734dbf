"""The physics engine against the paper's numbers and the dark-field model's limits."""

import dataclasses

import numpy as np
import pytest

from reconstruction import analyse_clusters, fit_stepping
from simulators.physics import (
    Cluster,
    Detector,
    Grain,
    Interferometer,
    Phantom,
    Setup,
    TissueSlab,
    TubeState,
    cluster_preset,
    detector_shape,
    expected_frame,
    sample_pixel_mm,
    sample_signals,
    simulate_frame,
    truth_labels,
)
from simulators.physics.darkfield import scattering_per_mm, sphere_autocorrelation
from simulators.physics.interferometer import autocorrelation_length_um, wavelength_um
from simulators.physics.materials import delta, mu_per_mm
from simulators.physics.spectrum import air_kerma_reference

SMALL = Setup(detector=Detector(region=(720, 900, 64, 80)))
EXACT = dataclasses.replace(
    SMALL, detector=dataclasses.replace(SMALL.detector, quantum_noise=False, read_noise=False),
    interferometer=Interferometer(visibility_variation=0.0, moire_periods=0.0))


def test_geometry_is_the_papers():
    setup = Setup()
    assert setup.geometry.source_sample_mm == 1134 and setup.geometry.sample_detector_mm == 556
    assert setup.geometry.magnification == pytest.approx(1.49, abs=0.005)
    assert sample_pixel_mm(setup) * 1000 == pytest.approx(85.2, abs=0.1)
    assert autocorrelation_length_um(27.0, setup.geometry, setup.gratings) == pytest.approx(4.8, abs=0.3)


def test_incident_air_kerma_matches_the_papers_measurement():
    # paper, Methods: 2.1 mGy/s at the sample at 40 kVp / 70 mA (G0 passes half the beam)
    kerma = air_kerma_reference(40.0, Setup().source, 1134.0) * 70 * 0.5
    assert kerma == pytest.approx(2.1, rel=0.15)


def test_sphere_autocorrelation_limits():
    assert sphere_autocorrelation(1e-9) == pytest.approx(1.0)
    assert sphere_autocorrelation([2.0, 3.0]).tolist() == [0.0, 0.0]
    z = np.linspace(0.01, 1.99, 50)
    assert np.all(np.diff(sphere_autocorrelation(z)) < 0)  # monotonic between the limits


def test_scattering_rises_then_falls_with_grain_radius():
    lam, xi = wavelength_um(20.0), autocorrelation_length_um(20.0, Setup().geometry, Setup().gratings)
    radii = np.geomspace(0.2, 2000, 200)
    eps = scattering_per_mm(radii, 1e-6, lam, xi)
    peak = radii[np.argmax(eps)]
    assert 0.5 * xi < peak < 3 * xi
    small = radii < xi / 4
    assert np.allclose(eps[small] / radii[small], eps[small][0] / radii[small][0], rtol=1e-6)  # ~R
    large = radii > 100 * xi
    assert np.all(np.diff(eps[large]) < 0)  # coarse grains scatter less


def test_chemistry_hardly_moves_eps_over_mu_but_grain_size_does():
    """Paper Fig. 6: hydroxyapatite vs calcium oxalate of the same size: nearly the same eps/mu."""
    e = np.array([20.0])
    lam, xi = wavelength_um(e), autocorrelation_length_um(e, Setup().geometry, Setup().gratings)
    ratio = {}
    for material in ("hydroxyapatite", "calcium_oxalate_monohydrate"):
        for radius in (20.0, 300.0):
            ddelta = delta(material, e) - delta("paraffin", e)
            mu = mu_per_mm(material, e) - mu_per_mm("paraffin", e)
            ratio[material, radius] = (scattering_per_mm(radius, ddelta, lam, xi) / mu)[0]
    chemistry = ratio["hydroxyapatite", 20.0] / ratio["calcium_oxalate_monohydrate", 20.0]
    size = ratio["hydroxyapatite", 20.0] / ratio["hydroxyapatite", 300.0]
    assert 0.7 < chemistry < 1.4
    assert size > 5


def test_cluster_mu_over_eps_rises_with_grain_radius():
    """A cluster of equal grains (6.5 mm2 of grain surface, as the descriptors' clusters):
    the noise-free mean mu/eps (eq. 2 normalisation, LSQ slope) grows with the radius -
    the physics under Table 1.  The class presets are tested in tests/test_phantoms.py."""
    setup = Setup(detector=Detector(region=(608, 720, 320, 480)))
    rng = np.random.default_rng(1)
    ratios = []
    for radius in (20.0, 75.0, 275.0, 700.0):
        n = max(1, round(6.5 / (4 * np.pi * (radius / 1000) ** 2)))
        rho, angle = 1.5 * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
        grains = tuple(Grain(p * np.cos(a), p * np.sin(a), radius) for p, a in zip(rho, angle))
        phantom = Phantom(TissueSlab(), (Cluster("equal", "fine", grains),))
        truth = sample_signals(setup, phantom, (0.0, 0.0), TubeState())
        (found,) = analyse_clusters(truth.transmission, truth.dark_field,
                                    truth_labels(setup, phantom, (0.0, 0.0)))
        ratios.append(found.ratio)
    assert np.all(np.diff(ratios) > 0) and ratios[-1] / ratios[0] > 5, ratios


def test_noise_free_stepping_set_reproduces_the_sample_signals():
    phantom = Phantom(TissueSlab(thickness_mm=5.0), (cluster_preset("fine", (0.0, 0.0), seed=2),))
    steps = np.arange(9) * 4.8 / 9
    tube = TubeState()

    def stack(stage):
        return np.stack([expected_frame(EXACT, phantom, g2_um=x, stage_mm=stage, tube=tube,
                                        exposure_s=9.0) - EXACT.detector.offset_adu
                         - EXACT.detector.dark_current_adu_per_s * 9.0 for x in steps])

    sample, reference = fit_stepping(stack((0.0, 0.0)), steps, 4.8), fit_stepping(stack((120.0, 0.0)), steps, 4.8)
    truth = sample_signals(EXACT, phantom, (0.0, 0.0), tube)
    np.testing.assert_allclose(sample.a0 / reference.a0, truth.transmission, rtol=1e-5)
    np.testing.assert_allclose(sample.visibility / reference.visibility, truth.dark_field, rtol=1e-4)
    assert 0.15 < np.median(reference.visibility) < 0.4  # a lab Talbot-Lau setup


def test_frames_are_reproducible_noisy_and_dark_without_beam():
    kwargs = dict(g2_um=1.0, stage_mm=(120.0, 0.0), exposure_s=9.0)
    a = simulate_frame(SMALL, None, tube=TubeState(), seed=5, **kwargs)
    b = simulate_frame(SMALL, None, tube=TubeState(), seed=5, **kwargs)
    c = simulate_frame(SMALL, None, tube=TubeState(), seed=6, **kwargs)
    assert a.dtype == np.uint16 and a.shape == detector_shape(SMALL) == (64, 80)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 15_000 < a.mean() < 40_000  # open beam, 9 s at 40 kV / 70 mA
    dark = simulate_frame(SMALL, None, tube=TubeState(shutter_open=False), seed=5, **kwargs)
    assert abs(dark.mean() - (100 + 2 * 9)) < 1 and dark.std() == pytest.approx(3, rel=0.2)
    # current scales the signal linearly
    half = expected_frame(SMALL, None, tube=TubeState(ma=35.0), **kwargs) - 118
    full = expected_frame(SMALL, None, tube=TubeState(ma=70.0), **kwargs) - 118
    np.testing.assert_allclose(full, 2 * half, rtol=1e-5)


def test_saturation_and_binning():
    long = simulate_frame(SMALL, None, g2_um=0.0, stage_mm=(120.0, 0.0), tube=TubeState(),
                          exposure_s=60.0, seed=1)
    assert long.max() == 65535
    binned = dataclasses.replace(EXACT, detector=dataclasses.replace(EXACT.detector, binning=2))
    kwargs = dict(g2_um=0.5, stage_mm=(120.0, 0.0), tube=TubeState(), exposure_s=1.0)
    fine = expected_frame(EXACT, None, **kwargs) - 100 - 2
    coarse = expected_frame(binned, None, **kwargs) - 100 - 2 * 4
    assert coarse.shape == (32, 40)
    np.testing.assert_allclose(coarse, fine.reshape(32, 2, 40, 2).sum(axis=(1, 3)), rtol=1e-5)


def test_mu_and_eps_grow_linearly_with_path_but_for_beam_hardening():
    def mu_eps(thickness_mm, copies):
        cluster = cluster_preset("ultra-fine", (0.0, 0.0), seed=4)
        cluster = dataclasses.replace(cluster, grains=cluster.grains * copies)
        phantom = Phantom(TissueSlab(thickness_mm=thickness_mm), (cluster,))
        truth = sample_signals(EXACT, phantom, (0.0, 0.0), TubeState())
        labels = truth_labels(EXACT, phantom, (0.0, 0.0)) > 0
        slab = -np.log(truth.transmission[~labels]).mean()
        tissue_v = np.median(truth.dark_field[~labels])  # eq. 2: normalise by the tissue
        return slab, -np.log(truth.dark_field[labels] / tissue_v).mean()

    slab_1, eps_1 = mu_eps(5.0, 1)
    slab_2, _ = mu_eps(10.0, 1)
    _, eps_2 = mu_eps(5.0, 2)
    # the spectrum hardens behind more material: mu slightly less than twice; eps somewhat
    # more, as calcium's hardening shifts weight between fringe lobes of opposite sign
    # (the spurious dark-field of beam hardening)
    assert 1.8 < slab_2 / slab_1 < 2.0
    assert 1.8 < eps_2 / eps_1 < 2.5


def test_beam_hardening_changes_the_visibility_behind_tissue():
    """The spurious dark-field of beam hardening: V behind a slab is not 1, more so when thicker."""
    effect = []
    for thickness in (10.0, 40.0):
        truth = sample_signals(EXACT, Phantom(TissueSlab(thickness_mm=thickness, dark_field_per_mm=0.0)),
                               (0.0, 0.0), TubeState())
        effect.append(abs(np.log(np.median(truth.dark_field))))
    assert effect[0] > 0.01 and effect[1] > 2 * effect[0]
