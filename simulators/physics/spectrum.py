"""The tube spectrum at the detector (spekpy) and the Gd2O2S screen's response.

spekpy gives the photon fluence per keV per mAs at 1 m of a tungsten/molybdenum anode for
a tube voltage, anode angle and filtration (Poludniowski et al. 2009; Bujila et al. 2020).
We add the air path, scale by the inverse square of the distance and by the tube's
``Source.output_factor`` (its measured output over spekpy's model).  The beam quality at
the sample is what a lab measures there: the incident air kerma behind G0 (mGy per mAs)
and the first half-value layer (mm Al), Scherer et al. 2016, Methods "Dose".  The detector
is an energy integrator: a photon absorbed in the screen adds a signal proportional to its
energy, so the frame is weighted by E times the absorbed fraction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import spekpy

from .interferometer import grating_mean_transmission
from .materials import mu_per_mm
from .setup import Detector, Geometry, Gratings, Source

SCREEN_PACKING = 0.5
"""Volume fraction of Gd2O2S in the phosphor layer (the rest is binder and voids)."""
MIN_WEIGHT = 1e-4
"""Energy bins carrying less than this fraction of the signal are dropped."""


@dataclass(frozen=True)
class Spectrum:
    """Photons reaching the detector plane per mm^2 per mAs in 1 keV bins, and their weight."""

    energies_kev: np.ndarray
    photons_per_mm2_mas: np.ndarray
    """Fluence at the detector without gratings or sample."""
    absorbed_fraction: np.ndarray
    """Fraction of the photons the screen absorbs at each energy."""

    @property
    def signal_weight(self) -> np.ndarray:
        """Relative energy deposited per bin (sums to 1): fluence * E * absorption."""
        w = self.photons_per_mm2_mas * self.energies_kev * self.absorbed_fraction
        return w / w.sum()

    @property
    def mean_absorbed_kev(self) -> float:
        """Mean energy (keV) of an absorbed photon."""
        n = self.photons_per_mm2_mas * self.absorbed_fraction
        return float((n * self.energies_kev).sum() / n.sum())

    def absorbed_photons_per_mm2_mas(self, transmission: np.ndarray | float = 1.0) -> float:
        """Photons absorbed in the screen per mm^2 per mAs behind a spectral transmission."""
        return float((self.photons_per_mm2_mas * self.absorbed_fraction * transmission).sum())


@functools.lru_cache(maxsize=16)
def spectrum_at_detector(kv: float, source: Source, geometry: Geometry, detector: Detector) -> Spectrum:
    """The spectrum at the detector for a tube voltage ``kv`` (kV)."""
    energies, per_cm2 = _filtered(float(kv), source).get_spectrum(flu=True)  # per cm^2 mAs keV at 1 m
    distance_m = geometry.source_detector_mm / 1000.0
    photons = source.output_factor * per_cm2 / 100.0 / distance_m**2  # per mm^2 per mAs, 1 keV bin
    photons = photons * np.exp(-mu_per_mm("air", energies) * geometry.source_detector_mm)
    screen_mm = detector.scintillator_um / 1000.0 * SCREEN_PACKING
    absorbed = 1.0 - np.exp(-mu_per_mm("gadolinium_oxysulfide", energies) * screen_mm)
    spectrum = Spectrum(np.asarray(energies, float), photons, absorbed)
    keep = spectrum.signal_weight > MIN_WEIGHT
    return Spectrum(spectrum.energies_kev[keep], photons[keep], absorbed[keep])


def _filtered(kv: float, source: Source, air_mm: float = 0.0) -> spekpy.Spek:
    """spekpy's model of the tube at ``kv`` (kV) behind the filtration and ``air_mm`` of air."""
    spek = spekpy.Spek(kvp=kv, th=source.anode_angle_deg, targ=source.target, dk=1.0)
    for material, thickness_mm in source.filtration:
        spek.filter(material, thickness_mm)
    if air_mm > 0:
        spek.filter("Air", air_mm)
    return spek


@functools.lru_cache(maxsize=64)
def air_kerma_reference(kv: float, source: Source, distance_mm: float) -> float:
    """Free-in-air kerma (mGy per mAs) at ``distance_mm`` from the focal spot, through the
    filtration and the air, times ``source.output_factor`` (no grating in the beam)."""
    spek = _filtered(float(kv), source, distance_mm)
    return source.output_factor * spek.get_kerma() / 1000.0 / (distance_mm / 1000.0) ** 2


@functools.lru_cache(maxsize=64)
def incident_air_kerma(kv: float, source: Source, geometry: Geometry, gratings: Gratings) -> float:
    """Incident air kerma (mGy per mAs) at the sample, behind G0: the free-in-air kerma times
    G0's mean transmission (open slits and the gold bars' leak) weighted by the kerma spectrum
    (spekpy's mu_en/rho of air).  This is what the paper measured, 2.1 mGy/s at 70 mA."""
    spek = _filtered(float(kv), source, geometry.source_sample_mm)
    energies, fluence = spek.get_spectrum(flu=True)
    kerma = fluence * energies * spek.muen_air_data.get_muen_over_rho_air(energies)
    g0 = grating_mean_transmission(energies, gratings.g0_gold_um, gratings.duty_cycle)
    return air_kerma_reference(kv, source, geometry.source_sample_mm) * float((kerma * g0).sum() / kerma.sum())


@functools.lru_cache(maxsize=64)
def half_value_layer_mm_al(kv: float, source: Source, distance_mm: float) -> float:
    """First half-value layer (mm Al) of the free beam at ``distance_mm`` (spekpy
    ``get_hvl1``, narrow beam).  G0's gold leak hardens it by about 0.01 mm more (docs)."""
    return float(_filtered(float(kv), source, distance_mm).get_hvl1())
