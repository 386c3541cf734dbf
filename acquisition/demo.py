"""``talbot-lau demo``: a complete simulated specimen, end to end.

A phantom with calcification clusters of the four classes is measured by a dark-field
projection on the in-process twins, processed on the fly, and every measured cluster is
compared with the twin's truth.  Raw frames go to ``OUT/raw``; the NeXus run record
(``run_<uid8>.nxs``), the derived images (``derived_<uid8>.h5``) and the comparison
(``report.json``) to ``OUT``.
"""

from __future__ import annotations

import json
from pathlib import Path

import event_model
import numpy as np
from bluesky import RunEngine
from scipy import ndimage

from .config import Config, load_config
from .instrument import simulated_instrument
from .plans import darkfield_projection
from .processing import darkfield_router
from .progress import PlanProgress
from .run_record import run_recorder, sample_id


class DerivedCollector(event_model.DocumentRouter):
    """Keeps the cluster rows of the derived runs published by the processor.

    Each row is the ``clusters`` event's data plus where it came from: ``run_uid`` (the
    measured run, the derived run's ``parent_uid``), ``derived_uid`` (the derived run),
    ``sample`` (the sample id, from a dict or a stock bluesky string) and, for a mosaic's
    tile, ``tile``."""

    def __init__(self):
        super().__init__()
        self.clusters: list[dict] = []
        self.stops: list[dict] = []
        self._starts: dict[str, dict] = {}  # derived run uid -> its start document
        self._cluster_descriptors: dict[str, str] = {}  # descriptor uid -> run uid

    def start(self, doc):
        self._starts[doc["uid"]] = doc

    def descriptor(self, doc):
        if doc["name"] == "clusters":
            self._cluster_descriptors[doc["uid"]] = doc["run_start"]

    def event(self, doc):
        run = self._cluster_descriptors.get(doc["descriptor"])
        if run is not None:
            start = self._starts.get(run, {})
            tile = start.get("tile")
            origin = {"run_uid": start.get("parent_uid", ""), "derived_uid": run,
                      "sample": sample_id(start.get("sample"))}
            if isinstance(tile, dict) and "tile" in tile:
                origin["tile"] = tile["tile"]
            self.clusters.append({**doc["data"], **origin})

    def stop(self, doc):
        self.stops.append(doc)
        self._starts.pop(doc["run_start"], None)
        self._cluster_descriptors = {d: r for d, r in self._cluster_descriptors.items()
                                     if r != doc["run_start"]}


def run_demo(out_dir: str | Path = "talbot-lau-demo", config: Config | None = None,
             *, quiet: bool = False) -> list[dict]:
    """Run the demo; return the report rows (also written to ``out_dir/report.json``)."""
    out = Path(out_dir)
    config = config or load_config()
    instrument = simulated_instrument(config, write_path=out / "raw")
    collector = DerivedCollector()
    engine = RunEngine({}, call_returns_result=False)
    engine.subscribe(run_recorder(out))
    engine.subscribe(PlanProgress(disable=quiet))
    processor = darkfield_router(out_dir=out, publish=collector)
    engine.subscribe(processor)
    sample = {"id": "demo-phantom", "thickness_mm": config.simulation.phantom.slab.thickness_mm,
              "description": "paraffin block with calcification clusters of the four classes"}
    engine(darkfield_projection(instrument, sample=sample, operator="demo"))
    processor.wait()
    failed = [s for s in collector.stops if s["exit_status"] != "success"]
    if failed:
        raise RuntimeError(f"processing failed: {failed[0].get('reason')}")
    rows = match_truth(collector.clusters, instrument, config)
    (out / "report.json").write_text(json.dumps(rows, indent=2))
    if not quiet:
        print(format_report(rows))
        print(f"\nraw frames in {out / 'raw'}, derived images and report.json in {out}")
    return rows


def match_truth(clusters: list[dict], instrument, config: Config) -> list[dict]:
    """Pair each measured cluster with the nearest true cluster of the twin's phantom."""
    from simulators.physics import truth_labels

    phantom = instrument.world.phantom
    truth = truth_labels(config.setup, phantom, config.instrument.stage.sample_position_mm)
    present = [i for i in range(1, len(phantom.clusters) + 1) if (truth == i).any()]
    centres = np.array(ndimage.center_of_mass(truth > 0, truth, present)).reshape(-1, 2)
    rows = []
    for c in clusters:
        distance = np.hypot(*(centres - [c["centroid_row"], c["centroid_col"]]).T)
        true = phantom.clusters[present[int(np.argmin(distance))] - 1] if present else None
        rows.append({
            "cluster": true.name if true else f"unmatched-{c['label']}",
            "true_texture": true.texture if true else None,
            "ratio": round(c["ratio"], 4),
            "texture": c["texture"],
            "suspicious": c["suspicious"],
            "borderline": c["borderline"],
            "pixels": c["n_pixels"],
        })
    return sorted(rows, key=lambda r: r["cluster"])


def format_report(rows: list[dict]) -> str:
    """One line per cluster: truth, measured mu/eps, measured class, suspicious."""
    lines = [f"{'cluster':<16}{'true class':<14}{'mu/eps':>8}  {'measured class':<16}"
             f"{'suspicious':<11}{'match':<5}"]
    for r in rows:
        match = "yes" if r["true_texture"] == r["texture"] else "NO"
        lines.append(f"{r['cluster']:<16}{str(r['true_texture']):<14}{r['ratio']:>8.3f}  "
                     f"{r['texture']:<16}{'yes' if r['suspicious'] else 'no':<11}{match:<5}")
    correct = sum(r["true_texture"] == r["texture"] for r in rows)
    lines.append(f"{correct} of {len(rows)} clusters classified as the truth says "
                 f"(suspicious above mu/eps = 0.33)")
    return "\n".join(lines)
