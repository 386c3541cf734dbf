"""A compiled (numba) twin of the segmentation's closing, optional.

:func:`close_disc` closes a mask with a Euclidean disc as ``segmentation.merge_grains``
does with two distance transforms, but from distances along rows: a pixel is within the
disc of another if, in the row dy away, it lies within the disc's half-width at dy.  It
gives the same pixels (tests/test_classification_speed_paths.py) in 3 bytes a pixel, about
5x faster on a full frame (one thread: numba 0.68's parallel loops got these row loops wrong).
numba is imported and compiled on first use (``cache=True``: later processes load the
machine code from ``__pycache__``).  ``TALBOT_LAU_KERNEL=numpy`` (or no numba) selects the
numpy paths.
"""

from __future__ import annotations


import numpy as np

from .kernels import kernel_choice

_kernels = None


def enabled() -> bool:
    """Whether the compiled kernels are used: the retrieval's choice
    (:func:`reconstruction.kernels.kernel_choice`: numba if importable, unless
    ``$TALBOT_LAU_KERNEL=numpy``)."""
    return kernel_choice() == "numba" and _compiled() is not None


def _compiled():
    global _kernels
    if _kernels is None:
        try:
            _kernels = _build()
        except ImportError:
            _kernels = False
    return _kernels or None


def warm_up() -> None:
    """Import numba and load (or compile) the kernels now, e.g. in a worker thread before
    the first image: the first call otherwise pays 0.3-0.5 s (2 s when compiling)."""
    if enabled():
        close_disc(np.eye(3, dtype=bool), 1.0)


def disc_widths(radius_px: float) -> np.ndarray:
    """Half-width (pixels) of the disc's row at each row offset 0..floor(radius): the largest
    dx with ``sqrt(dx**2 + dy**2) <= radius_px`` in float64, as the distance transform tests it."""
    reach = int(np.floor(radius_px))
    dx = np.arange(reach + 1, dtype=np.float64)
    return np.array([int(np.flatnonzero(np.sqrt(dx * dx + dy * dy) <= radius_px).max())
                     for dy in range(reach + 1)], np.int64)


def close_disc(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """The closing of a bool ``mask`` with a disc of ``radius_px`` (< 254), no border
    erosion, or'ed with ``mask``: ``segmentation.merge_grains``'s result."""
    return _compiled()["close_disc"](np.ascontiguousarray(mask, dtype=np.bool_), disc_widths(radius_px))


def _build():
    from . import segmentation_jit  # imports numba: on first use only

    return {"close_disc": segmentation_jit.close_disc_kernel}
