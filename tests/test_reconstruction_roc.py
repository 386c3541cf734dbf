"""ROC of the mu/eps cut-off: AUC, Youden point, confusion counts, bad input."""

import numpy as np
import pytest
from scipy import stats

from reconstruction.roc import confusion_at, roc_curve


def test_auc_is_the_mann_whitney_probability():
    rng = np.random.default_rng(1)
    benign = np.round(rng.normal(0.25, 0.1, 20), 2)  # rounded: ties happen
    malignant = np.round(rng.normal(0.45, 0.15, 11), 2)
    ratios = np.concatenate([benign, malignant])
    flags = np.r_[np.zeros(20, bool), np.ones(11, bool)]
    curve = roc_curve(ratios, flags)
    u = stats.mannwhitneyu(malignant, benign).statistic
    assert curve.auc == pytest.approx(u / (11 * 20))
    assert curve.sensitivity[0] == 1 and curve.specificity[-1] == 1


def test_perfect_separation_and_the_youden_threshold():
    ratios = [0.1, 0.14, 0.2, 0.3, 0.45, 0.5, 0.72]
    flags = [0, 0, 0, 0, 1, 1, 1]
    curve = roc_curve(ratios, flags)
    assert curve.auc == 1.0
    assert 0.3 <= curve.youden_threshold < 0.45
    assert curve.youden_sensitivity == curve.youden_specificity == 1.0


def test_confusion_at_the_papers_cutoff():
    ratios = [0.12, 0.3, 0.33, 0.34, 0.5, 0.2, 0.6]
    flags = [0, 0, 1, 1, 1, 1, 0]
    result = confusion_at(ratios, flags)  # 0.33 itself is not suspicious
    assert (result["true_positive"], result["false_negative"]) == (2, 2)
    assert (result["true_negative"], result["false_positive"]) == (2, 1)
    assert result["sensitivity"] == 0.5 and result["specificity"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("ratios, flags, message", [
    ([0.1, 0.2], [1], "2 ratios but 1 malignant"),
    ([0.1, np.nan], [0, 1], "NaN"),
    ([0.1, 0.2], [1, 1], "at least one malignant and one benign"),
])
def test_bad_input(ratios, flags, message):
    with pytest.raises(ValueError, match=message):
        roc_curve(ratios, flags)
