"""Compiled (numba) twins of the segmentation's closing and background filters, optional.

:func:`close_disc` closes a mask with a Euclidean disc as ``segmentation.merge_grains``
does with two distance transforms, but from distances along rows: a pixel is within the
disc of another if, in the row dy away, it lies within the disc's half-width at dy.  It
gives the same pixels (tests/test_classification_speed_paths.py) in 3 bytes a pixel, about
5x faster on a full frame (one thread: numba 0.68's parallel loops got these row loops wrong).
:func:`median3x3` and :func:`grey_opening` give the numbers of ``background.median3x3`` and
``scipy.ndimage.grey_opening`` (flat square, mode "nearest"; same tests), about 8x and 4x
faster: the opening as a running min/max over the columns (van Herk / Gil-Werman, O(1) per
pixel for any width), then along each row by doubling (log2 of the width per pixel, in
vector registers).
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
        image = np.eye(4, dtype=np.float32)
        grey_opening(median3x3(image), 3)
        index, weight = np.zeros(4, np.intp), np.zeros(4)
        subtract_interpolated(image, interpolate(np.eye(4), index, index, weight, 0.0, np.float64),
                              index, index, weight)
        interpolate(np.eye(4), index, index, weight, 0.0, np.float32)


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


def median3x3(image: np.ndarray) -> np.ndarray:
    """3 x 3 median filter (edges: nearest) of a finite 2-D float image."""
    image = np.ascontiguousarray(image)
    out = np.empty_like(image)
    _compiled()["median3x3"](image, out)
    return out


def grey_opening(image: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.grey_opening(image, size=(size, size), mode="nearest")`` of a 2-D
    float image: erosion then dilation with a flat ``size`` x ``size`` square (pixels)."""
    image = np.ascontiguousarray(image)
    eroded, opened = np.empty_like(image), np.empty_like(image)
    kernel = _compiled()["extreme_filter"]
    kernel(image, eroded, size // 2, (size - 1) // 2, False)  # scipy's windows, even sizes too
    kernel(eroded, opened, (size - 1) // 2, size // 2, True)
    return opened


def interpolate(along, low, high, weight, floor: float, dtype) -> np.ndarray:
    """``along[:, low] * (1 - weight) + along[:, high] * weight`` (float64 arithmetic), at
    least ``floor``, as ``dtype``: tile values interpolated along the columns."""
    out = np.empty((along.shape[0], low.size), dtype)
    _compiled()["interpolate"](along, low, high, weight, float(floor), out)
    return out


def subtract_interpolated(band: np.ndarray, along, low, high, weight) -> np.ndarray:
    """``band`` minus the interpolated tile values (as :func:`interpolate`), in place in
    band's dtype with 0 where band is NaN; returns ``|band - offset|`` in float64."""
    spread = np.empty(band.shape, np.float64)
    _compiled()["subtract"](band, along, low, high, weight, spread)
    return spread


def _build():
    from . import segmentation_jit  # imports numba: on first use only

    return {"close_disc": segmentation_jit.close_disc_kernel,
            "median3x3": segmentation_jit.median3x3_kernel,
            "extreme_filter": segmentation_jit.extreme_filter_kernel,
            "interpolate": segmentation_jit.interpolate_kernel,
            "subtract": segmentation_jit.subtract_kernel}
