"""Phase-stepping fit: the per-pixel sinusoid of a G2 scan.

Model (Scherer et al., Sci Rep 6:36991, 2016; Pfeiffer et al. 2008): at G2 position x_k a
pixel reads ``I_k = a0 + a1*cos(2*pi*x_k/period + phi)``.  Written as
``a0 + c*cos(t_k) + s*sin(t_k)`` with ``t_k = 2*pi*x_k/period``, ``c = a1*cos(phi)`` and
``s = -a1*sin(phi)``, the fit is linear: the (3, n) pseudo-inverse of the design matrix at
the measured step positions is applied to every pixel at once, so non-equidistant steps
are exact and all pixels share one tiny solver.

The solver is applied in cache-sized blocks on all cores by ``kernels.fit_blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import fit_blocks

MAX_CONDITION = 100.0
"""Largest accepted condition number of the (n, 3) design matrix.  An equidistant scan over
one period has sqrt(2); steps spread over 10 % of the period reach ~100, where the noise of
a1 and phi is already amplified some 70-fold: such steps do not determine the sinusoid."""


@dataclass(frozen=True)
class SteppingFit:
    """Per-pixel stepping curve ``a0 + a1*cos(2*pi*x/period + phi)``.

    Attributes
    ----------
    a0 : numpy.ndarray
        Mean of the curve (input units, e.g. ADU), shape (ny, nx).
    a1 : numpy.ndarray
        Amplitude of the first harmonic, >= 0 (same unit).
    phi : numpy.ndarray
        Phase (rad, in (-pi, pi]).
    visibility : numpy.ndarray
        Property: ``a1/a0`` (dimensionless).
    """

    a0: np.ndarray
    a1: np.ndarray
    phi: np.ndarray

    @property
    def visibility(self) -> np.ndarray:
        """a1/a0 (NaN or inf where a0 is zero, without warnings)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.a1 / self.a0


def wrap_phase(phase) -> np.ndarray:
    """Angles wrapped to (-pi, pi].

    Parameters
    ----------
    phase : array_like
        Angles (rad), any shape.

    Returns
    -------
    numpy.ndarray
        float64 angles (rad) in (-pi, pi], equal to ``phase`` modulo 2*pi; -pi maps to pi.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import wrap_phase
    >>> print(np.round(wrap_phase([0.0, 4.0, -4.0, np.pi, -np.pi]), 3))
    [ 0.    -2.283  2.283  3.142  3.142]
    """
    wrapped = np.pi - np.mod(np.pi - np.asarray(phase, dtype=np.float64), 2 * np.pi)
    return np.where(wrapped <= -np.pi, wrapped + 2 * np.pi, wrapped)


def step_positions(n_steps: int, steps=None, period=None, *, name: str = "steps") -> tuple[np.ndarray, float]:
    """Checked G2 positions and period; default ``k*period/n_steps`` (period 1 if None)."""
    period = 1.0 if period is None else period
    try:
        period = float(period)
    except (TypeError, ValueError):
        raise ValueError(f"period must be a positive number, got {period!r}") from None
    if not np.isfinite(period) or period <= 0:
        raise ValueError(f"period must be a positive number, got {period}")
    if n_steps < 3:
        raise ValueError(f"need at least 3 phase steps to fit a0, a1 and phi, got {n_steps}")
    if steps is None:
        return np.arange(n_steps) * (period / n_steps), period
    positions = np.asarray(steps, dtype=np.float64)
    if positions.ndim != 1 or positions.size != n_steps:
        raise ValueError(
            f"{name} has {positions.size} positions (shape {positions.shape}) "
            f"for a stack of {n_steps} steps"
        )
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"{name} contains NaN or infinite positions")
    return positions, period


def stepping_solver(steps: np.ndarray, period: float, *, name: str = "steps") -> np.ndarray:
    """The (3, n) least-squares solver for (a0, c, s) at the given step positions."""
    t = 2 * np.pi * np.asarray(steps, dtype=np.float64) / period
    design = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    condition = np.linalg.cond(design)
    if not np.isfinite(condition) or condition > MAX_CONDITION:
        raise ValueError(
            f"{name} {np.round(steps, 6).tolist()} do not span the period {period:g} well enough "
            f"to determine the sinusoid (design-matrix condition number {condition:.3g} "
            f"> {MAX_CONDITION:g}); spread the steps over the whole period"
        )
    return np.linalg.pinv(design)


def fit_stepping(stack, steps=None, period=None) -> SteppingFit:
    """Fit ``I_k = a0 + a1*cos(2*pi*x_k/period + phi)`` per pixel of a phase-stepping scan.

    Parameters
    ----------
    stack : array_like
        Real (n_steps, ny, nx) stack, n_steps >= 3 (ADU, or any unit).
    steps : array_like of float, optional
        Measured G2 positions x_k (one per step, unit of ``period``, e.g. um); need not be
        equidistant.  Default: ``k*period/n_steps``, equidistant over one period.
    period : float, optional
        Period of the G2 grating in the unit of ``steps`` (e.g. um).  Default 1: ``steps``
        in periods.

    Returns
    -------
    SteppingFit
        a0, a1 (unit of ``stack``) and phi (rad) per pixel, float64 or float32.

    Raises
    ------
    ValueError
        If ``stack`` is not 3-D, not real or has fewer than 3 steps; if ``steps`` does not
        give one finite position per step; if ``period`` is not a positive number; if the
        steps do not span the period (design-matrix condition number > ``MAX_CONDITION``).

    Notes
    -----
    The phase-stepping model of Scherer et al., Sci Rep 6:36991 (2016), Methods, after
    Pfeiffer et al. (2008): a linear least-squares fit of ``a0 + c*cos(t) + s*sin(t)``,
    exact at measured, non-equidistant steps.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import fit_stepping
    >>> steps = np.array([0.0, 0.2, 0.45, 0.7])  # periods, not equidistant
    >>> curve = 100 + 20 * np.cos(2 * np.pi * steps + 0.5)
    >>> fit = fit_stepping(curve[:, None, None] * np.ones((1, 2, 2)), steps)
    >>> a0, a1, phi, v = fit.a0[0, 0], fit.a1[0, 0], fit.phi[0, 0], fit.visibility[0, 0]
    >>> print(f"{a0:.1f} {a1:.1f} {phi:.2f} {v:.2f}")
    100.0 20.0 0.50 0.20
    """
    return fit_named(stack, steps, period)


def fit_named(stack, steps=None, period=None, *, stack_name: str = "stack",
              steps_name: str = "steps") -> SteppingFit:
    """:func:`fit_stepping` whose errors name the caller's arguments."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"{stack_name} must have shape (n_steps, ny, nx), got shape {stack.shape}")
    if not np.issubdtype(stack.dtype, np.number) or np.iscomplexobj(stack):
        raise ValueError(f"{stack_name} must hold real numbers, got dtype {stack.dtype}")
    if stack.shape[0] < 3:
        raise ValueError(f"{stack_name} has {stack.shape[0]} phase steps; "
                         "need at least 3 to fit a0, a1 and phi")
    positions, period = step_positions(stack.shape[0], steps, period, name=steps_name)
    a0, a1, phi = fit_blocks(stack, stepping_solver(positions, period, name=steps_name))
    return SteppingFit(a0=a0, a1=a1, phi=phi)
