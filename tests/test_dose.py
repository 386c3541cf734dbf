"""Beam quality at the sample and the mean glandular dose (Scherer et al. 2016, Methods "Dose")."""

import dataclasses

import numpy as np
import pytest
from support import small_config, validated_documents

from acquisition.config import ConfigError, DoseConfig, load_config
from acquisition.dose import (
    G_FACTORS,
    G_HVL_MM_AL,
    G_THICKNESS_MM,
    dose_rate_mgy_per_s,
    g_factor,
    planned_dose_mgy,
)
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from simulators.physics import Detector, Setup
from simulators.physics.spectrum import (
    half_value_layer_mm_al,
    incident_air_kerma,
    spectrum_at_detector,
)

PAPER = DoseConfig()  # 2.1 mGy/s, HVL 0.8 mm Al at 40 kVp / 70 mA, 45 mm reference breast


@pytest.mark.slow
def test_simulated_beam_meets_the_measured_hvl_and_air_kerma():
    setup = Setup()
    # the paper: HVL 0.8 mm Al and incident air kerma 2.1 mGy/s at the sample (behind G0)
    assert half_value_layer_mm_al(40.0, setup.source, setup.geometry.source_sample_mm) == pytest.approx(0.80, abs=0.05)
    kerma = incident_air_kerma(40.0, setup.source, setup.geometry, setup.gratings) * 70.0
    assert kerma == pytest.approx(2.1, abs=0.1)


@pytest.mark.slow
def test_output_factor_scales_the_photons_the_frames_are_made_of():
    setup = Setup(detector=Detector(region=(760, 952, 8, 8)))
    unit = dataclasses.replace(setup.source, output_factor=1.0)
    calibrated = spectrum_at_detector(40.0, setup.source, setup.geometry, setup.detector)
    bare = spectrum_at_detector(40.0, unit, setup.geometry, setup.detector)
    ratio = calibrated.photons_per_mm2_mas / bare.photons_per_mm2_mas
    assert np.allclose(ratio, setup.source.output_factor)
    kerma = incident_air_kerma(40.0, setup.source, setup.geometry, setup.gratings)
    assert kerma / incident_air_kerma(40.0, unit, setup.geometry, setup.gratings) == pytest.approx(setup.source.output_factor)


def test_g_factor_follows_the_published_table():
    table = np.array(G_FACTORS)
    fitted = np.array([[g_factor(h, t) for t in G_THICKNESS_MM] for h in G_HVL_MM_AL])
    assert np.allclose(fitted, table, rtol=0.035)  # the log-log fit per thickness
    # the paper's 0.422 (HVL 0.8 mm Al, 4.5 cm) comes out of the extrapolation within 4 %
    assert g_factor(0.8, 45.0) == pytest.approx(0.422, rel=0.04)
    thicknesses = np.linspace(15.0, 120.0, 30)
    assert np.all(np.diff([g_factor(0.8, t) for t in thicknesses]) < 0)  # thicker: less per kerma
    hvls = np.linspace(0.25, 1.0, 30)
    assert np.all(np.diff([g_factor(h, 45.0) for h in hvls]) > 0)  # harder: more per kerma


@pytest.mark.slow
def test_mean_glandular_dose_of_the_papers_protocol():
    assert dose_rate_mgy_per_s(PAPER, 40.0, 70.0) == pytest.approx(0.89, abs=0.03)
    assert dose_rate_mgy_per_s(PAPER, 40.0, 70.0, 45.0) == dose_rate_mgy_per_s(PAPER, 40.0, 70.0)
    assert planned_dose_mgy(PAPER, 40.0, 70.0, 9 * 9.0) == pytest.approx(72.0, abs=2.0)
    assert dose_rate_mgy_per_s(PAPER, 40.0, 35.0) == pytest.approx(dose_rate_mgy_per_s(PAPER, 40.0, 70.0) / 2)
    # other kV: the simulated spectrum's relative kerma and HVL (both rise with kV)
    assert dose_rate_mgy_per_s(PAPER, 35.0, 70.0) < dose_rate_mgy_per_s(PAPER, 40.0, 70.0) < \
        dose_rate_mgy_per_s(PAPER, 45.0, 70.0)
    with pytest.raises(ValueError, match="thickness_mm=-1"):
        dose_rate_mgy_per_s(PAPER, 40.0, 70.0, -1.0)


@pytest.mark.slow
def test_a_paraffin_block_is_labelled_by_the_reference_breast(RE, tmp_path):
    instrument = simulated_instrument(small_config(rows=32, cols=32), write_path=tmp_path / "raw")
    documents = validated_documents(RE)
    RE(darkfield_projection(instrument, dark_frames=1, sample={"id": "paraffin-10", "thickness_mm": 10.0}))
    start = next(doc for name, doc in documents if name == "start")
    assert start["sample"]["thickness_mm"] == 10.0  # recorded, not used for the dose
    assert start["planned_dose_mgy"] == pytest.approx(planned_dose_mgy(PAPER, 40.0, 70.0, 81.0), rel=1e-6)
    assert start["planned_dose_mgy"] == pytest.approx(72.0, abs=2.0)


@pytest.mark.parametrize("field, value, message", [
    ("air_kerma_mgy_per_s", -2.1, "dose.air_kerma_mgy_per_s: must be in"),
    ("hvl_mm_al", 80.0, "dose.hvl_mm_al: must be in"),
    ("glandularity", 0.3, "dose.glandularity: must be in"),
    ("reference_thickness_mm", 0.0, "dose.reference_thickness_mm: must be in"),
    ("output_factor", -2.81, "source.output_factor: must be in"),
])
def test_bad_beam_and_dose_values_are_named(tmp_path, field, value, message):
    from acquisition.config import default_config_dir

    text = (default_config_dir() / "instrument.yaml").read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith(f"{field}:"))
    bad = tmp_path / "instrument.yaml"
    bad.write_text(text.replace(line, f"  {field}: {value}"))
    with pytest.raises(ConfigError, match=message):
        load_config(bad)
