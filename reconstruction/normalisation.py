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
    """Per cluster label: (Ts, Vs), the medians of T and V over its ring of tissue
    (NaN, NaN) if the ring has fewer than 3 usable pixels."""
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
    """Per cluster label: (Tc, Vc) = (T/Ts, V/Vs) of its pixels, in ``np.nonzero`` order."""
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
