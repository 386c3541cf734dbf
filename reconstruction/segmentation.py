"""Find calcification clusters in T and V images: threshold, merge grains, label.

Paper, Methods ("Data normalization"): calcifications are discriminated from the tissue by
thresholding and labelling.  Here a pixel is *calcified* when its absorption power
mu = -ln T **or** its scattering power eps = -ln V exceeds the local tissue background
(:func:`reconstruction.background.local_excess`) by a threshold: ``k_sigma`` times the
robust local noise sigma by default, or an absolute ``mu_threshold``/``eps_threshold``.
A morphological closing with a disc of radius ``closing`` pixels merges the grains of one
cluster; ``scipy.ndimage.label`` numbers the closed regions; a region with fewer than
``min_pixels`` calcified pixels is dropped.

A large image (a stitched mosaic) is worked on in bands of rows with halos, so memory stays
bounded; the mask and labels are bit-identical to the whole image's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import segmentation_kernels
from .background import excess_bands, negative_log, row_bands

DEFAULT_K_SIGMA = 5.0
DEFAULT_CLOSING_PX = 12
"""Closing radius (pixels): grains less than ~2 mm apart (at 85 um pixels) merge into one
cluster, clusters >= 4 mm apart stay separate."""
DEFAULT_BACKGROUND_PX = 81
"""Side of the opening square (pixels, ~7 mm at 85 um): wider than a cluster."""


def check_images(transmission, dark_field, *, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """T and V as 2-D arrays of one shape, or a ValueError naming the problem.

    ``dtype``: float64 (a copy of other input); None: float32 and float64 images are kept as
    given (no copy of a large float32 mosaic), others become float64.
    """
    if dtype is None:
        transmission, dark_field = (image if isinstance(image, np.ndarray) and image.dtype in
                                    (np.float32, np.float64) else np.asarray(image, np.float64)
                                    for image in (transmission, dark_field))
    else:
        transmission = np.asarray(transmission, dtype=dtype)
        dark_field = np.asarray(dark_field, dtype=dtype)
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
                   background_px: int = DEFAULT_BACKGROUND_PX,
                   band_rows: int | None = None) -> np.ndarray:
    """Pixels whose mu or eps exceeds the local tissue background by the threshold.

    Parameters
    ----------
    transmission, dark_field : array_like
        T and V images (fractions, 0-1), 2-D, of one shape; float32 is kept without a copy.
    eps_threshold, mu_threshold : float, optional
        Absolute excess of eps = -ln V / mu = -ln T (dimensionless) over the local
        background.  None: ``k_sigma`` times the robust local noise sigma of that image.
    k_sigma : float
        Threshold in units of the local noise sigma, where no absolute one is given.
    background_px : int
        Side (pixels) of the opening square that estimates the tissue background; wider
        than a cluster (default 81, ~7 mm at 85 um).
    band_rows : int, optional
        Rows worked on at once (:func:`reconstruction.background.excess_bands`; None: about
        2 Mpx); the mask does not depend on it, the memory does.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the calcified pixels, the shape of the images.

    Raises
    ------
    ValueError
        If the images are not 2-D or differ in shape, or a threshold or ``k_sigma`` is not
        a positive number (the message names it).

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Methods, "Data normalization": calcifications
    are told from tissue by thresholding.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import calcified_mask
    >>> transmission, dark_field = np.full((30, 30), 0.5), np.full((30, 30), 0.8)
    >>> transmission[10:15, 10:15] *= np.exp(-0.1)  # a 5 x 5 px cluster: mu 0.1, eps 0.2
    >>> dark_field[10:15, 10:15] *= np.exp(-0.2)
    >>> mask = calcified_mask(transmission, dark_field, mu_threshold=0.05, eps_threshold=0.05,
    ...                       background_px=15)
    >>> print(int(mask.sum()), bool(mask[12, 12]), bool(mask[0, 0]))
    25 True False
    """
    transmission, dark_field = check_images(transmission, dark_field, dtype=None)
    eps_threshold = _threshold(eps_threshold, "eps_threshold")
    mu_threshold = _threshold(mu_threshold, "mu_threshold")
    if not np.isfinite(k_sigma) or k_sigma <= 0:
        raise ValueError(f"k_sigma must be a positive number, got {k_sigma}")
    mask = np.zeros(transmission.shape, dtype=bool)
    for image, threshold in ((transmission, mu_threshold), (dark_field, eps_threshold)):
        def read(rows, image=image):  # mu or eps of those rows, as local_excess takes it
            return negative_log(image[rows]).astype(np.float32)

        for rows, excess, sigma in excess_bands(read, image.shape, background_px=int(background_px),
                                                band_rows=band_rows):
            mask[rows] |= excess > (k_sigma * sigma if threshold is None else threshold)
    return mask


def _check_label_arguments(min_pixels, closing) -> None:
    if int(min_pixels) != min_pixels or min_pixels < 1:
        raise ValueError(f"min_pixels must be a positive integer, got {min_pixels}")
    if not np.isfinite(closing) or closing < 0:
        raise ValueError(f"closing must be a radius in pixels >= 0, got {closing}")


def merge_grains(mask: np.ndarray, radius_px: float, *, band_rows: int | None = None) -> np.ndarray:
    """Morphological closing of ``mask`` with a disc of ``radius_px`` (Euclidean, via the
    distance transform, no border erosion); always contains ``mask``.

    Worked on in bands of ``band_rows`` rows (None: about 2 Mpx) with a halo of twice the
    radius, so the float64 distance maps stay band-sized; the result does not depend on it.
    """
    if radius_px <= 0 or not mask.any():
        return mask.copy()
    if radius_px < 254 and segmentation_kernels.enabled():  # compiled, the same pixels, 3 B/px
        return segmentation_kernels.close_disc(mask, radius_px)
    halo = int(np.ceil(radius_px)) + 1  # a nearest pixel within radius_px is within halo rows
    ny = mask.shape[0]
    closed = np.empty_like(mask)
    for first, stop in row_bands(ny, mask.shape[1], band_rows):
        top, bottom = max(first - 2 * halo, 0), min(stop + 2 * halo, ny)
        near = mask[top:bottom]  # dilated: exact on the rows within halo of the band
        dilated = (ndimage.distance_transform_edt(~near) <= radius_px) if near.any() else np.zeros_like(near)
        inner = slice(max(first - halo, 0) - top, min(stop + halo, ny) - top)
        dilated, near = dilated[inner], near[inner]
        if dilated.all():
            band = dilated
        elif not dilated.any():
            band = near
        else:
            band = (ndimage.distance_transform_edt(dilated) > radius_px) | near
        core = first - max(first - halo, 0)
        closed[first:stop] = band[core:core + stop - first]
    return closed


def segment_clusters(transmission, dark_field, *, eps_threshold=None, mu_threshold=None,
                     min_pixels: int = 20, closing: float = DEFAULT_CLOSING_PX,
                     k_sigma: float = DEFAULT_K_SIGMA,
                     background_px: int = DEFAULT_BACKGROUND_PX) -> np.ndarray:
    """Label image of calcification clusters (:func:`calcified_mask`, :func:`label_clusters`).

    A label covers the closed region of a cluster (its grains and the tissue between
    them); :func:`calcified_mask` says which of its pixels are calcified.

    Parameters
    ----------
    transmission, dark_field : array_like
        T and V images (fractions, 0-1), 2-D, of one shape.
    eps_threshold, mu_threshold, k_sigma, background_px
        As in :func:`calcified_mask`.
    min_pixels : int
        Fewest calcified pixels of a kept cluster.
    closing : float
        Radius (pixels) of the disc that merges grains into one cluster (default 12, ~1 mm
        at 85 um).

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 = background, 1..n in scan order.

    Raises
    ------
    ValueError
        If the images are not 2-D or differ in shape, ``min_pixels`` is not a positive
        integer, ``closing`` is negative, or a threshold is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import segment_clusters
    >>> transmission, dark_field = np.full((30, 30), 0.5), np.full((30, 30), 0.8)
    >>> transmission[10:15, 10:15] *= np.exp(-0.1)  # a 5 x 5 px cluster: mu 0.1, eps 0.2
    >>> dark_field[10:15, 10:15] *= np.exp(-0.2)
    >>> labels = segment_clusters(transmission, dark_field, mu_threshold=0.05,
    ...                           eps_threshold=0.05, background_px=15, min_pixels=5, closing=2)
    >>> print(int(labels.max()), int((labels == 1).sum()))
    1 25
    """
    check_images(transmission, dark_field)
    _check_label_arguments(min_pixels, closing)
    mask = calcified_mask(transmission, dark_field, eps_threshold=eps_threshold,
                          mu_threshold=mu_threshold, k_sigma=k_sigma, background_px=background_px)
    return label_clusters(mask, min_pixels=min_pixels, closing=closing)


def label_clusters(mask: np.ndarray, *, min_pixels: int = 20,
                   closing: float = DEFAULT_CLOSING_PX, band_rows: int | None = None) -> np.ndarray:
    """Label the closed regions of a calcified-pixel mask, as :func:`segment_clusters`.

    Parameters
    ----------
    mask : array_like of bool
        Calcified pixels (2-D), e.g. from :func:`calcified_mask`.
    min_pixels : int
        Fewest calcified pixels of a kept cluster.
    closing : float
        Radius (pixels) of the disc whose morphological closing merges grains.
    band_rows : int, optional
        Rows worked on at once (None: about 2 Mpx); the labels do not depend on it.

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 = background, 1..n in scan order.

    Raises
    ------
    ValueError
        If ``min_pixels`` is not a positive integer or ``closing`` is negative.

    Examples
    --------
    Two grains one empty column apart merge; a lone pixel is dropped (``min_pixels``):

    >>> import numpy as np
    >>> from reconstruction import label_clusters
    >>> mask = np.zeros((6, 10), bool)
    >>> mask[2:4, 2:4] = mask[2:4, 5:7] = mask[4, 9] = True
    >>> print(label_clusters(mask, min_pixels=2, closing=1.5))
    [[0 0 0 0 0 0 0 0 0 0]
     [0 0 0 0 0 0 0 0 0 0]
     [0 0 1 1 1 1 1 0 0 0]
     [0 0 1 1 1 1 1 0 0 0]
     [0 0 0 0 0 0 0 0 0 0]
     [0 0 0 0 0 0 0 0 0 0]]
    """
    _check_label_arguments(min_pixels, closing)
    mask = np.asarray(mask, dtype=bool)
    regions, count = ndimage.label(merge_grains(mask, closing, band_rows=band_rows))
    calcified = np.bincount(regions[mask], minlength=count + 1)
    keep = np.flatnonzero(calcified >= min_pixels)
    keep = keep[keep > 0]
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    regions = regions.astype(np.int32, copy=False)
    for first, stop in row_bands(*regions.shape, band_rows):  # in place: no second label image
        regions[first:stop] = relabel[regions[first:stop]]
    return regions
