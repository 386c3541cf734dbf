"""Specimens from the paper's micro-CT descriptors (Scherer et al. 2016, Table 1), mixed
chemistry, the textured breast specimen, the step wedge and the named specimens."""

import re

import numpy as np
import pytest

from acquisition.config import ConfigError, default_config_dir, load_config
from reconstruction import analyse_clusters
from simulators.physics import (
    Detector,
    Phantom,
    PhantomSpec,
    Setup,
    TissueSlab,
    TubeState,
    build_phantom,
    cluster_preset,
    describe,
    descriptor_class,
    sample_signals,
    specimen,
    texture_maps,
    truth_labels,
)
from simulators.physics.breast_texture import power_law_field
from simulators.physics.descriptors import TEXTURES, TYPE_I, TYPE_II
from simulators.physics.scene import pixel_grid

REGION = Setup(detector=Detector(region=(608, 720, 320, 480)))  # 27 x 41 mm at the sample
TUBE = TubeState()


def table_1(d) -> set[str]:
    """Every Table 1 class whose descriptor range holds ``d`` (written out, not reused)."""
    classes = set()
    if d.r_max_um <= 275 and d.small_fraction >= 0.7:
        classes.add("ultra-fine")
    if d.r_max_um <= 275 and d.small_fraction <= 0.7:
        classes.add("fine")
    if 0.25 <= d.large_fraction <= 0.75:
        classes.add("pleomorphic")
    if d.large_fraction >= 0.85:
        classes.add("coarse")
    return classes


@pytest.mark.parametrize("texture", TEXTURES)
def test_realised_descriptors_lie_in_their_class_range(texture):
    small, large = [], []
    for seed in range(60):
        cluster = cluster_preset(texture, (0.0, 0.0), seed=seed)
        d = describe(cluster.grains)
        assert cluster.descriptors == d
        assert texture in table_1(d), (seed, d)
        assert cluster.texture == descriptor_class(cluster.grains) == texture
        assert all(6.0 < g.radius_um <= 1000.0 for g in cluster.grains)  # micro-CT: > 5 voxels of 6 um
        assert all(np.hypot(g.x_mm, g.y_mm) <= 1.5 for g in cluster.grains)
        assert 2.5 < d.surface_mm2 < 15  # about 200 mm2 over the paper's 31 clusters
        small.append(d.small_fraction)
        large.append(d.large_fraction)
    # each cluster draws its own descriptors: they spread over the class's interval
    spread = np.ptp(small) if texture in ("ultra-fine", "fine") else np.ptp(large)
    assert spread > 0.1


def test_descriptor_class_follows_table_1():
    assert descriptor_class([75.0] * 20) == "ultra-fine"
    assert descriptor_class([75.0] * 20 + [250.0] * 10) == "fine"  # 250 um hold 0.82 of the surface
    assert descriptor_class([75.0] * 40 + [300.0] * 2) == "pleomorphic"
    assert descriptor_class([700.0]) == "coarse"
    assert descriptor_class([75.0] * 100 + [300.0]) is None  # a large grain, too little surface
    assert descriptor_class([75.0] * 8 + [300.0] * 2) is None  # between 0.75 and 0.85
    with pytest.raises(ValueError, match="grains"):
        descriptor_class([])
    with pytest.raises(ValueError, match="texture"):
        cluster_preset("granular", (0.0, 0.0), seed=1)


def test_chemistry_is_mixed_and_recorded():
    phantom = build_phantom(PhantomSpec())
    chemistry = [c.chemistry for c in phantom.clusters]
    assert chemistry.count(TYPE_I) == 3 and chemistry.count(TYPE_II) == 9  # 0.25 of 12
    assert all(g.material == c.chemistry for c in phantom.clusters for g in c.grains)
    assert all(c.descriptors is not None for c in phantom.clusters)
    only_ha = build_phantom(PhantomSpec(type_i_fraction=0.0))
    assert {c.chemistry for c in only_ha.clusters} == {TYPE_II}
    with pytest.raises(ValueError, match="type_i_fraction"):
        build_phantom(PhantomSpec(type_i_fraction=1.5))


def noise_free_ratios(name: str, seeds) -> list[tuple[str, float]]:
    """(true class, noise-free mu/eps) of every cluster of specimen ``name``, truth labels."""
    out = []
    for seed in seeds:
        phantom = specimen(name, clusters=12, seed=seed)
        truth = sample_signals(REGION, phantom, (0.0, 0.0), TUBE)
        labels = truth_labels(REGION, phantom, (0.0, 0.0))
        found = {c.label: c.ratio for c in analyse_clusters(truth.transmission, truth.dark_field, labels)}
        assert len(found) == len(phantom.clusters)
        out += [(c.texture, found[i]) for i, c in enumerate(phantom.clusters, start=1)]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paraffin10", "breast45"])
