"""Normalise a cluster's T and V by the surrounding tissue (paper eq. 2).

Scherer et al. 2016, Methods ("Data normalization"): for a cluster much thinner than the
specimen, ``Tc = T/Ts`` and ``Vc = V/Vs`` retrieve the signal of the calcification alone.
Ts and Vs are the medians of T and V over a ring of tissue around the cluster: the pixels
more than ``gap_px`` and at most ``gap_px + ring_px`` pixels (Euclidean) from it, without
other clusters' pixels and without NaNs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .segmentation import check_images

MIN_RING_PIXELS = 3


def check_labels(labels, shape: tuple[int, int]) -> np.ndarray:
    """An integer label image of ``shape`` (0 = background), or a ValueError."""
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"labels has shape {labels.shape}, the images {shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if labels.dtype == bool:
            return labels.astype(np.int32)
        raise ValueError(f"labels must be an integer label image, got dtype {labels.dtype}")
    if labels.min(initial=0) < 0:
        raise ValueError("labels must be >= 0 (0 = background)")
    return labels


def _check_ring(ring_px, gap_px) -> None:
    if not np.isfinite(ring_px) or ring_px < 1:
        raise ValueError(f"ring_px must be >= 1 pixel, got {ring_px}")
    if not np.isfinite(gap_px) or gap_px < 0:
        raise ValueError(f"gap_px must be >= 0 pixels, got {gap_px}")


def surrounding_tissue(transmission, dark_field, labels, *, ring_px: float = 6,
                       gap_px: float = 2) -> dict[int, tuple[float, float]]:
    """Per cluster label: (Ts, Vs), the medians of T and V over its ring of tissue.

    Parameters
    ----------
    transmission, dark_field : array_like
        T and V images (fractions, 0-1), 2-D, of one shape.
    labels : array_like of int
        Label image of that shape, 0 = background (e.g. :func:`segment_clusters`).
    ring_px : float
        Width of the tissue ring (pixels, >= 1).
    gap_px : float
        Distance (pixels, >= 0) between the cluster and its ring.

    Returns
    -------
    dict of int to (float, float)
        ``{label: (Ts, Vs)}``; (NaN, NaN) if the ring has fewer than 3 usable pixels.

    Raises
    ------
    ValueError
        If the images are not 2-D or differ in shape, ``labels`` is not a non-negative
        integer image of their shape, ``ring_px < 1`` or ``gap_px < 0``.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Methods, "Data normalization", eq. 2.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import surrounding_tissue
    >>> transmission, dark_field = np.full((30, 30), 0.5), np.full((30, 30), 0.8)
    >>> transmission[10:15, 10:15] *= np.exp(-0.1)  # a 5 x 5 px cluster: mu 0.1, eps 0.2
    >>> dark_field[10:15, 10:15] *= np.exp(-0.2)
    >>> labels = np.zeros((30, 30), int)
    >>> labels[10:15, 10:15] = 1
    >>> print({k: (round(t, 3), round(v, 3))
    ...        for k, (t, v) in surrounding_tissue(transmission, dark_field, labels).items()})
    {1: (0.5, 0.8)}
    """
    transmission, dark_field = check_images(transmission, dark_field, dtype=None)  # no copy
    labels = check_labels(labels, transmission.shape)
    _check_ring(ring_px, gap_px)
    usable = np.isfinite(transmission) & np.isfinite(dark_field)
    reach = int(np.ceil(gap_px + ring_px)) + 1
    result = {}
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - reach, 0), s.stop + reach) for s in box)
        crop = labels[box]
        distance = ndimage.distance_transform_edt(crop != index)
        ring = (distance > gap_px) & (distance <= gap_px + ring_px) & (crop == 0) & usable[box]
        if ring.sum() < MIN_RING_PIXELS:  # enclosed by other clusters or NaNs
            result[index] = (np.nan, np.nan)
        else:
            result[index] = (float(np.median(transmission[box][ring].astype(np.float64))),
                             float(np.median(dark_field[box][ring].astype(np.float64))))
    return result


def normalise_to_surroundings(transmission, dark_field, labels, *, ring_px: float = 6,
                              gap_px: float = 2) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per cluster label: (Tc, Vc) = (T/Ts, V/Vs) of its pixels (paper eq. 2).

    Parameters
    ----------
    transmission, dark_field, labels, ring_px, gap_px
        As in :func:`surrounding_tissue`.

    Returns
    -------
    dict of int to (numpy.ndarray, numpy.ndarray)
        ``{label: (Tc, Vc)}``, the cluster's pixels in ``np.nonzero`` order (fractions);
        NaN where its ring is unusable.

    Raises
    ------
    ValueError
        If the images are not 2-D or differ in shape, ``labels`` is not a non-negative
        integer image of their shape, ``ring_px < 1`` or ``gap_px < 0``.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Methods, eq. 2: ``Tc = T/Ts``, ``Vc = V/Vs``.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import normalise_to_surroundings
    >>> transmission, dark_field = np.full((30, 30), 0.5), np.full((30, 30), 0.8)
    >>> transmission[10:15, 10:15] *= np.exp(-0.1)  # a 5 x 5 px cluster: mu 0.1, eps 0.2
    >>> dark_field[10:15, 10:15] *= np.exp(-0.2)
    >>> labels = np.zeros((30, 30), int)
    >>> labels[10:15, 10:15] = 1
    >>> tc, vc = normalise_to_surroundings(transmission, dark_field, labels)[1]
    >>> print(tc.size, np.round(-np.log(tc[:3]), 3), np.round(-np.log(vc[:3]), 3))
    25 [0.1 0.1 0.1] [0.2 0.2 0.2]
    """
    transmission, dark_field = check_images(transmission, dark_field)
    labels = check_labels(labels, transmission.shape)
    tissue = surrounding_tissue(transmission, dark_field, labels, ring_px=ring_px, gap_px=gap_px)
    result = {}
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        ts, vs = tissue[index]
        with np.errstate(divide="ignore", invalid="ignore"):
            result[index] = (transmission[box][inside] / ts, dark_field[box][inside] / vs)
    return result
