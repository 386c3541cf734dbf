"""``talbot-lau demo``: two simulated specimens, end to end, scored against their truth.

The twin's paraffin biopsy block (``configs/simulation.yaml``) and a 45 mm native breast
specimen with the same number of clusters (``simulators.physics.specimen("breast45")``) are
each measured by one dark-field projection on the in-process twins and processed on the
fly, as in a session.  Each measured cluster is paired with a true cluster inside a
distance gate (``acquisition.truth_matching``): the report lists every true cluster in the
field with its noise-free and measured mu/eps and classes, the missed true clusters and
the false clusters, and counts "N of M" over the TRUE clusters (a miss is not correct).
Raw frames go to ``OUT/raw``; the NeXus run records (``run_<uid8>.nxs``), the derived
images (``derived_<uid8>.h5``) and the scores (``report.json``) to ``OUT``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import Config, load_config
from .instrument import simulated_instrument
from .plans import darkfield_projection
from .processing.derived_collector import DerivedCollector
from .processing.live import darkfield_router
from .progress import PlanProgress
from .run_engine import run_engine
from .storage.run_recorder import run_recorder
from .storage.tissue_calibration_file import configured_calibration, tissue_correction
from .truth_matching import DEFAULT_GATE_MM, Detection, score_detections

BREAST = "breast45"
"""The demo's native breast specimen: 45 mm, the paper's compressed mastectomy (Methods)."""


def demo_specimens(config: Config, paraffin_block) -> list[tuple[str, object, dict]]:
    """(title, phantom, sample metadata) of the demo's two specimens: the twin's paraffin
    block and a 45 mm breast with as many clusters, from the same seed."""
    from simulators.physics import specimen

    slab = paraffin_block.slab
    block_mm = slab.thickness_mm if slab is not None else 0.0
    breast = specimen(BREAST, clusters=len(paraffin_block.clusters), seed=config.simulation.phantom.seed)
    return [
        (f"paraffin block, {block_mm:g} mm", paraffin_block,
         {"id": "demo-paraffin-block", "thickness_mm": block_mm,
          "description": "paraffin biopsy block with calcification clusters of the four classes"}),
        ("native breast, 45 mm", breast,
         {"id": "demo-breast", "thickness_mm": 45.0, "breast_thickness_mm": 45.0,
          "description": "45 mm native breast (fibroglandular texture, fibres, ducts) with "
                         "calcification clusters of the four classes"}),
    ]


def run_demo(out_dir: str | Path = "talbot-lau-demo", config: Config | None = None,
             *, quiet: bool = False) -> dict:
    """Run the demo; return the report (also written to ``out_dir/report.json``)."""
    from simulators.physics import TubeState  # noqa: F401  (the physics engine, loaded once here)

    from .study import true_ratios

    out = Path(out_dir)
    config = config or load_config()
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=out, publish=collector, calibration=configured_calibration(config))
    block = simulated_instrument(config, write_path=out / "raw")
    measured = []
    with run_engine(call_returns_result=False) as engine:
        engine.subscribe(run_recorder(out))
        engine.subscribe(PlanProgress(disable=quiet))
        engine.subscribe(processor)
        for title, phantom, sample in demo_specimens(config, block.world.phantom):
            instrument = block if phantom is block.world.phantom else simulated_instrument(
                config, write_path=out / "raw", phantom=phantom)
            (uid,) = engine(darkfield_projection(instrument, sample=sample, operator="demo"))
            measured.append((title, phantom, sample, uid))
    processor.wait()
    failed = [s for s in collector.stops if s["exit_status"] != "success"]
    if failed:
        raise RuntimeError(f"processing failed: {failed[0].get('reason')}")

    correction = tissue_correction(config)
    stage = tuple(config.instrument.stage.sample_position_mm)
    specimens = []
    for title, phantom, sample, uid in measured:
        detections = [Detection.from_row(row) for row in collector.clusters if row["run_uid"] == uid]
        noise_free = true_ratios(config.setup, phantom, config, correction)
        truth, false = score_detections(config.setup, phantom, stage, detections, noise_free)
        in_field = [row for row in truth if row["x_mm"] is not None]
        specimens.append({
            "specimen": title, "sample": sample["id"], "run_uid": uid,
            "true_clusters": len(in_field),
            "detected": sum(row["detected"] for row in in_field),
            "class_correct": sum(row["measured_class"] == row["true_class"] for row in in_field),
            "misses": [row["cluster"] for row in in_field if not row["detected"]],
            "false_clusters": false, "clusters": in_field,
        })
    report = {"gate_mm": DEFAULT_GATE_MM, "specimens": specimens}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if not quiet:
        print(format_report(report))
        print(f"\nraw frames in {out / 'raw'}, derived images and report.json in {out}")
    return report


HEADER = (f"{'cluster':<16}{'true class':<13}{'chemistry':<11}{'noise-free':>10}{'mu/eps':>8}  "
          f"{'measured class':<16}{'suspicious':<11}match")
"""The header of each specimen's table (docs/operating.md shows it)."""


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_report(report: dict) -> str:
    """Per specimen: one line per true cluster (truth, noise-free and measured mu/eps,
    measured class, suspicious, match), then the misses, the false clusters and the count."""
    lines = []
    for s in report["specimens"]:
        lines += ["", f"{s['specimen']} ({s['sample']}): {s['true_clusters']} true clusters in the field",
                  HEADER]
        for r in s["clusters"]:
            chemistry = "oxalate" if "oxalate" in r["chemistry"] else "HA"
            match = "missed" if not r["detected"] else ("yes" if r["measured_class"] == r["true_class"] else "NO")
            lines.append(f"{r['cluster']:<16}{r['true_class']:<13}{chemistry:<11}{_number(r['true_ratio']):>10}"
                         f"{_number(r['ratio']):>8}  {r['measured_class'] or '-':<16}"
                         f"{('yes' if r['suspicious'] else 'no') if r['detected'] else '-':<11}{match}")
        misses = ", ".join(s["misses"]) or "none"
        false = "; ".join(f"at ({f['x_mm']:+.1f}, {f['y_mm']:+.1f}) mm, mu/eps {f['ratio']:.3f} "
                          f"{f['measured_class']}" for f in s["false_clusters"]) or "none"
        lines += [f"missed true clusters: {misses}", f"false clusters: {false}",
                  f"{s['class_correct']} of {s['true_clusters']} true clusters classified as the truth says "
                  f"({s['detected']} detected; suspicious above mu/eps = 0.33)"]
    return "\n".join(lines).lstrip("\n")