def test_ratios_spread_and_classes_order_by_median(name):
    ratios = noise_free_ratios(name, seeds=(1, 2, 3))
    values = np.array([r for _, r in ratios])
    assert len(np.unique(np.round(values, 3))) >= 0.9 * values.size  # a continuum, not four values
    assert values.max() / values.min() > 4
    medians = [np.median([r for t, r in ratios if t == texture]) for texture in TEXTURES]
    assert np.all(np.diff(medians) > 0), medians


def test_texture_power_spectrum_falls_as_f_to_the_minus_beta():
    def slope(image):
        power = np.abs(np.fft.rfft2(image - image.mean())) ** 2
        f = np.hypot(np.fft.fftfreq(image.shape[0])[:, None], np.fft.rfftfreq(image.shape[1])[None, :])
        bins = np.geomspace(0.01, 0.2, 12)
        which = np.digitize(f.ravel(), bins)
        centre = [f.ravel()[which == k].mean() for k in range(1, bins.size)]
        mean = [power.ravel()[which == k].mean() for k in range(1, bins.size)]
        return np.polyfit(np.log(centre), np.log(mean), 1)[0]

    field = power_law_field((512, 512), 3.0, np.random.default_rng(4))
    assert field.std() == pytest.approx(1.0) and slope(field) == pytest.approx(-3.0, abs=0.3)
    slab = specimen("breast45").slab
    glandular = texture_maps(slab).glandular
    assert glandular.mean() == pytest.approx(0.5, abs=0.05) and glandular.std() == pytest.approx(0.15, rel=0.1)
    assert 0 <= glandular.min() and glandular.max() <= 1
    assert slope(glandular.astype(float)) == pytest.approx(-slab.texture_beta, abs=0.3)


def test_texture_changes_t_and_moves_with_the_stage():
    textured = specimen("breast45", clusters=0)
    uniform = Phantom(TissueSlab(thickness_mm=45.0, embedding="native"), ())
    t_tex = sample_signals(REGION, textured, (0.0, 0.0), TUBE).transmission
    t_uni = sample_signals(REGION, uniform, (0.0, 0.0), TUBE).transmission
    assert np.std(t_uni) / np.mean(t_uni) < 1e-3
    assert np.std(t_tex) / np.mean(t_tex) > 0.05  # the fibroglandular pattern
    assert np.mean(t_tex) == pytest.approx(np.mean(t_uni), rel=0.15)
    shift = 7  # pixels: the texture is fixed to the sample, so it moves with the stage
    pixel_mm = REGION.detector.pixel_um / 1000 / REGION.geometry.magnification
    moved = sample_signals(REGION, textured, (shift * pixel_mm, 0.0), TUBE).transmission
    np.testing.assert_allclose(moved[:, shift:], t_tex[:, :-shift], rtol=1e-4)  # stage to 0.1 um


