"""The fringe model against an independent wave-optics calculation (issue 14, part 2).

``interferometer.fringe_harmonic`` (Fourier coefficients of an ideal pi/2 G1, G0 and G2 as
harmonic ratios) against ``wave_optics.wave_fringe`` (sampled silicon G1 from xraydb,
angular-spectrum propagation, incoherent sum over G0 point sources, a stepped G2).  Both
give G1's bars the physical phase -k delta h (the model had +phi until this check found
it: at duty cycles other than 0.5 that described the complementary grating).
"""

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

from simulators.physics import Setup
from simulators.physics.interferometer import (
    fringe_harmonic,
    grating_mean_transmission,
    wavelength_um,
)
from simulators.physics.materials import mu_per_mm
from simulators.physics.scene import scene
from simulators.physics.wave_optics import g1_height_um, wave_fringe, wave_harmonic

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "thickness_table.py"
SETUP = Setup()
GEOMETRY, GRATINGS = SETUP.geometry, SETUP.gratings
ENERGIES = np.arange(12.0, 40.5, 1.0)


def load_script():
    spec = importlib.util.spec_from_file_location("thickness_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return load_script()


def test_g1_height_gives_pi_half_at_27_kev():
    # about 17 um of silicon: lambda / (4 delta) with delta(27 keV) = 6.6e-7
    assert g1_height_um(GRATINGS) == pytest.approx(17.3, abs=0.2)


def test_with_the_models_assumptions_the_wave_optics_is_the_model():
    """Ideal G1 (no absorption, phase 1/E): the numerics agree to 1e-3 in absolute
    harmonic (0.2 % of the 27 keV value) at every energy, both signs, through the zero."""
    model = fringe_harmonic(ENERGIES, GEOMETRY, GRATINGS)
    wave = wave_fringe(ENERGIES, GEOMETRY, GRATINGS, ideal_g1=True).harmonic
    assert np.max(np.abs(wave - model)) < 1e-3
    assert np.all(np.abs(wave.imag) < 1e-6)


@pytest.mark.slow
def test_real_silicon_g1_departs_by_at_most_0_016():
    """xraydb's silicon: G1 absorbs (8 % in intensity at 12 keV, 0.8 % at 27 keV) and its
    phase follows delta(E) within 1 % of 1/E.  The harmonic moves by at most 0.016 (at
    13-15 keV, where it is near its 13.5 keV zero), 0.005 from 17 keV on (the Mo lines
    and above) and 0.002 from 24 keV on: both signs are kept, the zero moves 0.03 keV."""
    model = fringe_harmonic(ENERGIES, GEOMETRY, GRATINGS).real
    wave = wave_harmonic(ENERGIES, GEOMETRY, GRATINGS).real
    difference = np.abs(wave - model)
    assert difference.max() < 0.016
    assert difference[ENERGIES >= 17].max() < 0.005
    assert difference[ENERGIES >= 24].max() < 0.002
    assert difference.max() > 0.005  # a real departure, not numerics
    strong = np.abs(model) > 0.05
    assert np.all(np.sign(wave[strong]) == np.sign(model[strong]))
    assert np.all(wave[(ENERGIES > 14) & (ENERGIES < 20.3)] < 0)  # the Mo K lines' fringes
    assert np.all(wave[(ENERGIES > 20.4)] > 0)  # the design energy's
    u2 = 27.0 * (wavelength_um(27.0) * 1e3 * GEOMETRY.g0_g1_mm * GEOMETRY.g1_g2_mm
                 / (GEOMETRY.g0_g1_mm + GEOMETRY.g1_g2_mm) / GRATINGS.g1_period_um**2) / 2
    model_zero = brentq(lambda e: fringe_harmonic([e], GEOMETRY, GRATINGS)[0].real, 19.5, 21.5)
    wave_zero = brentq(lambda e: wave_harmonic([e], GEOMETRY, GRATINGS)[0].real, 19.5, 21.5)
    assert model_zero == pytest.approx(u2, abs=0.01)  # lambda z / p1^2 = 2
    assert wave_zero - model_zero == pytest.approx(0.03, abs=0.015)


def test_mean_behind_the_gratings_is_g0_g1_g2_mean_transmission():
    """The incoherent sum keeps intensity: the mean is G0's and G2's mean transmission
    times G1's (bars absorb), which the model's mean leaves out (up to 4 % at 12 keV).
    Nine steps alias the 9th harmonics of fringe and G2 into the mean: 0.1 % at most."""
    wave = wave_fringe(ENERGIES, GEOMETRY, GRATINGS)
    g1_bars = np.exp(-mu_per_mm("silicon", ENERGIES) * g1_height_um(GRATINGS) / 1000.0)
    g1_mean = GRATINGS.duty_cycle * g1_bars + 1 - GRATINGS.duty_cycle
    expected = (grating_mean_transmission(ENERGIES, GRATINGS.g0_gold_um, GRATINGS.duty_cycle)
                * grating_mean_transmission(ENERGIES, GRATINGS.g2_gold_um, GRATINGS.duty_cycle) * g1_mean)
    assert wave.mean == pytest.approx(expected, rel=2e-3)
    assert 0.95 < g1_mean.min() < 0.97


@pytest.mark.slow
def test_spectrum_weighted_visibility_agrees_to_half_a_percent(table):
    """The open-beam visibility the engine forms from the spectrum, with either harmonic."""
    def open_beam():
        view = scene(table.SETUP, None, (0.0, 0.0), 40.0)
        return complex(view.harmonic[100, 200] / view.mean[100, 200])

    model = open_beam()
    with table.fringe_model(wave_harmonic):
        wave = open_beam()
    assert 0.15 < abs(model) < 0.4
    assert abs(wave) == pytest.approx(abs(model), rel=0.005)
    assert wave.real * model.real > 0  # one sign convention: the physical one


@pytest.mark.slow
def test_the_thickness_shift_comes_from_the_sign_change_not_from_the_fringe_model(table):
    """R in 45 mm breast over R in 10 mm paraffin, per class (untextured slabs, the same
    12 clusters): the wave-optics harmonic gives the model's ratios within 0.01; without
    the sign change at 20 keV (|harmonic|) the shift of R is less than half as large."""
    def ratios(harmonic):
        with table.fringe_model(harmonic):
            paraffin = table.ratios_per_class("paraffin10", seed=1, uniform=True)
            breast = table.ratios_per_class("breast45", seed=1, uniform=True)
        return {t: np.mean(breast[t]) / np.mean(paraffin[t]) for t in paraffin}

    model = ratios(fringe_harmonic)
    wave, achromatic = ratios(wave_harmonic), ratios(table.achromatic_harmonic)
    for texture in model:
        assert model[texture] < 0.9  # beyond the paper's +-10 %: the effect the issue is about
        assert wave[texture] == pytest.approx(model[texture], abs=0.01)
        assert abs(1 - achromatic[texture]) < 0.5 * abs(1 - model[texture])


@pytest.mark.slow
def test_thickness_table_script_prints_every_tissue_and_class():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "mm" in line]
    assert [r.split("|")[1].strip() for r in rows] == [
        "paraffin 10 mm", "breast 10 mm", "breast 20 mm", "breast 30 mm", "breast 45 mm", "breast 60 mm"]
    assert rows[0].count("(1.00)") == 4
    assert "nan" not in out


