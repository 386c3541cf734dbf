"""``talbot-lau study``: the accuracy-versus-dose study, its truth matching and its report."""

import json

import numpy as np
import pytest

from acquisition import cli
from acquisition.study import StudyArgumentError, check_arguments, run_study, summarise
from acquisition.truth_matching import match_truth

ROW_KEYS = {"tissue", "dose_mgy", "clusters", "detected", "class_correct", "false_per_cm2",
            "sensitivity", "specificity", "auc"}
SMALL = {"doses": "72,2.5", "tissues": "breast45", "clusters": 4, "seed": 3}


def _rows(report):
    """The rows without their timing (which differs run to run)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["rows"]]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, run_study(out, workers=2, progress=False, **SMALL)


@pytest.mark.slow
def test_report_files_schema_and_ranges(small_study):
    out, _ = small_study
    saved = json.loads((out / "report.json").read_text())
    assert saved["parameters"]["clusters"] == 4 and saved["parameters"]["seed"] == 3
    assert saved["versions"]["talbot-lau"]
    assert [(r["tissue"], r["dose_mgy"]) for r in saved["rows"]] == [("breast45", 72.0), ("breast45", 2.5)]
    for row in saved["rows"]:
        assert ROW_KEYS <= row.keys()
        assert row["clusters"] == 4
        for key in ("detected", "class_correct", "sensitivity", "specificity"):
            assert 0.0 <= row[key] <= 1.0, key
        assert row["class_correct"] <= row["detected"]
        assert row["false_per_cm2"] >= 0 and row["area_cm2"] > 0
        assert row["auc"] is None or 0.0 <= row["auc"] <= 1.0
        assert row["malignancy_ceiling"]["sensitivity"] == pytest.approx(
            (0.68 + 0.69) / (0.12 + 0.37 + 0.68 + 0.69))  # one cluster of each class
        assert set(row["r_per_class"]) == {"ultra-fine", "fine", "pleomorphic", "coarse"}
    # the dose is made by the sample exposure; the reference keeps the configured 9 s
    high, low = saved["rows"]
    assert low["exposure_s_per_step"] == pytest.approx(high["exposure_s_per_step"] * 2.5 / 72)
    assert low["reference_exposure_s_per_step"] == high["reference_exposure_s_per_step"] == 9.0
    assert len(saved["clusters"]) == 8  # every true cluster at every dose, matched or missed
    markdown = (out / "report.md").read_text()
    assert "## Missed true clusters" in markdown and "## False clusters" in markdown
    for name in ("accuracy_vs_dose.png", "ratio_measured_vs_true.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_more_dose_detects_no_fewer_clusters(small_study):
    _, report = small_study
    high, low = report["rows"]
    assert high["detected"] >= low["detected"]
    assert high["detected"] == 1.0  # 72 mGy, the paper's protocol, finds every cluster


@pytest.mark.slow
def test_dask_cluster_gives_the_same_rows(small_study, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, pooled = small_study
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        report = run_study(tmp_path, scheduler=cluster.scheduler_address, progress=False, **SMALL)
    assert _rows(report) == _rows(pooled)
    assert report["clusters"] == pooled["clusters"]


@pytest.mark.slow
def test_a_task_depends_on_the_seed_not_on_the_other_doses(small_study, tmp_path):
    _, report = small_study
    alone = run_study(tmp_path, workers=1, progress=False, **{**SMALL, "doses": "2.5"})
    assert _rows(alone) == _rows(report)[1:]
    other = run_study(tmp_path / "other", workers=1, progress=False, **{**SMALL, "doses": "2.5", "seed": 4})
    assert other["clusters"] != alone["clusters"]


def test_truth_matching_gate_and_one_to_one():
    truth = [(0.0, 0.0), (9.0, 0.0), (0.0, 9.0)]
    found = [(0.4, -0.3),  # the first cluster
             (9.3, 0.2), (8.2, 0.5),  # two detections near the second: one is false
             (30.0, 30.0)]  # far from everything: false, never matched
    m = match_truth(truth, found, gate_mm=1.5)
    assert [(t, d) for t, d, _ in m.pairs] == [(0, 0), (1, 1)]
    assert m.misses == (2,)  # nothing near the third
    assert m.false == (2, 3)
    assert m.detection_of(2) is None
    # a detection just outside the gate is not matched, just inside it is
    assert match_truth([(0, 0)], [(1.51, 0)], gate_mm=1.5).false == (0,)
    assert match_truth([(0, 0)], [(1.49, 0)], gate_mm=1.5).pairs[0][:2] == (0, 0)
    # the assignment is global: greedy nearest would take (0, 0) and lose the second truth
    m = match_truth([(0, 0), (2, 0)], [(1.0, 0), (-0.9, 0)], gate_mm=1.5)
    assert [(t, d) for t, d, _ in m.pairs] == [(0, 1), (1, 0)] and not m.false and not m.misses
    assert match_truth([], [(1, 1)]).false == (0,) and match_truth([(1, 1)], []).misses == (0,)
    with pytest.raises(ValueError, match="gate_mm"):
        match_truth(truth, found, gate_mm=0)


def _truth(true_class, detected, measured_class=None, ratio=None, suspicious=False, true_ratio=0.3):
    return {"cluster": true_class, "true_class": true_class, "chemistry": "hydroxyapatite",
            "detected": detected, "ratio": ratio,
            "measured_class": measured_class, "suspicious": suspicious, "true_ratio": true_ratio,
            "true_ratio_class": true_class}


def test_a_miss_counts_as_wrong_and_as_not_flagged():
    result = {"tissue": "t", "dose_mgy": 1.0, "exposure_s": 0.1, "reference_exposure_s": 9.0,
              "area_cm2": 2.0, "region": [0, 0, 1, 1], "seconds": 0.0,
              "false": [{"x_mm": 20.0, "y_mm": 0.0, "ratio": 0.2, "measured_class": "fine", "pixels": 30}],
              "truth": [_truth("fine", True, "fine", 0.25),
                        _truth("ultra-fine", False),  # missed benign: wrong class, not flagged
                        _truth("coarse", True, "coarse", 0.8, True, 0.9),
                        _truth("pleomorphic", False)]}  # missed suspicious: a false negative
    row = summarise(result)
    assert row["detected"] == 0.5
    assert row["class_correct"] == 0.5  # 2 right of 4: the misses count as wrong
    assert row["sensitivity"] == 0.5  # the missed pleomorphic cluster is a false negative
    assert row["specificity"] == 1.0
    assert row["false_per_cm2"] == 0.5 and row["false_clusters"] == 1 and row["misses"] == 2
    assert row["auc"] == 0.625  # misses rank below every detection, tied among themselves
    assert row["r_per_class"]["coarse"]["bias"] == pytest.approx(-0.1)
    assert row["r_per_class"]["pleomorphic"]["detected"] == 0
    assert row["by_chemistry"]["hydroxyapatite"] == {"clusters": 4, "class_correct": 0.5,
                                                     "noise_free_class_correct": 1.0}


@pytest.mark.parametrize("argv, option", [
    (["--doses=72,-1"], "--doses"),
    (["--doses", "72,abc"], "--doses"),
    (["--tissue", "liver10"], "--tissue"),
    (["--clusters", "0"], "--clusters"),
    (["--clusters", "100"], "--clusters"),  # the grid reaches beyond the gratings' field
    (["--workers", "0"], "--workers"),
])
def test_bad_arguments_named_before_any_work(argv, option, tmp_path, capsys):
    out = tmp_path / "study"
    assert cli.main(["study", "--out", str(out), *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "StudyArgumentError" in err[0], err
    assert not out.exists()  # nothing was simulated or written


def test_check_arguments_api(config_small):
    assert check_arguments("72, 2.5", "breast45,paraffin10", 4, 1, None, config_small) == (
        [72.0, 2.5], ["breast45", "paraffin10"])
    with pytest.raises(StudyArgumentError, match="--doses"):
        check_arguments("1000", "breast45", 4, 1, None, config_small)  # above the dose budget
    with pytest.raises(StudyArgumentError, match="--tissue"):
        check_arguments("72", "breast45,breast45", 4, 1, None, config_small)
    assert np.isfinite(float(check_arguments("0.5", "paraffin10", 1, 0, 1, config_small)[0][0]))
