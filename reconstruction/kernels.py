"""Kernels for the per-pixel stepping fit and retrieval: fused numba, or blocked numpy.

With numba importable (and ``$TALBOT_LAU_KERNEL`` not ``numpy``), the fit and the
retrieval run in one compiled pass over the raw stack (``fused_kernel``, imported on first
use).  Otherwise, the numpy path: the raw stack is read once, in blocks of rows that fit in
the CPU cache: each block is converted to floats, multiplied by the (3, n) least-squares
solver (BLAS) and turned into every output while it is still in cache.  Blocks run on a
thread pool (numpy and BLAS release the GIL), one thread per core, with BLAS itself
single-threaded meanwhile.  Both paths compute integer and float32 stacks in float32,
float64 stacks in float64 (exact to float64 precision on noise-free data), and agree to
float32 rounding.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .noise import amplitude_sigma, rice_amplitude

BLOCK_PIXELS = 1 << 15
"""Pixels per block: 9 steps of 32768 float32 pixels are 1.2 MB, about one L2 cache."""
_POOL = ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)),
                           thread_name_prefix="retrieval")


def work_dtype(stack: np.ndarray) -> np.dtype:
    """float64 for float64 input, float32 otherwise (uint16 panels, float32 files)."""
    return np.dtype(np.float64 if stack.dtype == np.float64 else np.float32)


def _row_blocks(ny: int, nx: int):
    rows = max(1, BLOCK_PIXELS // max(nx, 1))
    return [(first, min(first + rows, ny)) for first in range(0, ny, rows)]


def _run(function, ny: int, nx: int) -> None:
    blocks = _row_blocks(ny, nx)
    if len(blocks) == 1:
        function(*blocks[0])
        return
    # one BLAS thread per block: the pool already uses every core (BLAS threads on top of
    # it oversubscribe the cores and halve the speed)
    with threadpool_limits(limits=1, user_api="blas"):
        for future in [_POOL.submit(function, *block) for block in blocks]:
            future.result()


def _harmonics(stack, solver, first, last, dtype):
    """(a0, c, s) of rows first:last, each flat (pixels,) in ``dtype``."""
    n, _, nx = stack.shape
    raw = stack[:, first:last].reshape(n, (last - first) * nx)
    return solver.astype(dtype) @ raw.astype(dtype, copy=False)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Wrap angles in [-2 pi, 2 pi] (differences of two wrapped phases) to (-pi, pi], in place."""
    angle[angle > np.pi] -= 2 * np.pi
    angle[angle <= -np.pi] += 2 * np.pi
    return angle


KERNEL_VARIABLE = "TALBOT_LAU_KERNEL"
"""Environment variable forcing the kernel: ``numba`` or ``numpy`` (unset: numba if importable)."""


def fused_module():
    """The numba kernels (``reconstruction.fused_kernel``), or None without numba."""
    try:
        from . import fused_kernel
    except ImportError:
        return None
    return fused_kernel


def kernel_choice(kernel: str | None = None) -> str:
    """``"numba"`` or ``"numpy"``: ``kernel``, else ``$TALBOT_LAU_KERNEL``, else numba if importable."""
    source = "kernel" if kernel is not None else KERNEL_VARIABLE
    name = kernel if kernel is not None else os.environ.get(KERNEL_VARIABLE, "").strip().lower() or None
    if name not in (None, "numba", "numpy"):
        raise ValueError(f"{source} must be 'numba' or 'numpy', got {name!r}")
    if name == "numpy":
        return "numpy"
    if fused_module() is None:
        if name == "numba":
            raise ValueError(f"{source} is 'numba', but numba cannot be imported")
        return "numpy"
    return "numba"


def _fused(stack: np.ndarray, kernel: str | None):
    """The numba kernels if they are chosen and take this stack, else None."""
    if kernel_choice(kernel) == "numba" and fused_module().supports(stack):
        return fused_module()
    return None


def fit_blocks(stack: np.ndarray, solver: np.ndarray, kernel: str | None = None):
    """Per-pixel a0, a1 and phi of an (n, ny, nx) stack with a (3, n) solver."""
    _, ny, nx = stack.shape
    dtype = work_dtype(stack)
    fused = _fused(stack, kernel)
    if fused is not None:
        return fused.fit(np.ascontiguousarray(stack), solver, dtype)
    a0, a1, phi = (np.empty((ny, nx), dtype) for _ in range(3))

    def block(first, last):
        h = _harmonics(stack, solver, first, last, dtype)
        a0[first:last] = h[0].reshape(last - first, nx)
        a1[first:last] = np.sqrt(h[1] * h[1] + h[2] * h[2]).reshape(last - first, nx)
        phi[first:last] = np.arctan2(-h[2], h[1]).reshape(last - first, nx)

    _run(block, ny, nx)
    return a0, a1, phi


