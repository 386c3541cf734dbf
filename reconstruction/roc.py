"""Diagnostic performance of the mu/eps cut-off (paper Fig. 5: ROC, Youden index, AUC).

Scherer et al. 2016 classified 31 biopsied clusters as malignant when mu/eps exceeded a
cut-off; the Youden index chose 0.33 (sensitivity 83 %, specificity 57 %, AUC 0.73).
A cluster counts as positive when its ratio is greater than the threshold, as in
``classify_microtexture`` (suspicious for ratio > 0.33).  The AUC is the trapezoid under
the ROC, equal to the Mann-Whitney probability that a malignant cluster has the higher
ratio (ties count one half).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RocCurve:
    """Sensitivity and specificity at every threshold, the AUC and the Youden point."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    auc: float
    youden_threshold: float
    youden_sensitivity: float
    youden_specificity: float


def _checked(ratios, malignant) -> tuple[np.ndarray, np.ndarray]:
    ratios = np.asarray(ratios, dtype=np.float64).ravel()
    malignant = np.asarray(malignant, dtype=bool).ravel()
    if ratios.size != malignant.size:
        raise ValueError(f"{ratios.size} ratios but {malignant.size} malignant flags")
    if not np.all(np.isfinite(ratios)):
        raise ValueError("ratios contain NaN or infinite values")
    if malignant.all() or not malignant.any():
        raise ValueError("need at least one malignant and one benign cluster")
    return ratios, malignant


def confusion_at(ratios, malignant, cutoff: float = 0.33) -> dict:
    """Sensitivity, specificity and the four counts when ratio > ``cutoff`` is positive."""
    ratios, malignant = _checked(ratios, malignant)
    positive = ratios > cutoff
    tp, fn = int(np.sum(positive & malignant)), int(np.sum(~positive & malignant))
    tn, fp = int(np.sum(~positive & ~malignant)), int(np.sum(positive & ~malignant))
    return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
            "true_positive": tp, "false_negative": fn, "true_negative": tn, "false_positive": fp}


def roc_curve(ratios, malignant) -> RocCurve:
    """The ROC of classifying ratio > threshold as malignant, over every distinct ratio."""
    ratios, malignant = _checked(ratios, malignant)
    thresholds = np.concatenate([[-np.inf], np.unique(ratios), [np.inf]])
    positive = ratios[None, :] > thresholds[:, None]
    sensitivity = (positive & malignant).sum(axis=1) / malignant.sum()
    specificity = (~positive & ~malignant).sum(axis=1) / (~malignant).sum()
    # from the highest threshold down both rates only grow: the curve in order
    x, y = (1 - specificity)[::-1], sensitivity[::-1]
    auc = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))
    best = int(np.argmax(sensitivity + specificity - 1))
    return RocCurve(thresholds, sensitivity, specificity, auc, float(thresholds[best]),
                    float(sensitivity[best]), float(specificity[best]))
