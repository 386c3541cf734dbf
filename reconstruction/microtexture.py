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
    """A cluster's mean mu/eps (slope), Var(mu/eps), Table 1 class and flags.

    Attributes
    ----------
    ratio : float
        Mean mu/eps: least-squares slope of mu against eps through the origin (dimensionless).
    variance : float
        Var(mu/eps) about ``ratio`` (below).
    texture : str
        Table 1 class, one of ``TEXTURES``.
    borderline : bool
        The ratio fell in a gap of Table 1 (below).
    suspicious : bool
        ``ratio > SUSPICIOUS_RATIO`` (below).
    n_pixels : int
        Pixels used (finite mu and eps).
    mu, eps : numpy.ndarray
        Those pixels' absorption and scattering powers (dimensionless).
    """

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
    """Classify a cluster from its tissue-normalised per-pixel mu and eps.

    Parameters
    ----------
    mu : array_like
        Absorption power ``-ln(T/Ts)`` of the cluster's pixels (dimensionless, any shape).
    eps : array_like
        Scattering power ``-ln(V/Vs)`` of the same pixels (same size).  Pixels where mu or
        eps is NaN or infinite are dropped.

    Returns
    -------
    Microtexture
        ``ratio = sum(mu*eps)/sum(eps**2)``, its variance, Table 1 class and flags.

    Raises
    ------
    ValueError
        If ``mu`` and ``eps`` differ in size, fewer than 3 pixels are finite in both, or
        no pixel has ``eps > 0``.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Table 1 (class bounds) and Fig. 5C (the
    cut-off 0.33, Youden index of the ROC).

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import classify_microtexture
    >>> texture = classify_microtexture([0.05, 0.10, 0.15, np.nan], [0.1, 0.2, 0.3, 0.4])
    >>> print(f"{texture.ratio:.2f}", texture.texture, texture.suspicious, texture.n_pixels)
    0.50 pleomorphic True 3
    >>> texture = classify_microtexture([0.036, 0.07, 0.11], [0.1, 0.2, 0.3])
    >>> print(f"{texture.ratio:.3f}", texture.texture, texture.borderline)
    0.361 fine True
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
