"""The Talbot-Lau interferometer per energy: fringe harmonic, visibility, autocorrelation length.

Wave optics of the binary phase grating G1 (phase shift ``g1_phase_shift_pi`` * pi at the
design energy, scaling as 1/E): its Fourier coefficients propagated by Fresnel diffraction
over the G1-G2 distance give the fringe's first harmonic relative to the mean.  In the cone
beam from a G0 slit at distance l, a fringe at distance d is the plane-wave pattern at
z = l*d/(l+d), magnified by (l+d)/l (Weitkamp et al., Opt. Express 13:6296, 2005).  The
source grating G0 (slits of width duty*p0, projected onto G2 by d/l) and the analyser G2
each multiply the measured first harmonic by their own first-harmonic/mean ratio, with
gold bars of finite height transmitting a little (xraydb).
"""

from __future__ import annotations

import numpy as np

from .materials import mu_per_mm
from .setup import Geometry, Gratings

HARMONICS = 40
"""Diffraction orders kept in the Fresnel sum (+-HARMONICS)."""


def wavelength_um(energies_kev) -> np.ndarray:
    """Wavelength (um) of photons of the given energies (keV): 1.23984 nm keV / E."""
    return 1.23984e-3 / np.asarray(energies_kev, dtype=float)


def autocorrelation_length_um(energies_kev, geometry: Geometry, gratings: Gratings) -> np.ndarray:
    """xi = lambda * d_eff / p2 (um) for a sample upstream of G1.

    d_eff = d_G1G2 * (G0-sample distance) / (G0-G1 distance): the G0 slits are the
    interferometer's sources (Donath et al. 2009; Strobl 2014).  About 5 um at 27 keV here.
    """
    g0_sample_mm = geometry.g0_g1_mm - geometry.sample_g1_mm
    d_eff_um = geometry.g1_g2_mm * 1e3 * g0_sample_mm / geometry.g0_g1_mm
    return wavelength_um(energies_kev) * d_eff_um / gratings.g2_period_um


def _binary_harmonic_ratio(bar_transmission: np.ndarray, duty: float) -> np.ndarray:
    """|g_1|/g_0 of a binary absorption grating (open fraction ``duty``): the factor by
    which it multiplies a fringe's first harmonic when the fringe is convolved with it."""
    first = (1 - bar_transmission) * np.sin(np.pi * duty) / np.pi
    mean = bar_transmission + duty * (1 - bar_transmission)
    return first / mean


def grating_mean_transmission(energies_kev, gold_um: float, duty: float) -> np.ndarray:
    """Mean intensity transmission of a gold absorption grating (G0 or G2)."""
    bars = np.exp(-mu_per_mm("gold", energies_kev) * gold_um / 1000.0)
    return bars + duty * (1 - bars)


def fringe_harmonic(energies_kev, geometry: Geometry, gratings: Gratings) -> np.ndarray:
    """Complex first harmonic of the stepping curve relative to its mean, per energy.

    Its modulus is the visibility an ideal detector measures behind G2 in the open beam,
    its argument the fringe phase at that energy (both vary with energy: a polychromatic
    beam averages them).
    """
    energies = np.asarray(energies_kev, dtype=float)
    phase = np.pi * gratings.g1_phase_shift_pi * gratings.design_energy_kev / energies
    n = np.arange(-HARMONICS, HARMONICS + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(n == 0, gratings.duty_cycle,
                        np.sin(np.pi * n * gratings.duty_cycle) / (np.pi * np.where(n == 0, 1, n)))
    # t(x) = 1 + (exp(-i phase) - 1) * rect(x): the bars retard the wave by k delta h
    # (n = 1 - delta, field exp(i k z), the propagator below); coefficients c_n per energy
    c = (np.exp(-1j * phase)[:, None] - 1) * sinc[None, :]
    c[:, HARMONICS] += 1.0
    l_mm, d_mm = geometry.g0_g1_mm, geometry.g1_g2_mm
    z_um = l_mm * d_mm / (l_mm + d_mm) * 1e3
    u = wavelength_um(energies) * z_um / gratings.g1_period_um**2
    # I_1 = sum_n c_n conj(c_{n-1}) exp(-i pi u (n^2 - (n-1)^2))
    propagator = np.exp(-1j * np.pi * u[:, None] * (2 * n[1:] - 1)[None, :])
    first = np.sum(c[:, 1:] * np.conj(c[:, :-1]) * propagator, axis=1)
    fringe = 2 * first  # the mean intensity behind a pure phase grating is exactly 1
    g0_bars = np.exp(-mu_per_mm("gold", energies) * gratings.g0_gold_um / 1000.0)
    g2_bars = np.exp(-mu_per_mm("gold", energies) * gratings.g2_gold_um / 1000.0)
    # G0's slit pattern, projected by d/l, has the period of the fringe (Lau condition)
    source = _binary_harmonic_ratio(g0_bars, gratings.duty_cycle)
    analyser = _binary_harmonic_ratio(g2_bars, gratings.duty_cycle)
    return fringe * source * analyser


def field_of_view_mm(geometry: Geometry, gratings: Gratings) -> tuple[float, float]:
    """The G2 active area projected onto the detector plane (height, width) in mm."""
    scale = geometry.source_detector_mm / (geometry.source_detector_mm - geometry.g2_detector_mm)
    return gratings.g2_field_mm[0] * scale, gratings.g2_field_mm[1] * scale
