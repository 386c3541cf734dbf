"""Phase-stepping retrieval: per-pixel sinusoid fit and sample/reference signals.

Model (Scherer et al., Sci Rep 6:36991, 2016; Pfeiffer et al. 2008): at G2 position x_k
a pixel reads ``I_k = a0 + a1*cos(2*pi*x_k/period + phi)``.  Writing it as
``a0 + c*cos(t_k) + s*sin(t_k)`` with ``c = a1*cos(phi)``, ``s = -a1*sin(phi)`` makes the
fit linear: one small (3 x n) pseudo-inverse of the design matrix at the measured step
positions is applied to every pixel, so non-equidistant steps are exact.
Sample over reference: ``T = a0s/a0r``, ``V = (a1s/a0s)/(a1r/a0r)``,
``dphi = phi_s - phi_r`` wrapped to (-pi, pi]; ``mu = -ln T``, ``eps = -ln V`` (eq. 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CONDITION = 1e6
"""Steps whose design matrix is worse conditioned cannot determine the sinusoid."""
CHUNK_PIXELS = 1 << 16


@dataclass(frozen=True)
class SteppingFit:
    """Per-pixel stepping-curve parameters: mean a0, amplitude a1 >= 0, phase phi (rad)."""

    a0: np.ndarray
    a1: np.ndarray
    phi: np.ndarray

    @property
    def visibility(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.a1 / self.a0


@dataclass(frozen=True)
class Retrieval:
    """Sample relative to reference: T, V (visibility ratio), dphi (rad), mu and eps."""

    transmission: np.ndarray
    dark_field: np.ndarray
    differential_phase: np.ndarray
    absorption: np.ndarray
    scattering: np.ndarray
    sample_fit: SteppingFit
    reference_fit: SteppingFit


def step_positions(n_steps: int, steps=None, period=None) -> tuple[np.ndarray, float]:
    """The step positions and the period, checked: default ``k*period/n`` over one period."""
    if period is None:
        period = 1.0
    period = float(period)
    if not np.isfinite(period) or period <= 0:
        raise ValueError(f"period must be a positive number, got {period}")
    if n_steps < 3:
        raise ValueError(f"need at least 3 phase steps to fit a0, a1 and phi, got {n_steps}")
    if steps is None:
        return np.arange(n_steps) * period / n_steps, period
    steps = np.asarray(steps, dtype=np.float64)
    if steps.ndim != 1 or len(steps) != n_steps:
        raise ValueError(f"steps has {steps.size} positions for a stack of {n_steps} steps")
    if not np.all(np.isfinite(steps)):
        raise ValueError("steps contains NaN or infinite positions")
    return steps, period


def design_pseudo_inverse(steps: np.ndarray, period: float) -> np.ndarray:
    """The (3, n) least-squares solver for (a0, c, s) at the given step positions."""
    t = 2 * np.pi * steps / period
    design = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    condition = np.linalg.cond(design)
    if not np.isfinite(condition) or condition > MAX_CONDITION:
        raise ValueError(
            f"the steps {np.round(steps, 4).tolist()} do not span the period {period} well "
            "enough to determine the stepping curve (positions repeat modulo the period)"
        )
    return np.linalg.pinv(design)


def fit_stepping(stack, steps=None, period=None) -> SteppingFit:
    """Fit ``I_k = a0 + a1*cos(2*pi*x_k/period + phi)`` per pixel of an (n, ny, nx) stack."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"expected a stack of shape (n_steps, ny, nx), got shape {stack.shape}")
    x, period = step_positions(stack.shape[0], steps, period)
    solver = design_pseudo_inverse(x, period)
    n, ny, nx = stack.shape
    flat = stack.reshape(n, ny * nx)
    a0 = np.empty(ny * nx)
    c = np.empty(ny * nx)
    s = np.empty(ny * nx)
    for first in range(0, ny * nx, CHUNK_PIXELS):
        block = flat[:, first:first + CHUNK_PIXELS].astype(np.float64, copy=False)
        a0[first:first + CHUNK_PIXELS], c[first:first + CHUNK_PIXELS], s[first:first + CHUNK_PIXELS] = (
            solver @ block
        )
    a1 = np.hypot(c, s)
    phi = np.arctan2(-s, c)
    return SteppingFit(a0.reshape(ny, nx), a1.reshape(ny, nx), wrap(phi).reshape(ny, nx))


def wrap(phase: np.ndarray) -> np.ndarray:
    """Wrap angles (rad) to (-pi, pi]."""
    wrapped = np.angle(np.exp(1j * np.asarray(phase)))
    return np.where(wrapped <= -np.pi, wrapped + 2 * np.pi, wrapped)


def _subtract_dark(stack: np.ndarray, dark, name: str) -> np.ndarray:
    if dark is None:
        return stack
    dark = np.asarray(dark, dtype=np.float64)
    if dark.ndim == 3:
        dark = dark.mean(axis=0)
    if dark.shape != stack.shape[1:]:
        raise ValueError(f"dark has shape {dark.shape}, {name} frames have {stack.shape[1:]}")
    return stack.astype(np.float64) - dark


def retrieve(sample, reference, dark=None, *, steps=None, reference_steps=None, period=None) -> Retrieval:
    """Transmission, dark-field, differential phase, mu and eps of a sample against a reference.

    ``sample``: raw (n, ny, nx) stack; ``reference``: a raw stack or a :class:`SteppingFit`;
    ``dark``: None, a 2-D dark image or a stack of dark frames (averaged), subtracted from
    every raw frame; ``steps``/``reference_steps``: measured G2 positions (unit of ``period``).
    """
    sample = np.asarray(sample)
    if sample.ndim != 3:
        raise ValueError(f"sample must be a stack (n_steps, ny, nx), got shape {sample.shape}")
    sample_fit = fit_stepping(_subtract_dark(sample, dark, "sample"), steps, period)
    if isinstance(reference, SteppingFit):
        reference_fit = reference
    else:
        reference = np.asarray(reference)
        if reference.ndim != 3:
            raise ValueError(f"reference must be a stack or a SteppingFit, got shape {reference.shape}")
        reference_fit = fit_stepping(_subtract_dark(reference, dark, "reference"), reference_steps, period)
    if reference_fit.a0.shape != sample_fit.a0.shape:
        raise ValueError(
            f"reference frames are {reference_fit.a0.shape}, sample frames {sample_fit.a0.shape}"
        )
    usable = np.isfinite(reference_fit.a0) & (reference_fit.a0 > 0)
    if not usable.any():
        raise ValueError("reference has no pixel with a positive, finite mean intensity (a0)")
    with np.errstate(divide="ignore", invalid="ignore"):
        transmission = np.where(usable, sample_fit.a0 / reference_fit.a0, np.nan)
        dark_field = sample_fit.visibility / reference_fit.visibility
        absorption = -np.log(np.where(transmission > 0, transmission, np.nan))
        scattering = -np.log(np.where(dark_field > 0, dark_field, np.nan))
    phase = wrap(sample_fit.phi - reference_fit.phi)
    return Retrieval(transmission, dark_field, phase, absorption, scattering, sample_fit, reference_fit)
