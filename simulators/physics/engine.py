"""The physics engine's public functions: a detector frame from the state of the setup.

``simulate_frame`` is a pure function of (setup, phantom, G2 position, stage position,
tube state, exposure, seed) to a frame in ADU (DESIGN.md rule 1).  The expensive part,
the scene of a phantom at a stage position, is cached; each frame then costs one cosine
and one noise pass over the pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .phantom import Phantom
from .scene import bin_sum, scene
from .setup import Detector, Setup, TubeState


@dataclass(frozen=True)
class SampleSignals:
    """Noise-free truth relative to the open beam: what a perfect retrieval returns."""

    transmission: np.ndarray
    dark_field: np.ndarray
    differential_phase: np.ndarray


def detector_shape(setup: Setup) -> tuple[int, int]:
    """(rows, columns) of a frame after region and binning."""
    det = setup.detector
    rows, cols = (det.region[2], det.region[3]) if det.region else (det.rows, det.columns)
    return rows // det.binning, cols // det.binning


def sample_pixel_mm(setup: Setup) -> float:
    """Effective pixel (mm) at the sample plane after binning (0.0852 mm for the paper)."""
    return setup.detector.pixel_um * setup.detector.binning / 1000.0 / setup.geometry.magnification


def _stage(stage_mm) -> tuple[float, float]:
    return (round(float(stage_mm[0]), 4), round(float(stage_mm[1]), 4))


def _dark_level(setup: Setup, exposure_s: float, time_s: float = 0.0) -> float:
    """Offset (drifting slowly with recorded time) plus dark current, ADU."""
    det = setup.detector
    return (det.offset_adu + det.offset_drift_adu_per_h * time_s / 3600.0
            + det.dark_current_adu_per_s * exposure_s * det.binning**2)


@functools.lru_cache(maxsize=4)
def defect_map(detector: Detector) -> tuple[np.ndarray, np.ndarray]:
    """(dead, hot) pixel masks of the read-out region, fixed by ``defect_seed`` over the
    full frame so a region shows the same defects as the whole panel."""
    rng = np.random.default_rng(detector.defect_seed)
    kind = rng.random((detector.rows, detector.columns), dtype=np.float32)
    row0, col0, rows, cols = detector.region or (0, 0, detector.rows, detector.columns)
    kind = kind[row0:row0 + rows, col0:col0 + cols]
    half = detector.defect_fraction / 2
    dead, hot = kind < half, (kind >= half) & (kind < 2 * half)
    if detector.binning > 1:  # a binned pixel with a defect in it is defective
        dead, hot = (bin_sum(m.astype(np.int32), detector.binning) > 0 for m in (dead, hot))
    return dead, hot


def _beam(setup, phantom, g2_um, stage_mm, tube, exposure_s, time_s, rng=None) -> np.ndarray:
    """Expected signal ADU of the beam (no offset); with ``rng``, jitter and flux noise too."""
    ifm = setup.interferometer
    view = scene(setup, phantom, _stage(stage_mm), float(tube.kv))
    period = setup.gratings.g2_period_um
    x = g2_um + ifm.step_error_um * g2_um / period
    flux = 1.0
    if rng is not None:
        x += ifm.step_jitter_um * rng.standard_normal()
        flux += ifm.flux_fluctuation * rng.standard_normal()
    phase = 2 * np.pi * x / period + ifm.phase_drift_rad_per_s * time_s
    scale = tube.ma * exposure_s * max(flux, 0.0) * view.adu_per_photon
    rotated = view.harmonic * np.complex64(np.exp(1j * phase))
    return scale * (view.mean + rotated.real)


def expected_frame(setup: Setup, phantom: Phantom | None, *, g2_um: float, stage_mm, tube: TubeState,
                   exposure_s: float, time_s: float = 0.0) -> np.ndarray:
    """Noise-free mean frame (float64 ADU): offset, dark current and the beam if it is on."""
    dark = _dark_level(setup, exposure_s, time_s)
    if not tube.beam_on:
        return np.full(detector_shape(setup), dark)
    beam = _beam(setup, phantom, g2_um, stage_mm, tube, exposure_s, time_s)
    return np.minimum(beam.astype(np.float64) + dark, setup.detector.saturation_adu)


def simulate_frame(setup: Setup, phantom: Phantom | None, *, g2_um: float, stage_mm, tube: TubeState,
                   exposure_s: float, seed: int, time_s: float = 0.0,
                   previous_frame: np.ndarray | None = None) -> np.ndarray:
    """One detector frame (uint16 ADU) with quantum, Swank and read noise; same seed, same frame.

    Quantum noise: the absorbed photon count is Poisson (drawn as its normal limit, exact
    to far better than the read noise at these counts), widened by the energy spread of
    the absorbed photons and the Swank factor.  ``previous_frame`` (the last frame read
    out) adds ``lag_fraction`` of its signal; ``time_s`` (recorded seconds since the start)
    drives the offset and fringe-phase drifts.
    """
    det = setup.detector
    rng = np.random.default_rng(seed)
    shape = detector_shape(setup)
    dark = _dark_level(setup, exposure_s, time_s)
    frame = np.full(shape, dark, dtype=np.float32)
    if tube.beam_on:
        beam = _beam(setup, phantom, g2_um, stage_mm, tube, exposure_s, time_s, rng)
        if det.quantum_noise:
            view = scene(setup, phantom, _stage(stage_mm), float(tube.kv))
            per_photon = view.adu_per_photon * view.noise_factor
            beam = beam + np.sqrt(np.maximum(beam, 0) * per_photon) * rng.standard_normal(shape, np.float32)
        frame += beam
    if det.lag_fraction and previous_frame is not None:
        frame += np.float32(det.lag_fraction) * np.maximum(previous_frame.astype(np.float32) - dark, 0)
    if det.read_noise:
        frame += np.float32(det.read_noise_adu * det.binning) * rng.standard_normal(shape, np.float32)
    if det.defect_fraction:
        dead, hot = defect_map(det)
        frame[dead] = dark
        frame[hot] = det.saturation_adu
    return np.clip(np.rint(frame), 0, det.saturation_adu).astype(np.uint16)


def sample_signals(setup: Setup, phantom: Phantom | None, stage_mm, tube: TubeState) -> SampleSignals:
    """Transmission, dark-field (visibility ratio) and differential phase the sample causes."""
    kv = float(tube.kv)
    sample = scene(setup, phantom, _stage(stage_mm), kv)
    reference = scene(setup, None, (0.0, 0.0), kv)
    with np.errstate(divide="ignore", invalid="ignore"):
        transmission = sample.mean / reference.mean
        dark_field = (np.abs(sample.harmonic) / sample.mean) / (np.abs(reference.harmonic) / reference.mean)
    phase = np.angle(sample.harmonic * np.conj(reference.harmonic))
    return SampleSignals(transmission.astype(np.float64), dark_field.astype(np.float64),
                         phase.astype(np.float64))


def truth_labels(setup: Setup, phantom: Phantom | None, stage_mm) -> np.ndarray:
    """Int32 labels: i+1 where ``phantom.clusters[i]`` has calcium in the pixel, else 0."""
    if phantom is None:
        return np.zeros(detector_shape(setup), dtype=np.int32)
    return scene(setup, phantom, _stage(stage_mm), 40.0).labels


__all__ = ["SampleSignals", "bin_sum", "detector_shape", "expected_frame", "sample_pixel_mm",
           "sample_signals", "simulate_frame", "truth_labels"]
