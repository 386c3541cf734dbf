"""Loading the YAML configuration: the paper's values come through, wrong fields are named."""

import re
from pathlib import Path

import pytest

from acquisition.config import ConfigError, default_config_dir, load_config


def write_variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (default_config_dir() / name).read_text()
    assert old in text, f"{old!r} not in {name}"
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


def test_embedded_config_is_the_papers_instrument():
    config = load_config()
    geometry = config.setup.geometry
    assert geometry.source_sample_mm == pytest.approx(1134.0)
    assert geometry.sample_detector_mm == pytest.approx(556.0)
    assert config.setup.detector.pixel_um / geometry.magnification == pytest.approx(85.2, abs=0.1)
    assert config.setup.gratings.g2_period_um == 4.8
    assert config.instrument.scan.steps == 9 and config.instrument.scan.exposure_s == 9.0
    assert config.instrument.dose.air_kerma_mgy_per_s == 2.1 and config.instrument.dose.hvl_mm_al == 0.8
    # the simulation overrides only the detector fields it names
    assert config.setup.detector.region == (512, 640, 512, 640)
    assert config.setup.detector.rows == 1536
    assert len(config.digest) == 64


@pytest.mark.parametrize(
    "name, old, new, message",
    [
        ("instrument.yaml", "  steps: 9", "  stepz: 9", "instrument.yaml: scan.stepz: unknown field"),
        ("instrument.yaml", "  steps: 9", "  steps: 2", "scan.steps: must be in [3, 64], got 2"),
        ("instrument.yaml", "  steps: 9", "  steps: 9.5", "scan.steps: expected a whole number"),
        ("instrument.yaml", "  g2_period_um: 4.8", "  g2_period_um: -4.8", "gratings.g2_period_um: must be in [0.1, 1000] um, got -4.8"),
        ("instrument.yaml", "  g2_period_um: 4.8", "  g2_period_um: fast", "gratings.g2_period_um: expected a number"),
        ("instrument.yaml", "  x_limits_mm: [-150.0, 150.0]", "  x_limits_mm: [150.0, -150.0]", "stage.x_limits_mm: low limit"),
        ("instrument.yaml", "  reference_position_mm: [0.0, 140.0]", "  reference_position_mm: [220.0, 0.0]", "stage.reference_position_mm"),
        ("instrument.yaml", "  g2_field_mm: [100.0, 100.0]", "  g2_field_mm: [100.0]", "gratings.g2_field_mm: expected 2 values"),
        ("simulation.yaml", "  binning: 1", "  binnig: 1", "simulation.yaml: detector.binnig: unknown field"),
        ("simulation.yaml", "  region: [512, 640, 512, 640]", "  region: [1500, 640, 512, 640]", "detector.region"),
        ("simulation.yaml", "    thickness_mm: 10.0", "    thicknes_mm: 10.0", "phantom.slab.thicknes_mm: unknown field"),
        ("simulation.yaml", "  quantum_noise: true", "  quantum_noise: yes please", "detector.quantum_noise: expected true or false"),
    ],
)
def test_a_wrong_field_is_named(tmp_path, name, old, new, message):
    path = write_variant(tmp_path, name, old, new)
    kwargs = {"instrument": path} if name == "instrument.yaml" else {"simulation": path}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(**kwargs)


def test_unreadable_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(instrument=tmp_path / "missing.yaml")
    bad = tmp_path / "instrument.yaml"
    bad.write_text("geometry: [unclosed\n")
    with pytest.raises(ConfigError, match="instrument.yaml: not valid YAML"):
        load_config(instrument=bad)
