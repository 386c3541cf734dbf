"""Microtexture of a calcification cluster from its mu/eps ratio (paper Table 1, Fig. 5).

Scherer et al., Sci Rep 6:36991 (2016): the mean mu/eps ratio of a cluster is the linear
least-squares slope of mu against eps over its pixels (through the origin); the spread is
Var(mu/eps).  Table 1: ultra-fine <= 0.17, fine 0.22-0.33, pleomorphic 0.40-0.55,
coarse >= 0.6.  A ratio above 0.33 (the Youden cut-off of the ROC, Fig. 5C) is suspicious
of malignancy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURES = ("ultra-fine", "fine", "pleomorphic", "coarse")
SUSPICIOUS_RATIO = 0.33
TABLE_1 = {  # the mu/eps range of each class, Table 1
    "ultra-fine": (-np.inf, 0.17),
    "fine": (0.22, 0.33),
    "pleomorphic": (0.40, 0.55),
    "coarse": (0.60, np.inf),
}
MIN_PIXELS = 3
TOLERANCE = 1e-9
"""Ratios are compared with Table 1's two-decimal bounds at this tolerance, so float
rounding of an exact table value (0.33 computed as 0.33000000000000002) keeps its class."""


@dataclass(frozen=True)
class Microtexture:
    """A cluster's mean mu/eps (slope), Var(mu/eps), Table 1 class and flags."""

    ratio: float
    variance: float
    """Var(mu/eps) about the ratio, each pixel weighted by eps^2 (the weights of the slope):
    ``sum((mu - ratio*eps)^2) / sum(eps^2)``.  Pixels that barely scatter do not dominate."""
    texture: str
    borderline: bool
    """The ratio fell into a gap of Table 1 and went to the class of the nearest boundary."""
    suspicious: bool
    """ratio > SUSPICIOUS_RATIO (0.33, compared at TOLERANCE)."""
    n_pixels: int
    mu: np.ndarray
    eps: np.ndarray


def texture_of(ratio: float) -> tuple[str, bool]:
    """Table 1 class of a mu/eps ratio and whether it lies in a gap between classes.

    A ratio in a gap (0.17-0.22, 0.33-0.40, 0.55-0.60) goes to the class whose boundary is
    nearest; exactly half-way it goes to the lower class.
    """
    if not np.isfinite(ratio):
        raise ValueError(f"ratio must be finite, got {ratio}")
    best, distance = TEXTURES[0], np.inf
    for name in TEXTURES:
        low, high = TABLE_1[name]
        if low - TOLERANCE <= ratio <= high + TOLERANCE:
            return name, False
        gap = low - ratio if ratio < low else ratio - high
        if gap < distance - TOLERANCE:
            best, distance = name, gap
    return best, True


def classify_microtexture(mu, eps) -> Microtexture:
    """Classify a cluster from its tissue-normalised per-pixel mu and eps (any shape).

    Pixels where mu or eps is NaN/inf are dropped.  ``ratio = sum(mu*eps)/sum(eps**2)``.
    """
    mu = np.asarray(mu, dtype=np.float64).ravel()
    eps = np.asarray(eps, dtype=np.float64).ravel()
    if mu.shape != eps.shape:
        raise ValueError(f"mu has {mu.size} values but eps has {eps.size}; they must pair up per pixel")
    valid = np.isfinite(mu) & np.isfinite(eps)
    mu, eps = mu[valid], eps[valid]
    if mu.size < MIN_PIXELS:
        raise ValueError(f"need at least {MIN_PIXELS} valid (finite) pixels in mu and eps, got {mu.size}")
    scattering = eps > 0
    if not scattering.any():
        raise ValueError("eps <= 0 in every pixel: the cluster does not scatter, mu/eps is undefined")
    ratio = float(np.sum(mu * eps) / np.sum(eps * eps))
    variance = float(np.sum((mu - ratio * eps) ** 2) / np.sum(eps * eps))
    texture, borderline = texture_of(ratio)
    return Microtexture(ratio=ratio, variance=variance, texture=texture, borderline=borderline,
                        suspicious=bool(ratio > SUSPICIOUS_RATIO + TOLERANCE), n_pixels=int(mu.size),
                        mu=mu, eps=eps)
