"""Find calcification clusters in T and V images: threshold, merge grains, label.

A calcified pixel absorbs or scatters clearly more than its neighbourhood: the local
background of mu = -ln T and eps = -ln V is a median over ``background_px`` (computed on
8 x 8 tile medians, so it ignores clusters smaller than that and follows the slab and the
field), the noise is the robust sigma
(MAD) of the excess, and a pixel is calcified where either excess exceeds ``k_sigma``
sigma.  Calcified pixels within ``merge_px`` of each other form one cluster
(``scipy.ndimage.label`` of the dilated mask); clusters with fewer than ``min_pixels``
calcified pixels are dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.4826


def _negative_log(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(np.where(image > 0, image, np.nan))


def local_background(image: np.ndarray, background_px: int, block: int = 8) -> np.ndarray:
    """Robust smooth background: medians of ``block`` x ``block`` tiles, median-filtered
    over ``background_px`` and interpolated back to full size (NaNs ignored)."""
    rows, cols = image.shape
    block = max(1, min(block, rows // 4 or 1, cols // 4 or 1))
    padded = np.pad(image, ((0, -rows % block), (0, -cols % block)), mode="reflect")
    tiles = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block)
    with np.errstate(all="ignore"):
        coarse = np.nanmedian(tiles.transpose(0, 2, 1, 3).reshape(*tiles.shape[::2], -1), axis=-1)
    coarse = np.where(np.isfinite(coarse), coarse, np.nanmedian(coarse))
    coarse = ndimage.median_filter(coarse, size=max(background_px // block, 1), mode="nearest")
    zoomed = ndimage.zoom(coarse, block, order=1, mode="nearest", grid_mode=True)
    return zoomed[:rows, :cols]


def local_excess(image: np.ndarray, background_px: int) -> np.ndarray:
    """``image`` minus its local background; NaN pixels give 0."""
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape)
    background = local_background(np.where(finite, image, np.nan), background_px)
    return np.where(finite, image - background, 0.0)


def robust_sigma(values: np.ndarray) -> float:
    """Noise sigma from the median absolute deviation of ``values``."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.inf
    sigma = MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))
    return float(sigma) if sigma > 0 else float(np.std(values)) or np.inf


def calcified_mask(transmission, dark_field, *, k_sigma: float = 5.0,
                   background_px: int = 61) -> np.ndarray:
    """Pixels whose absorption or scattering clearly exceeds the local background."""
    mask = np.zeros(np.shape(transmission), dtype=bool)
    for image in (_negative_log(transmission), _negative_log(dark_field)):
        excess = local_excess(image, background_px)
        mask |= excess > k_sigma * robust_sigma(excess)
    return ndimage.binary_opening(mask, structure=np.ones((2, 2))) | _strong(mask)


def _strong(mask: np.ndarray) -> np.ndarray:
    """Keep single pixels that have a calcified 8-neighbour (opening would drop them)."""
    neighbours = ndimage.convolve(mask.astype(np.int8), np.ones((3, 3), np.int8), mode="constant")
    return mask & (neighbours >= 3)


def segment_clusters(transmission, dark_field, *, k_sigma: float = 5.0, background_px: int = 61,
                     merge_px: int = 8, min_pixels: int = 20) -> np.ndarray:
    """Label image of calcification clusters (int32, 0 = background).

    Only calcified pixels carry a cluster's label; the pixels between its grains stay 0.
    """
    transmission = np.asarray(transmission)
    if transmission.ndim != 2 or np.shape(dark_field) != transmission.shape:
        raise ValueError(
            f"transmission {transmission.shape} and dark_field {np.shape(dark_field)} "
            "must be 2-D images of the same shape"
        )
    mask = calcified_mask(transmission, dark_field, k_sigma=k_sigma, background_px=background_px)
    disk = _disk(merge_px)
    groups, count = ndimage.label(ndimage.binary_dilation(mask, structure=disk))
    labels = np.where(mask, groups, 0)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = np.flatnonzero(sizes >= min_pixels)
    keep = keep[keep > 0]
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, keep.size + 1)
    return relabel[labels]


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius
