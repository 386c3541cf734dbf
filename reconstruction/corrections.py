"""Corrections around the retrieval: references interpolated in time, global drift of the
fringe phase and intensity, and the low-count bias of the visibility.

- Several reference scans taken before and after the sample (times in s) are interpolated
  linearly to the sample's time: a0 and the complex first harmonic a1*exp(i*phi).
- A global drift between reference and sample (the fringe phase creeping with the
  temperature of the gratings, the tube output changing) shifts dphi and scales T over the
  whole field; an object-free region of the image measures both and they are removed.
- At low counts the fitted amplitude is biased up (Rice distribution): E[a1^2] = a1^2 +
  4*var/n for n steps of per-step variance var (Revol et al. 2010), E[a1] ~ a1 +
  sigma^2/(2*a1) with sigma^2 = 2*var/n per harmonic component.  With a known noise gain
  (variance per unit of signal) the amplitude is replaced by its Rice posterior mean
  (``noise.rice_amplitude``), never zero.  The earlier sqrt(max(a1^2 - 4*var/n, 0))
  over-corrected by the same sigma^2/(2*a1) and gave a1 = 0 (eps infinite) at low counts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .noise import amplitude_sigma, check_noise_model, rice_amplitude
from .retrieval import Retrieval
from .stepping import SteppingFit, wrap_phase


def interpolate_reference(fits: list[SteppingFit], times_s, time_s: float) -> SteppingFit:
    """The reference at ``time_s`` from fits taken at ``times_s`` (linear in time, clamped)."""
    times = np.asarray(times_s, dtype=np.float64)
    if len(fits) != times.size or times.size == 0:
        raise ValueError(f"{len(fits)} reference fits but {times.size} times")
    if times.size > 1 and np.any(np.diff(times) <= 0):
        raise ValueError(f"reference times must increase, got {times.tolist()}")
    if times.size == 1 or time_s <= times[0]:
        return fits[0]
    if time_s >= times[-1]:
        return fits[-1]
    k = int(np.searchsorted(times, time_s)) - 1
    w = (time_s - times[k]) / (times[k + 1] - times[k])
    before, after = fits[k], fits[k + 1]
    a0 = (1 - w) * before.a0 + w * after.a0
    harmonic = ((1 - w) * before.a1 * np.exp(1j * before.phi)
                + w * after.a1 * np.exp(1j * after.phi))
    return SteppingFit(a0=a0, a1=np.abs(harmonic), phi=wrap_phase(np.angle(harmonic)))


def correct_drift(result: Retrieval, free_region: np.ndarray) -> tuple[Retrieval, float, float]:
    """Remove a global fringe-phase offset and intensity scale measured where there is no
    object (``free_region``: boolean mask).  Returns the corrected result, the phase
    offset (rad) and the intensity scale that were removed."""
    free = np.asarray(free_region, dtype=bool)
    if free.shape != result.transmission.shape:
        raise ValueError(f"free_region is {free.shape}, the images {result.transmission.shape}")
    phase = result.differential_phase[free]
    scale_values = result.transmission[free]
    usable = np.isfinite(phase) & np.isfinite(scale_values)
    if usable.sum() < 10:
        raise ValueError("free_region holds fewer than 10 valid pixels: cannot measure the drift")
    offset = float(np.angle(np.mean(np.exp(1j * phase[usable]))))
    scale = float(np.median(scale_values[usable]))
    if not scale > 0:
        raise ValueError(f"the object-free region has transmission {scale}: no beam there")
    transmission = result.transmission / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        absorption = -np.log(np.where(transmission > 0, transmission, np.nan))
    corrected = dataclasses.replace(
        result, transmission=transmission, absorption=absorption,
        differential_phase=wrap_phase(result.differential_phase - offset).astype(
            result.differential_phase.dtype))
    return corrected, offset, scale


def debias_amplitude(fit: SteppingFit, n_steps: int, noise_gain: float, *,
                     read_noise: float = 0.0) -> SteppingFit:
    """The fit with a1 replaced by its Rice posterior mean (low-count bias removed, never 0).

    Parameters
    ----------
    fit : SteppingFit
        A dark-subtracted stepping fit (a0, a1 in ADU).
    n_steps : int
        Number of equidistant phase steps of the scan (>= 3); each harmonic component then
        has variance ``2/n_steps`` times that of one step.
    noise_gain : float
        Variance of one raw frame per unit of its mean (ADU; for a photon counter 1, for an
        integrating panel the ADU per photon times the energy-spread and Swank factor).
    read_noise : float
        Signal-independent noise of one raw frame (ADU rms).

    Returns
    -------
    SteppingFit
        ``a1 = rice_amplitude(a1, sigma)`` with ``sigma = sqrt(2/n_steps * (noise_gain *
        max(a0, 0) + read_noise**2))`` (ADU, dtype of the input a1); a0 and phi unchanged.
        See :func:`reconstruction.noise.rice_amplitude`.
    """
    if n_steps < 3:
        raise ValueError(f"need n_steps >= 3 and noise_gain > 0, got {n_steps}, {noise_gain}")
    try:
        gain, read = check_noise_model(noise_gain, read_noise)
    except ValueError as err:
        raise ValueError(f"need n_steps >= 3 and noise_gain > 0, got {n_steps}, {noise_gain}: "
                         f"{err}") from None
    a1 = np.asarray(fit.a1)
    sigma = amplitude_sigma(np.asarray(fit.a0), 2.0 / n_steps, gain, read)
    return dataclasses.replace(fit, a1=rice_amplitude(a1, sigma).astype(a1.dtype, copy=False))
