"""The files of ``talbot-lau study``: report.json, report.md and PNG plots (matplotlib, Agg).

- ``report.json``: the run's parameters and versions, ``rows`` (one per tissue and dose,
  see :func:`acquisition.study.summarise`), every true cluster with its match
  (``clusters``) and every false cluster (``false_clusters``).
- ``report.md``: the rows as tables, the diagnostic ceiling, R per class, class-correct
  per chemistry, and the lists of misses and false clusters.
- ``accuracy_vs_dose.png``: detected, class-correct and AUC against dose, per tissue.
- ``ratio_measured_vs_true.png``: measured mu/eps against the noise-free mu/eps of every
  detected true cluster, per tissue, coloured by dose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TABLE_1_BOUNDS = (0.17, 0.22, 0.33, 0.40, 0.55, 0.60)
"""Table 1's class boundaries of mu/eps (Scherer et al. 2016)."""


def _clean(value):
    """JSON without NaN/inf (they become null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_report(report: dict, out: Path) -> None:
    """Write report.json, report.md and the two PNG plots into ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(_clean(report), indent=1))
    (out / "report.md").write_text(format_markdown(report))
    plot_accuracy(report, out / "accuracy_vs_dose.png")
    plot_ratios(report, out / "ratio_measured_vs_true.png")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_markdown(report: dict) -> str:
    """The report as markdown tables."""
    p = report["parameters"]
    calibration = (p.get("tissue_calibration") or {}).get("id", "none")
    lines = [
        "# Accuracy against dose",
        "",
        (f"{p['clusters']} clusters per specimen, seed {p['seed']}, truth gate {p['gate_mm']:g} mm, "
         f"{p['steps']} steps at {p['kv']:g} kVp / {p['ma']:g} mA, reference "
         f"{p['reference_exposure_s']:g} s per step, tissue calibration {calibration}; wall time "
         f"{report['wall_seconds']:.0f} s. Class-correct counts a miss as wrong; sensitivity and "
         "specificity are for the true class being pleomorphic or coarse (mu/eps > 0.33), a miss "
         "counting as not flagged."),
        "",
        ("| tissue | dose mGy | s/step | detected | class correct | noise-free class correct | "
         "false /cm2 | sensitivity | specificity | AUC |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['tissue']} | {r['dose_mgy']:g} | {r['exposure_s_per_step']:.2f} | {_pct(r['detected'])} | "
            f"{_pct(r['class_correct'])} | {_pct(r['noise_free_class_correct'])} | "
            f"{_num(r['false_per_cm2'], 2)} | {_pct(r['sensitivity'])} | {_pct(r['specificity'])} | "
            f"{_num(r['auc'], 2)} |")
    lines += ["", "## Diagnostic ceiling", "",
              ("Expected sensitivity and specificity for malignancy, with the paper's malignancy "
               "rates per class (12 / 37 / 68 / 69 %, Results): a perfect classifier that flags "
               "every true pleomorphic and coarse cluster, against the measured flags."), "",
              ("| tissue | dose mGy | ceiling sensitivity | ceiling specificity | measured sensitivity | "
               "measured specificity |"), "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        c, m = r["malignancy_ceiling"], r["malignancy_measured"]
        lines.append(f"| {r['tissue']} | {r['dose_mgy']:g} | {_pct(c['sensitivity'])} | "
                     f"{_pct(c['specificity'])} | {_pct(m['sensitivity'])} | {_pct(m['specificity'])} |")
    lines += ["", "## mu/eps per class", "",
              ("Mean and sd of the measured mu/eps of the detected clusters of each true class, "
               "the noise-free mean, and the bias (measured minus noise-free, same clusters)."), "",
              "| tissue | dose mGy | class | detected | mean | sd | noise-free | bias |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        for texture, s in r["r_per_class"].items():
            lines.append(f"| {r['tissue']} | {r['dose_mgy']:g} | {texture} | {s['detected']} of "
                         f"{s['clusters']} | {_num(s['mean'])} | {_num(s['sd'])} | "
                         f"{_num(s['true_mean'])} | {_num(s['bias'])} |")
    lines += ["", "## By chemistry", "",
              "Class-correct (a miss is wrong) and noise-free class-correct per chemistry.", "",
              "| tissue | dose mGy | chemistry | clusters | class correct | noise-free class correct |",
              "| --- | ---: | --- | ---: | ---: | ---: |"]
    for r in report["rows"]:
        for chemistry, c in r["by_chemistry"].items():
            lines.append(f"| {r['tissue']} | {r['dose_mgy']:g} | {chemistry} | {c['clusters']} | "
                         f"{_pct(c['class_correct'])} | {_pct(c['noise_free_class_correct'])} |")
    misses = [c for c in report["clusters"] if not c["detected"]]
    lines += ["", f"## Missed true clusters ({len(misses)})", ""]
    if misses:
        lines += ["| tissue | dose mGy | cluster | true class | chemistry | x mm | y mm | noise-free mu/eps |",
                  "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {c['tissue']} | {c['dose_mgy']:g} | {c['cluster']} | {c['true_class']} | "
                  f"{c['chemistry']} | {_num(c['x_mm'], 1)} | {_num(c['y_mm'], 1)} | {_num(c['true_ratio'])} |"
                  for c in misses]
    else:
        lines.append("None.")
    false = report["false_clusters"]
    lines += ["", f"## False clusters ({len(false)})", ""]
    if false:
        lines += ["| tissue | dose mGy | x mm | y mm | pixels | mu/eps | class |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        lines += [f"| {f['tissue']} | {f['dose_mgy']:g} | {f['x_mm']:.1f} | {f['y_mm']:.1f} | "
                  f"{f['pixels']} | {_num(f['ratio'])} | {f['measured_class']} |" for f in false]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _figure(columns: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(5 * columns, 4), squeeze=False)
    return plt, figure, axes[0]


def plot_accuracy(report: dict, path: Path) -> None:
    """Detected, class-correct and AUC against dose (log axis), one line per tissue."""
    plt, figure, axes = _figure(3)
    for tissue in report["parameters"]["tissues"]:
        rows = sorted((r for r in report["rows"] if r["tissue"] == tissue), key=lambda r: r["dose_mgy"])
        doses = [r["dose_mgy"] for r in rows]
        for axis, key in zip(axes, ("detected", "class_correct", "auc")):
            values = [math.nan if r[key] is None else r[key] for r in rows]
            axis.plot(doses, values, "o-", label=tissue)
    from matplotlib.ticker import NullFormatter

    doses = sorted(report["parameters"]["doses_mgy"])
    for axis, title in zip(axes, ("detected", "class correct (a miss is wrong)", "AUC of mu/eps")):
        axis.set_xscale("log")
        axis.set_xticks(doses, [f"{d:g}" for d in doses])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("mean glandular dose (mGy)")
        axis.set_title(title)
        axis.set_ylim(0, 1.05)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_ratios(report: dict, path: Path) -> None:
    """Measured against noise-free mu/eps of the detected true clusters, per tissue."""
    tissues = report["parameters"]["tissues"]
    plt, figure, axes = _figure(len(tissues))
    doses = sorted(report["parameters"]["doses_mgy"], reverse=True)
    colours = plt.get_cmap("viridis")
    for axis, tissue in zip(axes, tissues):
        top = 0.1
        for k, dose in enumerate(doses):
            points = [(c["true_ratio"], c["ratio"]) for c in report["clusters"]
                      if c["tissue"] == tissue and c["dose_mgy"] == dose and c["detected"]
                      and c["true_ratio"] is not None]
            if points:
                x, y = zip(*points)
                top = max(top, max(x), max(y))
                axis.scatter(x, y, s=12, color=colours(k / max(len(doses) - 1, 1)), label=f"{dose:g} mGy")
        axis.plot([0, top], [0, top], "k-", lw=0.8)
        for bound in TABLE_1_BOUNDS:
            axis.axvline(bound, color="grey", lw=0.5, ls=":")
            axis.axhline(bound, color="grey", lw=0.5, ls=":")
        axis.set_xlabel("noise-free mu/eps")
        axis.set_ylabel("measured mu/eps")
        axis.set_title(tissue)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
