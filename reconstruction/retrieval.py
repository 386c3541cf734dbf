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
from .stepping import SteppingFit, fit_named, step_positions, stepping_solver


@dataclass(frozen=True)
class Retrieval:
    """Sample relative to reference: T, V (visibility ratio), dphi (rad), mu = -ln T and
    eps = -ln V (NaN where T or V <= 0), and the two stepping fits (dark subtracted)."""

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


def _saturation_level(stack: np.ndarray, saturation):
    """The raw level that marks a pixel saturated: ``saturation``, or for an unsigned stack
    its largest value (65535 for a 16-bit panel); None: not checked."""
    if saturation is not None:
        return saturation
    if np.issubdtype(stack.dtype, np.unsignedinteger):
        return np.iinfo(stack.dtype).max
    return None


def retrieve(sample, reference, dark=None, *, steps=None, reference_steps=None, period=None,
             saturation=None) -> Retrieval:
    """Transmission, dark-field, differential phase, mu and eps of a sample scan.

    ``sample``: raw (n_steps, ny, nx) stack; ``reference``: a raw stack (without sample) or
    an already dark-corrected :class:`SteppingFit`; ``dark``: None, a 2-D dark image or a
    3-D stack of dark frames (averaged), subtracted from every raw step of sample and
    reference.  ``steps``: the sample's G2 positions in the unit of ``period``;
    ``reference_steps``: the reference's (default: ``steps``).  See :func:`fit_stepping`.
    Pixels that saturate in any raw frame (``saturation``, default the maximum of an
    unsigned integer stack) are NaN in every output: hot pixels, overexposure.
    The sample is read once, in cache-sized blocks on all cores (``kernels``).
    """
    sample = _stack(sample, "sample")
    frame_shape = sample.shape[1:]
    dark_image = _dark_image(dark, frame_shape)
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
        level = _saturation_level(reference, saturation)
        if level is not None:
            saturated_reference = reference.max(axis=0) >= level
    a0r = np.asarray(reference_fit.a0)
    if not np.any(np.isfinite(a0r) & (a0r > 0)):
        raise ValueError("reference has no pixel with a positive, finite mean intensity a0 "
                         "(zero, negative or NaN everywhere: no beam, or dark not matching)")
    if sample.shape[0] < 3 or not np.issubdtype(sample.dtype, np.number) or np.iscomplexobj(sample):
        fit_named(sample, steps, period, stack_name="sample")  # raises the named error
    positions, period = step_positions(sample.shape[0], steps, period)
    solver = stepping_solver(positions, period)
    dtype = work_dtype(sample)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference_visibility = (np.asarray(reference_fit.a1) / a0r).astype(dtype, copy=False)
    out = retrieve_blocks(sample, solver, dark_image, a0r.astype(dtype, copy=False),
                          reference_visibility, np.asarray(reference_fit.phi).astype(dtype, copy=False),
                          saturated_reference, _saturation_level(sample, saturation))
    return Retrieval(
        transmission=out["transmission"],
        dark_field=out["dark_field"],
        differential_phase=out["differential_phase"],
        absorption=out["absorption"],
        scattering=out["scattering"],
        sample_fit=SteppingFit(a0=out["a0"], a1=out["a1"], phi=out["phi"]),
        reference_fit=reference_fit,
    )
