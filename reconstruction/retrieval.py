"""Sample against reference: transmission, dark-field and differential phase (paper eq. 1).

``T = a0s/a0r``, ``V = (a1s/a0s)/(a1r/a0r)``, ``dphi = phi_s - phi_r`` wrapped to (-pi, pi],
absorption power ``mu = -ln T`` and scattering power ``eps = -ln V`` (Scherer et al.,
Sci Rep 6:36991, 2016, eq. 1).  Dark frames are subtracted from every raw step; because the
fit is linear and its basis holds the constant, that is done exactly on a0 after the fit,
which saves a float copy of each raw stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import retrieve_blocks, work_dtype
from .noise import (amplitude_sigma, check_noise_model, harmonic_variance_factor, rice_amplitude,
                    signal_floor)
from .stepping import SteppingFit, fit_named, step_positions, stepping_solver


@dataclass(frozen=True)
class Retrieval:
    """Sample relative to reference: T, V (visibility ratio), dphi (rad), mu = -ln T and
    eps = -ln V, and the two stepping fits (dark subtracted; with a noise model, the
    amplitudes a1 are the Rice posterior means).  All five images are NaN at invalid pixels
    (no signal above :func:`reconstruction.noise.signal_floor` in sample or reference, no
    fringes in the reference, saturated); mu and eps also where T or V <= 0.

    Attributes
    ----------
    transmission, dark_field : numpy.ndarray
        T = a0s/a0r and V = (a1s/a0s)/(a1r/a0r), float32 (ny, nx), no unit.
    differential_phase : numpy.ndarray
        dphi = phi_s - phi_r, rad, wrapped to (-pi, pi].
    absorption, scattering : numpy.ndarray
        mu = -ln T and eps = -ln V (Scherer et al. 2016, eq. 1).
    sample_fit, reference_fit : SteppingFit
        The dark-subtracted stepping fits (a0, a1 in ADU, phi in rad)."""

    transmission: np.ndarray
    dark_field: np.ndarray
    differential_phase: np.ndarray
    absorption: np.ndarray
    scattering: np.ndarray
    sample_fit: SteppingFit
    reference_fit: SteppingFit


def _stack(value, name: str) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim != 3:
        raise ValueError(f"{name} must be a raw stack of shape (n_steps, ny, nx), got shape {value.shape}")
    return value


def _dark_image(dark, frame_shape: tuple[int, int]) -> np.ndarray | None:
    """The mean dark image (2-D, float64), or None."""
    if dark is None:
        return None
    dark = np.asarray(dark, dtype=np.float64)
    if dark.ndim == 3:
        if dark.shape[0] == 0:
            raise ValueError("dark is an empty stack of dark frames")
        dark = dark.mean(axis=0)
    if dark.ndim != 2:
        raise ValueError(f"dark must be None, a 2-D image or a 3-D stack of frames, got shape {dark.shape}")
    if dark.shape != frame_shape:
        raise ValueError(f"dark frames are {dark.shape}, the sample frames {frame_shape}")
    return dark


def _minus_dark(fit: SteppingFit, dark: np.ndarray | None) -> SteppingFit:
    return fit if dark is None else SteppingFit(a0=fit.a0 - dark, a1=fit.a1, phi=fit.phi)


def _negative_log(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(np.where(values > 0, values, np.nan))


def _has_signal(a0: np.ndarray) -> bool:
    """Whether any pixel of ``a0`` is positive and finite: a sparse grid first (one such
    pixel settles it, ~10 us), the whole image only if the grid has none."""
    for grid in (a0[::32, ::32], a0):
        if np.any((grid > 0) & (grid < np.inf)):  # False for NaN
            return True
    return False


def _saturation_level(stack: np.ndarray, saturation):
    """The raw level that marks a pixel saturated: ``saturation``, or for an unsigned stack
    its largest value (65535 for a 16-bit panel); None: not checked."""
    if saturation is not None:
        return saturation
    if np.issubdtype(stack.dtype, np.unsignedinteger):
        return np.iinfo(stack.dtype).max
    return None


def retrieve(sample, reference, dark=None, *, steps=None, reference_steps=None, period=None,
             saturation=None, noise_gain=None, read_noise=0.0) -> Retrieval:
    """Transmission, dark-field, differential phase, mu and eps of a sample scan.

    The sample is read once, by the fused numba kernel on all cores, or without numba (or
    with ``TALBOT_LAU_KERNEL=numpy``) by the blocked numpy path (``kernels``): same numbers
    to float32 rounding.

    Parameters
    ----------
    sample : array_like
        Raw (n_steps, ny, nx) stack (ADU).
    reference : array_like or SteppingFit
        A raw stack without sample, or an already dark-corrected :class:`SteppingFit`
        (used as given: debias a noisy one with
        :func:`reconstruction.corrections.debias_amplitude` first).
    dark : array_like, optional
        None, a 2-D dark image or a 3-D stack of dark frames (averaged), ADU, subtracted
        from every raw step of sample and reference.
    steps, reference_steps, period :
        The sample's and the reference's G2 positions in the unit of ``period``
        (``reference_steps`` defaults to ``steps``); see :func:`fit_stepping`.
    saturation : float, optional
        Raw level (ADU) marking a pixel saturated in any frame; default the maximum of an
        unsigned integer stack (65535 for 16 bit).  Saturated pixels (hot pixels,
        overexposure) are NaN in every output.
    noise_gain : float, optional
        Variance of one raw frame per unit of its dark-subtracted mean (ADU; 1 for a photon
        counter, for an integrating panel the ADU per photon times the energy-spread and
        Swank factor).  Given, the amplitudes of the sample and of a raw reference are
        replaced by their Rice posterior means (:func:`reconstruction.noise.rice_amplitude`),
        which removes the low-count bias of V and never gives V <= 0.  None (default): the
        plain fitted amplitudes, no extra cost.
    read_noise : float
        Signal-independent noise of one raw frame (ADU rms), used with ``noise_gain``.

    Returns
    -------
    Retrieval
        T, V, dphi (rad), mu, eps as 2-D images.  A pixel is invalid, NaN in all five,
        unless the dark-subtracted a0 of sample and reference both exceed
        :func:`reconstruction.noise.signal_floor` (1e-3 of the reference's median a0): a
        dead pixel at the dark level leaves only float round-off (~1e-5 ADU) after dark
        subtraction and would otherwise read T = V = 1.  Also NaN: reference without
        fringes (a1 = 0), saturated pixels.

    Raises
    ------
    ValueError
        Naming the argument: ``sample``, ``reference`` or ``dark`` not a stack (or image)
        of the sample's frame shape, ``reference_steps`` given with a fitted reference,
        ``steps``/``period`` that do not fit the stacks, or a reference with no signal.

    Notes
    -----
    T = a0s/a0r, V = (a1s/a0s)/(a1r/a0r), dphi = phi_s - phi_r, mu = -ln T and
    eps = -ln V (Scherer et al., Sci Rep 6:36991 (2016), Methods and eq. 1).

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import retrieve
    >>> x = np.arange(9) / 9                      # G2 positions, in periods
    >>> curve = lambda a0, a1: a0 + a1 * np.cos(2 * np.pi * x)
    >>> reference = np.tile(curve(1000, 300)[:, None, None], (1, 2, 3))
    >>> sample = np.tile(curve(500, 75)[:, None, None], (1, 2, 3))
    >>> r = retrieve(sample, reference, steps=x, period=1.0)
    >>> print(f"T = {r.transmission[0, 0]:.3f}, V = {r.dark_field[0, 0]:.3f}")
    T = 0.500, V = 0.500
    >>> print(f"mu = {r.absorption[0, 0]:.3f}, eps = {r.scattering[0, 0]:.3f}")
    mu = 0.693, eps = 0.693
    """
    sample = _stack(sample, "sample")
    frame_shape = sample.shape[1:]
    dark_image = _dark_image(dark, frame_shape)
    noise_model = None if noise_gain is None else check_noise_model(noise_gain, read_noise)
    saturated_reference = None
    if isinstance(reference, SteppingFit):
        if reference_steps is not None:
            raise ValueError("reference_steps given, but reference is already a SteppingFit")
        reference_fit = reference
        if np.shape(reference_fit.a0) != frame_shape:
            raise ValueError(f"reference fit is {np.shape(reference_fit.a0)}, "
                             f"the sample frames {frame_shape}")
    else:
        reference = _stack(reference, "reference")
        if reference.shape[1:] != frame_shape:
            raise ValueError(f"reference frames are {reference.shape[1:]}, "
                             f"the sample frames {frame_shape}")
        if reference_steps is None:
            ref_steps, ref_name = steps, "steps"
        else:
            ref_steps, ref_name = reference_steps, "reference_steps"
        reference_fit = _minus_dark(fit_named(reference, ref_steps, period, stack_name="reference",
                                              steps_name=ref_name), dark_image)
        if noise_model is not None:
            factor = harmonic_variance_factor(stepping_solver(*step_positions(
                reference.shape[0], ref_steps, period)))
            sigma = amplitude_sigma(reference_fit.a0, factor, *noise_model)
            reference_fit = SteppingFit(a0=reference_fit.a0, phi=reference_fit.phi,
                                        a1=rice_amplitude(reference_fit.a1, sigma))
        level = _saturation_level(reference, saturation)
        if level is not None:
            saturated_reference = reference.max(axis=0) >= level
    a0r = np.asarray(reference_fit.a0)
    if not _has_signal(a0r):
        raise ValueError("reference has no pixel with a positive, finite mean intensity a0 "
                         "(zero, negative or NaN everywhere: no beam, or dark not matching)")
    if sample.shape[0] < 3 or not np.issubdtype(sample.dtype, np.number) or np.iscomplexobj(sample):
        fit_named(sample, steps, period, stack_name="sample")  # raises the named error
    positions, period = step_positions(sample.shape[0], steps, period)
    solver = stepping_solver(positions, period)
    noise = None if noise_model is None else (harmonic_variance_factor(solver), *noise_model)
    dtype = work_dtype(sample)
    out = retrieve_blocks(sample, solver, dark_image, a0r.astype(dtype, copy=False),
                          np.asarray(reference_fit.a1).astype(dtype, copy=False),
                          np.asarray(reference_fit.phi).astype(dtype, copy=False),
                          saturated_reference, _saturation_level(sample, saturation),
                          floor=signal_floor(a0r), noise=noise)
    return Retrieval(
        transmission=out["transmission"],
        dark_field=out["dark_field"],
        differential_phase=out["differential_phase"],
        absorption=out["absorption"],
        scattering=out["scattering"],
        sample_fit=SteppingFit(a0=out["a0"], a1=out["a1"], phi=out["phi"]),
        reference_fit=reference_fit,
    )
