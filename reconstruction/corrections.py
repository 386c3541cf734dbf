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
    """The reference at ``time_s`` from fits taken at ``times_s`` (linear in time, clamped).

    Parameters
    ----------
    fits : list of SteppingFit
        Reference fits, one per time.
    times_s : array_like of float
        Their times (s), increasing.
    time_s : float
        Time of the sample (s); before the first or after the last reference the nearest
        fit is returned as is.

    Returns
    -------
    SteppingFit
        a0 interpolated linearly, a1 and phi (rad) from the interpolated complex first
        harmonic ``a1*exp(i*phi)``.

    Raises
    ------
    ValueError
        If ``fits`` and ``times_s`` differ in length or are empty, or ``times_s`` does not
        increase.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import interpolate_reference
    >>> from reconstruction.stepping import SteppingFit
    >>> before = SteppingFit(a0=np.array([100.0]), a1=np.array([20.0]), phi=np.array([0.0]))
    >>> after = SteppingFit(a0=np.array([110.0]), a1=np.array([20.0]), phi=np.array([0.2]))
    >>> fit = interpolate_reference([before, after], [0.0, 60.0], 30.0)
    >>> print(fit.a0, np.round(fit.a1, 3), np.round(fit.phi, 3))
    [105.] [19.9] [0.1]
    """
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
    """Remove a global fringe-phase offset and intensity scale measured where there is no object.

    Parameters
    ----------
    result : Retrieval
        A retrieval (:func:`reconstruction.retrieve`).
    free_region : array_like of bool
        Object-free pixels, the shape of the images; at least 10 valid ones.

    Returns
    -------
    corrected : Retrieval
        T divided by the scale, mu recomputed, dphi minus the offset (rad, wrapped); V and
        eps unchanged.
    offset : float
        The phase offset removed (rad): circular mean of dphi over the free region.
    scale : float
        The intensity scale removed: median of T over the free region (fraction).

    Raises
    ------
    ValueError
        If ``free_region`` is not of the images' shape, holds fewer than 10 valid pixels,
        or its transmission is not positive.

    Examples
    --------
    A sample scan with no object whose fringe crept by 0.1 rad and whose tube output fell
    by 10 %:

    >>> import numpy as np
    >>> from reconstruction import correct_drift, retrieve
    >>> t = 2 * np.pi * np.arange(4)[:, None, None] / 4 + np.zeros((1, 4, 4))
    >>> reference = 1000 + 200 * np.cos(t)
    >>> drifted = retrieve(900 + 180 * np.cos(t + 0.1), reference)
    >>> corrected, offset, scale = correct_drift(drifted, np.ones((4, 4), bool))
    >>> print(f"{offset:.3f} {scale:.3f} {float(corrected.transmission[0, 0]):.3f} "
    ...       f"{abs(float(corrected.differential_phase[0, 0])):.3f}")
    0.100 0.900 1.000 0.000
    """
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

    Raises
    ------
    ValueError
        If ``n_steps < 3``, ``noise_gain`` is not a positive number or ``read_noise`` is
        negative (the message names the argument).

    Notes
    -----
    The bias ``E[a1^2] = a1^2 + 4*var/n`` of Revol et al. (2010); the Methods of Scherer et
    al., Sci Rep 6:36991 (2016) do not discuss it.

    Examples
    --------
    8 steps of a photon counter (gain 1) at a0 = 400 counts: sigma = sqrt(2/8 * 400) = 10.

    >>> import numpy as np
    >>> from reconstruction import debias_amplitude
    >>> from reconstruction.stepping import SteppingFit
    >>> fit = SteppingFit(a0=np.full(3, 400.0), a1=np.array([0.0, 10.0, 80.0]), phi=np.zeros(3))
    >>> print(np.round(debias_amplitude(fit, n_steps=8, noise_gain=1.0).a1, 2))
    [ 7.98 10.09 79.36]
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