@pytest.mark.parametrize("kwargs, field", [
    ({"energies_kev": [-1.0]}, "energies_kev"),
    ({"energies_kev": [20.0], "steps": 2}, "steps"),
    ({"energies_kev": [20.0], "steps": 7}, "samples"),
])
def test_bad_input_names_the_argument(kwargs, field):
    energies = kwargs.pop("energies_kev")
    with pytest.raises(ValueError, match=field):
        wave_fringe(energies, GEOMETRY, GRATINGS, **kwargs)


@pytest.mark.parametrize("duty", [0.4, 0.6])
def test_the_models_g1_phase_has_the_physical_sign(duty):
    """At a duty cycle other than 0.5 a G1 and its complement (bars and gaps swapped) give
    different fringes: the model matches the wave optics's physical -k delta h within 0.004
    (edge sampling), and the opposite sign (the model's old +phi) would not."""
    gratings = dataclasses.replace(GRATINGS, duty_cycle=duty)
    turned = dataclasses.replace(gratings, g1_phase_shift_pi=-GRATINGS.g1_phase_shift_pi)
    energies = ENERGIES[::2]
    wave = wave_fringe(energies, GEOMETRY, gratings, ideal_g1=True).harmonic
    assert np.max(np.abs(wave - fringe_harmonic(energies, GEOMETRY, gratings))) < 0.004
    assert np.max(np.abs(np.abs(wave) - np.abs(fringe_harmonic(energies, GEOMETRY, turned)))) > 0.1


def test_a_g1_without_phase_shift_is_refused():
    flat = dataclasses.replace(GRATINGS, g1_phase_shift_pi=0.0)
    with pytest.raises(ValueError, match="g1_phase_shift_pi"):
        wave_fringe([27.0], GEOMETRY, flat)
