"""The whole cluster analysis of one retrieved projection: segment, normalise, classify.

Which pixels enter a cluster's mu/eps: the *calcified* pixels inside its label (those
exceeding the thresholds of :func:`calcified_mask`), not the tissue the closing added
between the grains.  Those tissue pixels carry mu ~ eps ~ 0 plus noise: they add nothing
to ``sum(mu*eps)`` but their eps noise adds to ``sum(eps**2)``, pulling the least-squares
slope towards zero (regression dilution).  See docs/reconstruction.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .microtexture import classify_microtexture
from .normalisation import check_labels, surrounding_tissue
from .segmentation import calcified_mask, check_images, label_clusters

MASK_KWARGS = ("eps_threshold", "mu_threshold", "k_sigma", "background_px")
LABEL_KWARGS = ("min_pixels", "closing")
RING_KWARGS = ("ring_px", "gap_px")


@dataclass(frozen=True)
class ClusterAnalysis:
    """One calcification cluster: where, how big, its mu/eps ratio and Table 1 class.

    Attributes
    ----------
    label : int
        Its label in the label image.
    centroid_px : (float, float)
        (row, col) of its calcified pixels (pixels).
    n_pixels : int
        Calcified pixels with finite mu and eps.
    ratio, variance, texture, borderline, suspicious
        As in :class:`reconstruction.microtexture.Microtexture`.
    mu, eps : numpy.ndarray
        Tissue-normalised absorption and scattering powers of those pixels (dimensionless).
    Ts, Vs : float
        Medians of T and V of the surrounding tissue (fractions; eq. 2).
    tissue_factor : float
        The factor ``ratio`` was multiplied by for the surrounding tissue (1.0:
        uncorrected; see :func:`reconstruction.tissue_correction.correct_clusters`).
    uncorrected_ratio : float
        Property: the measured slope, ``ratio / tissue_factor``.
    """

    label: int
    centroid_px: tuple[float, float]
    n_pixels: int
    ratio: float
    variance: float
    texture: str
    borderline: bool
    suspicious: bool
    mu: np.ndarray
    eps: np.ndarray
    Ts: float
    Vs: float
    tissue_factor: float = 1.0

    @property
    def uncorrected_ratio(self) -> float:
        """The mu/eps slope as measured, before any tissue correction."""
        return self.ratio / self.tissue_factor


def analyse_clusters(transmission, dark_field, labels=None, *, mask=None,
                     **segment_kwargs) -> list[ClusterAnalysis]:
    """Classify every cluster of a T/V image pair: segment, normalise (eq. 2), classify.

    Parameters
    ----------
    transmission, dark_field : array_like
        T and V images (fractions, 0-1), 2-D, of one shape.
    labels : array_like of int, optional
        A label image (0 = background); default :func:`label_clusters` of the mask, as
        :func:`segment_clusters` with ``segment_kwargs``.
    mask : array_like of bool, optional
        The calcified pixels when already computed (by :func:`calcified_mask` with the same
        thresholds), so they are not computed twice.
    **segment_kwargs
        ``eps_threshold``, ``mu_threshold``, ``k_sigma``, ``background_px`` (as in
        :func:`calcified_mask`; they also pick the calcified pixels inside given labels),
        ``min_pixels``, ``closing`` (:func:`label_clusters`), ``ring_px``, ``gap_px``
        (:func:`surrounding_tissue`).

    Returns
    -------
    list of ClusterAnalysis
        Sorted by label.  A cluster with fewer than 3 calcified pixels, no scattering ones
        or no tissue ring cannot be classified and is left out.

    Raises
    ------
    TypeError
        If ``segment_kwargs`` holds an unknown keyword (the message names it).
    ValueError
        If the images are not 2-D or differ in shape, or ``mask`` or ``labels`` is not of
        their shape; bad thresholds as in :func:`calcified_mask`.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Methods ("Data normalization", eq. 2) and
    Table 1.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import analyse_clusters
    >>> transmission, dark_field = np.full((30, 30), 0.5), np.full((30, 30), 0.8)
    >>> transmission[10:15, 10:15] *= np.exp(-0.1)  # a 5 x 5 px cluster: mu 0.1, eps 0.2
    >>> dark_field[10:15, 10:15] *= np.exp(-0.2)
    >>> found = analyse_clusters(transmission, dark_field, mu_threshold=0.05, eps_threshold=0.05,
    ...                          background_px=15, min_pixels=5, closing=2)
    >>> cluster = found[0]
    >>> print(len(found), cluster.centroid_px, cluster.n_pixels, f"{cluster.ratio:.2f}",
    ...       cluster.texture, cluster.suspicious)
    1 (12.0, 12.0) 25 0.50 pleomorphic True
    """
    transmission, dark_field = check_images(transmission, dark_field, dtype=None)  # no copy
    ring_kwargs = {k: segment_kwargs.pop(k) for k in RING_KWARGS if k in segment_kwargs}
    label_kwargs = {k: segment_kwargs.pop(k) for k in LABEL_KWARGS if k in segment_kwargs}
    unknown = sorted(segment_kwargs.keys() - set(MASK_KWARGS))
    if unknown:
        raise TypeError(f"analyse_clusters got unexpected keyword arguments {unknown}")
    if mask is None:
        mask = calcified_mask(transmission, dark_field, **segment_kwargs)
    elif np.shape(mask) != transmission.shape:
        raise ValueError(f"mask has shape {np.shape(mask)}, the images {transmission.shape}")
    mask = np.asarray(mask, dtype=bool)
    if labels is None:
        labels = label_clusters(mask, **label_kwargs)  # as segment_clusters, one mask
    labels = check_labels(labels, transmission.shape)
    tissue = surrounding_tissue(transmission, dark_field, labels, **ring_kwargs)
    result = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pixels = (labels[box] == index) & mask[box]
        ts, vs = tissue[index]
        if pixels.sum() < 3 or not (np.isfinite(ts) and np.isfinite(vs)):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = -np.log(transmission[box][pixels].astype(np.float64) / ts)
            eps = -np.log(dark_field[box][pixels].astype(np.float64) / vs)
        try:
            texture = classify_microtexture(mu, eps)
        except ValueError:
            continue
        rows, cols = np.nonzero(pixels)
        result.append(ClusterAnalysis(
            label=index,
            centroid_px=(float(rows.mean() + box[0].start), float(cols.mean() + box[1].start)),
            n_pixels=texture.n_pixels, ratio=texture.ratio, variance=texture.variance,
            texture=texture.texture, borderline=texture.borderline, suspicious=texture.suspicious,
            mu=texture.mu, eps=texture.eps, Ts=ts, Vs=vs,
        ))
    return result