def retrieve_blocks(sample, solver, dark, reference_a0, reference_a1, reference_phi,
                    saturated_reference=None, saturation=None, floor=0.0, noise=None,
                    kernel=None):
    """Fit the sample and compare it with a fitted reference, block by block.

    Parameters
    ----------
    sample : numpy.ndarray
        Raw (n, ny, nx) stack.
    solver : numpy.ndarray
        (3, n) least-squares solver for (a0, c, s).
    dark : numpy.ndarray or None
        2-D dark image subtracted from a0 (ADU; None: none).
    reference_a0, reference_a1, reference_phi : numpy.ndarray
        The reference fit (dark subtracted), in the work dtype: mean and amplitude (ADU),
        phase (rad); its visibility a1/a0 is formed per pixel in the same dtype on both
        paths.
    saturated_reference : numpy.ndarray of bool, optional
        Pixels saturated in the raw reference.
    saturation : float, optional
        Pixels where any raw sample frame reaches it are invalid.
    floor : float
        Signal floor (ADU, :func:`reconstruction.noise.signal_floor`): a pixel is valid only
        where both the reference's and the sample's dark-subtracted a0 exceed it.
    noise : tuple of float, optional
        (factor, noise_gain, read_noise): replace the sample's amplitude by its Rice
        posterior mean (:func:`reconstruction.noise.rice_amplitude`) with
        ``sigma = amplitude_sigma(a0, factor, noise_gain, read_noise)``.
    kernel : {None, "numba", "numpy"}
        The fused numba kernel or the blocked numpy path (same numbers to float32
        rounding); None: ``$TALBOT_LAU_KERNEL``, else numba if importable.

    Returns
    -------
    dict of numpy.ndarray
        2-D a0, a1, phi (sample fit, dark subtracted), transmission, dark_field,
        differential_phase, absorption, scattering; T, V, dphi, mu and eps are NaN at
        invalid pixels.
    """
    _, ny, nx = sample.shape
    dtype = work_dtype(sample)
    names = ("a0", "a1", "phi", "transmission", "dark_field", "differential_phase",
             "absorption", "scattering")
    fused = _fused(sample, kernel)
    if fused is not None:
        return _retrieve_fused(fused, sample, solver, dark, reference_a0, reference_a1,
                               reference_phi, saturated_reference, saturation, floor, noise, dtype)
    out = {name: np.empty((ny, nx), dtype) for name in names}
    floor = dtype.type(floor)

    def block(first, last):
        rows = slice(first, last)
        a0, c, s = _harmonics(sample, solver, first, last, dtype)
        if dark is not None:
            a0 -= dark[rows].reshape(-1).astype(dtype, copy=False)
        a1 = np.sqrt(c * c + s * s)  # np.hypot is 4x slower and guards overflow we cannot hit
        if noise is not None:
            a1 = rice_amplitude(a1, amplitude_sigma(a0, *noise))
        phi = np.arctan2(-s, c)
        ref_a0 = reference_a0[rows].reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            reference_visibility = reference_a1[rows].reshape(-1) / ref_a0
        # invalid: no measured signal in the reference or the sample (dead pixels sit at the
        # dark level and leave float round-off ~1e-5 ADU, which passes a0 > 0), no fringes
        bad = ~(ref_a0 > floor) | ~(reference_visibility > 0) | ~(a0 > floor)
        if saturation is not None:
            bad |= sample[:, rows].max(axis=0).reshape(-1) >= saturation
        if saturated_reference is not None:
            bad |= saturated_reference[rows].reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            transmission = a0 / ref_a0
            dark_field = a1 / (a0 * reference_visibility)
            transmission[bad] = np.nan
            dark_field[bad] = np.nan
            absorption = -np.log(transmission)
            scattering = -np.log(dark_field)
        absorption[~(transmission > 0)] = np.nan
        scattering[~(dark_field > 0)] = np.nan
        phase = wrap(phi - reference_phi[rows].reshape(-1))
        phase[bad] = np.nan
        shape = (last - first, nx)
        for name, value in zip(names, (a0, a1, phi, transmission, dark_field, phase,
                                       absorption, scattering)):
            out[name][rows] = value.reshape(shape)

    _run(block, ny, nx)
    return out


def _retrieve_fused(fused, sample, solver, dark, reference_a0, reference_a1, reference_phi,
                    saturated_reference, saturation, floor, noise, dtype):
    """``retrieve_blocks`` on the numba path; with a noise model, V and eps are finished here
    from the Rice posterior mean of a1 (one extra pass over the 2-D images)."""
    def image(value, kind=dtype):
        return None if value is None else np.ascontiguousarray(value, dtype=kind)

    out = fused.retrieve(
        np.ascontiguousarray(sample), solver, dark, image(reference_a0),
        image(reference_a1), image(reference_phi), image(saturated_reference, np.bool_),
        saturation, floor, dtype, with_ratio=noise is None)
    bad = out.pop("bad")
    if noise is not None:
        a0 = out["a0"]
        a1 = out["a1"] = rice_amplitude(out["a1"], amplitude_sigma(a0, *noise)).astype(dtype, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            dark_field = a1 / (a0 * (image(reference_a1) / image(reference_a0)))
            dark_field[bad] = np.nan
            scattering = -np.log(dark_field)
        scattering[~(dark_field > 0)] = np.nan
        out["dark_field"], out["scattering"] = dark_field, scattering
    return out

