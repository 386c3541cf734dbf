"""Correction of a cluster's mu/eps ratio for the tissue around it, from a calibration.

Scherer et al. 2016 (Fig. 1, Results) find mu/eps of a cluster unchanged between the 10 mm
paraffin block of Table 1 and 45 mm of native breast (0.31 +- 0.02 vs 0.33 +- 0.01).  In
this model the polychromatic fringe makes R fall as the tissue hardens the beam (about 20 %
from 10 mm paraffin to 45 mm breast, docs/physics.md), so a lab calibrates it: beads of
known size behind tissue steps give ``c(Ts) = R_reference / R(Ts)`` against the
surrounding tissue's transmission Ts (eq. 2), normalised to 1 at the transmission of the
reference block, and every cluster's ratio is multiplied by ``c(Ts)``.  The fit is a
monotone cubic (PCHIP) in ln Ts through the pooled, isotonic medians of the points, flat
beyond the measured range.  See docs/reconstruction.md, "Tissue calibration".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from .clusters import ClusterAnalysis
from .microtexture import classify_microtexture

GROUP_TOLERANCE = 0.05
"""Points whose ln Ts lie within this of their neighbour's are one tissue step (5 %)."""


@dataclass(frozen=True)
class TissueCorrection:
    """Factor ``c(Ts)`` that brings a ratio measured behind tissue of transmission Ts to
    the reference tissue.

    Attributes
    ----------
    reference_ts : float
        Transmission (0-1) of the reference tissue, where ``c = 1``.
    knots_ts, knots_factor : tuple of float
        The fit: monotone in Ts, PCHIP in (ln Ts, ln c) between the knots, flat outside.
    points_ts, points_factor : tuple of float
        The measured points the fit was made from (for the record and plots).
    """

    reference_ts: float
    knots_ts: tuple[float, ...]
    knots_factor: tuple[float, ...]
    points_ts: tuple[float, ...] = ()
    points_factor: tuple[float, ...] = ()

    def __post_init__(self):
        ts, factor = np.asarray(self.knots_ts, float), np.asarray(self.knots_factor, float)
        _check_positive(self.reference_ts, "reference_ts")
        if ts.ndim != 1 or ts.size < 1 or ts.shape != factor.shape:
            raise ValueError(f"knots_ts and knots_factor must be equal-length lists with at least "
                             f"one value, got {ts.size} and {factor.size}")
        if not (np.all(np.isfinite(ts)) and np.all(ts > 0) and np.all(np.diff(ts) > 0)):
            raise ValueError(f"knots_ts must be positive, finite and increasing, got {ts.tolist()}")
        if not (np.all(np.isfinite(factor)) and np.all(factor > 0)):
            raise ValueError(f"knots_factor must be positive and finite, got {factor.tolist()}")
        if len(self.points_ts) != len(self.points_factor):
            raise ValueError(f"points_ts has {len(self.points_ts)} values, points_factor "
                             f"{len(self.points_factor)}")

    def factor(self, ts):
        """``c(Ts)`` (a float for a scalar ``ts``, else an array); Ts as a fraction 0-1.

        Flat beyond the knots: the calibration says nothing outside its measured range.
        """
        values = np.asarray(ts, dtype=float)
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"ts must be a positive, finite transmission, got {ts!r}")
        log_ts = np.log(np.asarray(self.knots_ts, float))
        log_c = np.log(np.asarray(self.knots_factor, float))
        x = np.clip(np.log(values), log_ts[0], log_ts[-1])
        out = np.exp(PchipInterpolator(log_ts, log_c)(x)) if log_ts.size > 1 else np.exp(
            np.full(x.shape, log_c[0]))
        return float(out) if np.ndim(ts) == 0 else out

    @property
    def measured_range(self) -> tuple[float, float]:
        """(lowest, highest) Ts of the knots: the correction is flat outside."""
        return float(self.knots_ts[0]), float(self.knots_ts[-1])


