"""Find calcification clusters in T and V images: threshold, merge grains, label.

Paper, Methods ("Data normalization"): calcifications are discriminated from the tissue by
thresholding and labelling.  Here a pixel is *calcified* when its absorption power
mu = -ln T **or** its scattering power eps = -ln V exceeds the local tissue background
(:func:`reconstruction.background.local_excess`) by a threshold: ``k_sigma`` times the
robust local noise sigma by default, or an absolute ``mu_threshold``/``eps_threshold``.
A morphological closing with a disc of radius ``closing`` pixels merges the grains of one
cluster; ``scipy.ndimage.label`` numbers the closed regions; a region with fewer than
``min_pixels`` calcified pixels is dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .background import local_excess, negative_log

DEFAULT_K_SIGMA = 5.0
DEFAULT_CLOSING_PX = 12
"""Closing radius (pixels): grains less than ~2 mm apart (at 85 um pixels) merge into one
cluster, clusters >= 4 mm apart stay separate."""
DEFAULT_BACKGROUND_PX = 81
"""Side of the opening square (pixels, ~7 mm at 85 um): wider than a cluster."""


def check_images(transmission, dark_field) -> tuple[np.ndarray, np.ndarray]:
    """T and V as float64 2-D arrays of one shape, or a ValueError naming the problem."""
    transmission = np.asarray(transmission, dtype=np.float64)
    dark_field = np.asarray(dark_field, dtype=np.float64)
    if transmission.ndim != 2:
        raise ValueError(f"transmission must be a 2-D image, got shape {transmission.shape}")
    if dark_field.shape != transmission.shape:
        raise ValueError(f"dark_field has shape {dark_field.shape}, transmission {transmission.shape}")
    return transmission, dark_field


def _threshold(value, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number (or None for k_sigma * noise), got {value}")
    return value


def calcified_mask(transmission, dark_field, *, eps_threshold=None, mu_threshold=None,
                   k_sigma: float = DEFAULT_K_SIGMA,
                   background_px: int = DEFAULT_BACKGROUND_PX) -> np.ndarray:
    """Pixels whose mu or eps exceeds the local tissue background by the threshold.

    ``eps_threshold``/``mu_threshold``: absolute excess of eps = -ln V / mu = -ln T over the
    local background; None: ``k_sigma`` times the robust local noise sigma of that image.
    """
    transmission, dark_field = check_images(transmission, dark_field)
    eps_threshold = _threshold(eps_threshold, "eps_threshold")
    mu_threshold = _threshold(mu_threshold, "mu_threshold")
    if not np.isfinite(k_sigma) or k_sigma <= 0:
        raise ValueError(f"k_sigma must be a positive number, got {k_sigma}")
    mask = np.zeros(transmission.shape, dtype=bool)
    for image, threshold in ((negative_log(transmission), mu_threshold),
                             (negative_log(dark_field), eps_threshold)):
        excess, sigma = local_excess(image, background_px=int(background_px))
        mask |= excess > (k_sigma * sigma if threshold is None else threshold)
    return mask


def _check_label_arguments(min_pixels, closing) -> None:
    if int(min_pixels) != min_pixels or min_pixels < 1:
        raise ValueError(f"min_pixels must be a positive integer, got {min_pixels}")
    if not np.isfinite(closing) or closing < 0:
        raise ValueError(f"closing must be a radius in pixels >= 0, got {closing}")


def merge_grains(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Morphological closing of ``mask`` with a disc of ``radius_px`` (Euclidean, via the
    distance transform, no border erosion); always contains ``mask``."""
    if radius_px <= 0 or not mask.any():
        return mask.copy()
    dilated = ndimage.distance_transform_edt(~mask) <= radius_px
    if dilated.all():
        return dilated
    return (ndimage.distance_transform_edt(dilated) > radius_px) | mask


def segment_clusters(transmission, dark_field, *, eps_threshold=None, mu_threshold=None,
                     min_pixels: int = 20, closing: float = DEFAULT_CLOSING_PX,
                     k_sigma: float = DEFAULT_K_SIGMA,
                     background_px: int = DEFAULT_BACKGROUND_PX) -> np.ndarray:
    """Label image of calcification clusters: int32, 0 = background, 1..n in scan order.

    A label covers the closed region of a cluster (its grains and the tissue between
    them); :func:`calcified_mask` says which of its pixels are calcified.  ``closing``:
    radius (pixels) of the disc that merges grains; ``min_pixels``: fewest calcified pixels
    of a kept cluster.  Thresholds as in :func:`calcified_mask`.
    """
    check_images(transmission, dark_field)
    _check_label_arguments(min_pixels, closing)
    mask = calcified_mask(transmission, dark_field, eps_threshold=eps_threshold,
                          mu_threshold=mu_threshold, k_sigma=k_sigma, background_px=background_px)
    return label_clusters(mask, min_pixels=min_pixels, closing=closing)


def label_clusters(mask: np.ndarray, *, min_pixels: int = 20,
                   closing: float = DEFAULT_CLOSING_PX) -> np.ndarray:
    """Label the closed regions of a calcified-pixel mask, as :func:`segment_clusters`."""
    _check_label_arguments(min_pixels, closing)
    mask = np.asarray(mask, dtype=bool)
    regions, count = ndimage.label(merge_grains(mask, closing))
    calcified = np.bincount(regions[mask], minlength=count + 1)
    keep = np.flatnonzero(calcified >= min_pixels)
    keep = keep[keep > 0]
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return relabel[regions]
