"""The whole cluster analysis of one retrieved projection: segment, normalise, classify."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .microtexture import classify_microtexture
from .normalisation import normalise_to_surroundings
from .segmentation import segment_clusters


@dataclass(frozen=True)
class ClusterAnalysis:
    """One calcification cluster: where, how big, its mu/eps ratio and Table 1 class."""

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


def analyse_clusters(transmission, dark_field, labels=None, **segment_kwargs) -> list[ClusterAnalysis]:
    """Classify every cluster of a T/V image pair (``labels`` from :func:`segment_clusters`
    if not given); clusters that do not scatter are skipped."""
    if labels is None:
        labels = segment_clusters(transmission, dark_field, **segment_kwargs)
    normalised = normalise_to_surroundings(transmission, dark_field, labels)
    centroids = ndimage.center_of_mass(labels > 0, labels, list(normalised))
    result = []
    for (label, (tc, vc, ts, vs)), centroid in zip(normalised.items(), centroids):
        with np.errstate(divide="ignore", invalid="ignore"):
            mu, eps = -np.log(tc), -np.log(vc)
        try:
            texture = classify_microtexture(mu, eps)
        except ValueError:
            continue
        result.append(ClusterAnalysis(
            label=label, centroid_px=(float(centroid[0]), float(centroid[1])),
            n_pixels=texture.n_pixels, ratio=texture.ratio, variance=texture.variance,
            texture=texture.texture, borderline=texture.borderline,
            suspicious=texture.suspicious, mu=texture.mu, eps=texture.eps, Ts=ts, Vs=vs,
        ))
    return result