def _check_positive(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def _points(ts, values, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    ts, values = np.asarray(ts, float).ravel(), np.asarray(values, float).ravel()
    if ts.shape != values.shape:
        raise ValueError(f"{names[0]} has {ts.size} values but {names[1]} has {values.size}")
    for name, array in zip(names, (ts, values)):
        if not np.all(np.isfinite(array) & (array > 0)):
            raise ValueError(f"{name} must be positive and finite, got {array.tolist()}")
    return ts, values


def _isotonic(y: np.ndarray, w: np.ndarray, increasing: bool) -> np.ndarray:
    """Weighted least-squares monotone fit of ``y`` (pool adjacent violators)."""
    sign = 1.0 if increasing else -1.0
    blocks: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip(sign * y, w):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return sign * np.concatenate([np.full(n, v) for v, _, n in blocks])


def monotone_knots(ts, values, *, tolerance: float = GROUP_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a monotone fit of ``values`` against ``ts`` (both positive).

    Points whose ln Ts lie within ``tolerance`` of their neighbour form one group (one
    tissue step); each group gives a knot at its median Ts and the median of its ln values,
    and the knots are made monotone (weighted by group size, in the direction of the
    least-squares slope).  Returns (Ts, value) of the knots, Ts increasing.
    """
    ts, values = _points(ts, values, ("ts", "values"))
    order = np.argsort(ts)
    log_ts, log_v = np.log(ts[order]), np.log(values[order])
    starts = np.flatnonzero(np.r_[True, np.diff(log_ts) > tolerance])
    groups = np.split(np.arange(ts.size), starts[1:])
    knot_x = np.array([np.median(log_ts[g]) for g in groups])
    knot_y = np.array([np.median(log_v[g]) for g in groups])
    weight = np.array([g.size for g in groups], float)
    if knot_x.size > 1:
        slope = np.polyfit(knot_x, knot_y, 1, w=np.sqrt(weight))[0]
        knot_y = _isotonic(knot_y, weight, increasing=slope >= 0)
    return np.exp(knot_x), np.exp(knot_y)


def fit_tissue_correction(ts, ratios, reference_ts: float, *,
                          tolerance: float = GROUP_TOLERANCE) -> TissueCorrection:
    """Fit ``c(Ts)`` to measured points, normalised to 1 at ``reference_ts``.

    Parameters
    ----------
    ts : array_like
        Surrounding-tissue transmission Ts (0-1) of each calibration cluster.
    ratios : array_like
        Its correction ``R_reference / R(Ts)`` (see :func:`correction_points`).
    reference_ts : float
        Transmission of the reference tissue (Table 1: the 10 mm paraffin block); it must
        lie inside the measured range of ``ts``.
    tolerance : float
        Grouping of the points into tissue steps, in ln Ts (:func:`monotone_knots`).

    Returns
    -------
    TissueCorrection
        Monotone in Ts, flat beyond the measured range, ``factor(reference_ts) == 1``.

    Raises
    ------
    ValueError
        If ``ts`` and ``ratios`` differ in size or hold values that are not positive and
        finite, the points make fewer than two tissue steps, or ``reference_ts`` is not
        positive or lies outside the measured range of ``ts``.

    Notes
    -----
    Scherer et al., Sci Rep 6:36991 (2016), Fig. 1 and Results, find mu/eps unchanged
    behind 45 mm of breast; this model's R falls by about 20 % instead (docs/physics.md),
    hence the calibration.

    Examples
    --------
    >>> import numpy as np
    >>> from reconstruction import fit_tissue_correction
    >>> correction = fit_tissue_correction([0.05, 0.06, 0.2, 0.21, 0.5],
    ...                                    [1.25, 1.2, 1.1, 1.1, 1.0], reference_ts=0.5)
    >>> low, high = correction.measured_range
    >>> print(f"{low:.2f} {high:.2f} {correction.factor(0.5):.3f} {correction.factor(0.01):.3f}")
    0.05 0.50 1.000 1.250
    """
    reference_ts = _check_positive(reference_ts, "reference_ts")
    ts, ratios = _points(ts, ratios, ("ts", "ratios"))
    knots_ts, knots_c = monotone_knots(ts, ratios, tolerance=tolerance)
    if knots_ts.size < 2:
        raise ValueError(f"need points at two or more tissue steps, got one (Ts {ts.min():.4g}-"
                         f"{ts.max():.4g})")
    if not knots_ts[0] <= reference_ts <= knots_ts[-1]:
        raise ValueError(f"reference_ts {reference_ts:.4g} is outside the measured range "
                         f"{knots_ts[0]:.4g}-{knots_ts[-1]:.4g} of Ts: add a tissue step beyond it")
    draft = TissueCorrection(reference_ts, tuple(knots_ts), tuple(knots_c))
    scale = draft.factor(reference_ts)
    return TissueCorrection(reference_ts, tuple(map(float, knots_ts)),
                            tuple(float(c / scale) for c in knots_c),
                            tuple(map(float, ts)), tuple(float(r / scale) for r in ratios))


def correction_points(ts, ratio, bead, reference_ts: float, *,
                      tolerance: float = GROUP_TOLERANCE) -> np.ndarray:
    """``c = R_reference / R`` of each calibration cluster.

    Parameters
    ----------
    ts, ratio : array_like
        Surrounding-tissue transmission (0-1) and measured mu/eps of each cluster.
    bead : array_like
        Which reference bead (e.g. its grain radius in um) each cluster is made of.
    reference_ts : float
        Transmission of the reference tissue; ``R_reference`` of a bead is its monotone fit
        (:func:`monotone_knots`, PCHIP in ln Ts) at ``reference_ts``.

    Returns
    -------
    numpy.ndarray
        One factor per cluster, in the order given.

    Raises
    ------
    ValueError
        If ``ts``, ``ratio`` and ``bead`` differ in size, ``ts`` or ``ratio`` hold values
        that are not positive and finite, or ``reference_ts`` is not positive or lies
        outside a bead's measured range of Ts (the message names the bead).

    Examples
    --------
    Two bead sizes (radius in um), each behind three tissue steps:

    >>> import numpy as np
    >>> from reconstruction import correction_points
    >>> factors = correction_points(ts=[0.05, 0.2, 0.5, 0.05, 0.2, 0.5],
    ...                             ratio=[0.24, 0.27, 0.3, 0.4, 0.44, 0.5],
    ...                             bead=[100, 100, 100, 200, 200, 200], reference_ts=0.5)
    >>> print(np.round(factors, 3))
    [1.25  1.111 1.    1.25  1.136 1.   ]
    """
    reference_ts = _check_positive(reference_ts, "reference_ts")
    ts, ratio = _points(ts, ratio, ("ts", "ratio"))
    bead = np.asarray(bead).ravel()
    if bead.shape != ts.shape:
        raise ValueError(f"bead has {bead.size} values but ts has {ts.size}")
    factor = np.empty_like(ratio)
    for kind in np.unique(bead):
        mine = bead == kind
        knots_ts, knots_r = monotone_knots(ts[mine], ratio[mine], tolerance=tolerance)
        if not knots_ts[0] <= reference_ts <= knots_ts[-1]:
            raise ValueError(f"bead {kind}: reference_ts {reference_ts:.4g} is outside its measured "
                             f"range {knots_ts[0]:.4g}-{knots_ts[-1]:.4g} of Ts")
        reference = TissueCorrection(reference_ts, tuple(knots_ts), tuple(knots_r)).factor(reference_ts)
        factor[mine] = reference / ratio[mine]
    return factor


def correct_clusters(clusters: list[ClusterAnalysis],
                     correction: TissueCorrection | None) -> list[ClusterAnalysis]:
    """The clusters with ``ratio`` multiplied by ``c(Ts)`` and re-classified.

    Texture, borderline and suspicious come from :func:`classify_microtexture` of the
    cluster's pixels with mu scaled by ``c`` (its slope scales by ``c``, Var(mu/eps) by
    ``c**2``); ``mu`` and ``eps`` stay as measured, ``tissue_factor`` records ``c`` and
    ``uncorrected_ratio`` the measured slope.  Correcting a corrected cluster starts from
    its measured pixels again.

    Parameters
    ----------
    clusters : list of ClusterAnalysis
        Clusters as measured (:func:`analyse_clusters`).
    correction : TissueCorrection or None
        The calibration; None returns the clusters unchanged.

    Returns
    -------
    list of ClusterAnalysis
        One per cluster, in the order given.

    Raises
    ------
    TypeError
        If ``correction`` is neither a TissueCorrection nor None.

    Examples
    --------
    A fine cluster (mu/eps 0.30) behind thick tissue (Ts = 0.05), where the calibration
    says R reads 25 % low:

    >>> import numpy as np
    >>> from reconstruction import ClusterAnalysis, TissueCorrection, correct_clusters
    >>> correction = TissueCorrection(reference_ts=0.5, knots_ts=(0.05, 0.5),
    ...                               knots_factor=(1.25, 1.0))
    >>> cluster = ClusterAnalysis(
    ...     label=1, centroid_px=(5.0, 5.0), n_pixels=3, ratio=0.3, variance=0.0,
    ...     texture="fine", borderline=False, suspicious=False, mu=np.array([0.03, 0.06, 0.09]),
    ...     eps=np.array([0.1, 0.2, 0.3]), Ts=0.05, Vs=0.8)
    >>> out = correct_clusters([cluster], correction)[0]
    >>> print(f"{out.ratio:.3f}", out.texture, out.suspicious, f"{out.uncorrected_ratio:.2f}")
    0.375 pleomorphic True 0.30
    """
    if correction is None:
        return list(clusters)
    if not isinstance(correction, TissueCorrection):
        raise TypeError(f"correction must be a TissueCorrection or None, got {type(correction).__name__}")
    corrected = []
    for cluster in clusters:
        factor = correction.factor(cluster.Ts)
        texture = classify_microtexture(factor * cluster.mu, cluster.eps)
        corrected.append(dataclasses.replace(
            cluster, ratio=texture.ratio, variance=texture.variance, texture=texture.texture,
            borderline=texture.borderline, suspicious=texture.suspicious, tissue_factor=factor))
    return corrected
