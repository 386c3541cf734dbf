"""Microtexture of a calcification cluster from its mu/eps ratio (paper Table 1, Fig. 5).

Scherer et al., Sci Rep 6:36991 (2016): the mean mu/eps ratio of a cluster is the linear
least-squares slope of mu against eps over its pixels; its spread is Var(mu/eps).
Table 1: ultra-fine <= 0.17, fine 0.22-0.33, pleomorphic 0.40-0.55, coarse >= 0.6.
A ratio above 0.33 (the Youden cut-off of the ROC, Fig. 5C) is suspicious of malignancy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURES = ("ultra-fine", "fine", "pleomorphic", "coarse")
SUSPICIOUS_RATIO = 0.33
TABLE_1 = {  # mu/eps range of each class
    "ultra-fine": (0.0, 0.17),
    "fine": (0.22, 0.33),
    "pleomorphic": (0.40, 0.55),
    "coarse": (0.60, np.inf),
}


@dataclass(frozen=True)
class Microtexture:
    """A cluster's mean mu/eps (slope), Var(mu/eps), Table 1 class and flags."""

    ratio: float
    variance: float
    texture: str
    borderline: bool
    """The ratio fell in a gap of Table 1 and went to the nearest class."""
    suspicious: bool
    n_pixels: int
    mu: np.ndarray
    eps: np.ndarray


def texture_of(ratio: float) -> tuple[str, bool]:
    """Table 1 class of a mu/eps ratio, and whether it lies in a gap between classes."""
    best, distance = None, np.inf
    for name, (low, high) in TABLE_1.items():
        if low <= ratio <= high:
            return name, False
        gap = min(abs(ratio - low), abs(ratio - high))
        if gap < distance:
            best, distance = name, gap
    return best, True


def classify_microtexture(mu, eps) -> Microtexture:
    """Classify a cluster from its tissue-normalised per-pixel mu and eps (NaNs dropped)."""
    mu = np.asarray(mu, dtype=np.float64).ravel()
    eps = np.asarray(eps, dtype=np.float64).ravel()
    if mu.shape != eps.shape:
        raise ValueError(f"mu has {mu.size} values, eps {eps.size}")
    valid = np.isfinite(mu) & np.isfinite(eps)
    mu, eps = mu[valid], eps[valid]
    if mu.size < 3:
        raise ValueError(f"need at least 3 valid pixels to classify a cluster, got {mu.size}")
    denominator = float(np.sum(eps * eps))
    if denominator <= 0 or np.sum(eps) <= 0:
        raise ValueError("the cluster does not scatter (eps <= 0): no mu/eps ratio")
    ratio = float(np.sum(mu * eps) / denominator)
    scattering = eps > 0
    variance = float(np.var(mu[scattering] / eps[scattering])) if scattering.sum() > 1 else 0.0
    texture, borderline = texture_of(ratio)
    return Microtexture(ratio, variance, texture, borderline, ratio > SUSPICIOUS_RATIO,
                        int(mu.size), mu, eps)