def test_fibres_and_ducts_scatter():
    strands = TissueSlab(thickness_mm=45.0, embedding="native", fibres_per_cm2=1.0, ducts_per_cm2=0.1)
    plain = TissueSlab(thickness_mm=45.0, embedding="native")
    maps = texture_maps(strands)
    y, x = pixel_grid(REGION)
    m = REGION.geometry.magnification
    _, eps20 = maps.sample(x / m, y / m)
    assert (eps20 > 0).mean() > 0.01  # fibres and ducts in this field
    v = sample_signals(REGION, Phantom(strands, ()), (0.0, 0.0), TUBE).dark_field
    v0 = sample_signals(REGION, Phantom(plain, ()), (0.0, 0.0), TUBE).dark_field
    t = sample_signals(REGION, Phantom(strands, ()), (0.0, 0.0), TUBE).transmission
    t0 = sample_signals(REGION, Phantom(plain, ()), (0.0, 0.0), TUBE).transmission
    ratio = v / v0
    assert ratio[eps20 > 0.01].max() < 1 and ratio.min() < 0.98  # V < 1 on the strands
    np.testing.assert_allclose(ratio[eps20 == 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(t, t0, rtol=1e-5)  # strands scatter only
    # weak: -ln V follows the path times strand_dark_field_per_mm within the spectrum's 1/E^2
    strong = eps20 > 0.02
    measured = -np.log(ratio[strong])
    assert 0.3 < np.median(measured / eps20[strong]) < 1.5


def test_the_step_wedge_gives_the_step_thicknesses():
    steps = (5.0, 10.0, 20.0, 40.0)
    wedge = TissueSlab(steps_mm=steps, width_mm=40.0, height_mm=40.0, thickness_mm=1.0)
    assert wedge.max_thickness_mm == 40.0
    t = sample_signals(REGION, Phantom(wedge, ()), (0.0, 0.0), TUBE).transmission
    _, x = pixel_grid(REGION)
    u = x / REGION.geometry.magnification
    row = t.shape[0] // 2
    for step, centre in zip(steps, (-15.0, -5.0, 5.0, 15.0)):
        column = int(np.argmin(np.abs(u - centre)))
        uniform = sample_signals(REGION, Phantom(TissueSlab(thickness_mm=step), ()), (0.0, 0.0), TUBE)
        assert t[row, column] == pytest.approx(uniform.transmission[row, column], rel=1e-4)
    mu = [-np.log(t[row, int(np.argmin(np.abs(u - c)))]) for c in (-15.0, -5.0, 5.0, 15.0)]
    assert np.all(np.diff(mu) > 0)


def test_same_seed_same_specimen():
    a, b = specimen("breast45", seed=3), specimen("breast45", seed=3)
    assert a == b
    assert specimen("breast45", seed=4).clusters != a.clusters
    np.testing.assert_array_equal(texture_maps(a.slab).glandular,
                                  texture_maps(TissueSlab(**vars(b.slab))).glandular)


def test_named_specimens():
    breast = specimen("breast45")
    assert breast.slab.embedding == "native" and breast.slab.thickness_mm == 45 and breast.slab.textured
    block = specimen("paraffin10")
    assert block.slab.embedding == "paraffin" and block.slab.thickness_mm == 10 and not block.slab.textured
    assert [c.texture for c in block.clusters].count("coarse") == 3 and len(block.clusters) == 12
    centres = np.array([c.centre_mm for c in block.clusters])
    assert np.abs(centres.mean(axis=0)).max() < 1.5
    assert specimen("breast60").slab.thickness_mm == 60 and specimen("paraffin20").slab.thickness_mm == 20
    big = specimen("paraffin10", clusters=40)
    assert big.slab.width_mm >= 9 * 7 and len(big.clusters) == 40


@pytest.mark.parametrize("name", ["breast", "steel10", "breast-5", "paraffin0", 45])
def test_a_bad_specimen_name_raises(name):
    with pytest.raises(ValueError, match="name"):
        specimen(name)


def test_bad_specimen_arguments_are_named():
    with pytest.raises(ValueError, match="clusters"):
        specimen("breast45", clusters=-1)
    with pytest.raises(ValueError, match="spacing_mm"):
        specimen("breast45", spacing_mm=1.0)


@pytest.mark.parametrize("old, new, message", [
    ("    embedding: paraffin", "    embedding: paraffin\n    steps_mm: [5.0, -1.0]",
     "phantom.slab.steps_mm[1]: must be in (0, 150]"),
    ("    embedding: paraffin", "    embedding: paraffin\n    glandular_sd: 0.1",
     "phantom.slab.glandular_sd: the breast texture is for native tissue"),
    ("  type_i_fraction: 0.25", "  type_i_fraction: 1.25", "phantom.type_i_fraction: must be in [0, 1]"),
])
def test_phantom_configuration_is_checked(tmp_path, old, new, message):
    text = (default_config_dir() / "simulation.yaml").read_text()
    assert old in text
    path = tmp_path / "simulation.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(simulation=path)


def test_the_twin_specimen_is_a_paraffin_block_from_the_descriptors():
    spec = load_config().simulation.phantom
    phantom = build_phantom(spec)
    assert phantom.slab.embedding == "paraffin" and phantom.slab.thickness_mm == 10.0
    assert len(phantom.clusters) == 12
    assert all(c.texture == descriptor_class(c.grains) for c in phantom.clusters)


def test_the_tissue_table_is_the_exact_spectral_sum():
    """Plain tissue is interpolated from a thickness x glandular-fraction table; against the
    exact sum over the spectrum it is good to 1e-4 (relative) of the open-beam value."""
    from simulators.physics.interferometer import fringe_harmonic
    from simulators.physics.scene import _interpolate, _tissue, _tissue_tables

    energies = np.linspace(10.5, 39.5, 30)
    weight = np.exp(-((energies - 22) / 5) ** 2)
    weight /= weight.sum()
    h = fringe_harmonic(energies, REGION.geometry, REGION.gratings)
    slab = specimen("breast45").slab
    tissue = _tissue(slab, energies)
    nodes, fractions, mean_table, harmonic_table = _tissue_tables(slab, tissue, weight, h)
    rng = np.random.default_rng(2)
    thickness = np.concatenate([np.full(200, 45.0), rng.uniform(0, 45, 200)])
    fraction = rng.uniform(0, 1, 400)
    mu = thickness[:, None] * tissue.mix(tissue.mu, fraction)
    exact_mean = np.exp(-mu) @ weight
    exact_harmonic = np.exp(-mu - thickness[:, None] * tissue.eps_per_mm) @ (weight * h)
    table = np.stack([mean_table, harmonic_table.real, harmonic_table.imag], axis=-1)
    sums = _interpolate(nodes, fractions, table, thickness, fraction)
    mean, harmonic = sums[:, 0], sums[:, 1] + 1j * sums[:, 2]
    np.testing.assert_allclose(mean, exact_mean, rtol=1e-4)
    assert np.max(np.abs(harmonic - exact_harmonic) / np.abs(exact_harmonic)) < 1e-4
