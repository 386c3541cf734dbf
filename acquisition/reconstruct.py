"""``talbot-lau reconstruct RUN.h5 ...``: offline retrieval and classification of stored runs.

Each run record (``acquisition.run_record``) names its raw frames; they are read through
the one frame loader, analysed by the same code as the live processor
(``acquisition.projection``), and written as ``derived_<uid>.h5`` and
``report_<uid>.json`` (one row per cluster) in the output directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .derived_store import write_derived
from .frames import HDF5FrameHandler
from .projection import ProjectionFrames, analyse_projection
from .run_record import read_run_record


def load_projection(record) -> ProjectionFrames:
    """The frames of a recorded projection, read from their files."""
    stepping = record.start["phase_stepping"]
    streams = stepping["streams"]
    positions = np.asarray(stepping["positions_um"], float)
    handlers: dict[str, HDF5FrameHandler] = {}
    frames = ProjectionFrames(darks=[], reference={}, sample={})
    sets = {streams["reference"]: frames.reference, streams["sample"]: frames.sample}
    for row in record.frames:
        stream = row["stream"].decode() if isinstance(row["stream"], bytes) else row["stream"]
        file = row["file"].decode() if isinstance(row["file"], bytes) else row["file"]
        handler = handlers.setdefault(file, HDF5FrameHandler(file))
        frame = handler(int(row["point"])).astype(np.float64)
        if stream == streams["dark"]:
            frames.darks.append(frame)
        elif stream in sets:
            step = int(np.argmin(np.abs(positions - row["g2_um"])))
            sets[stream][step] = (float(row["g2_um"]), frame)
    for name, found in (("reference", frames.reference), ("sample", frames.sample)):
        if len(found) != stepping["steps"]:
            raise ValueError(f"the run has {len(found)} of {stepping['steps']} {name} steps")
    return frames


def reconstruct_run(path: str | Path, out_dir: str | Path) -> list[dict]:
    """Reconstruct one recorded run; returns its report rows."""
    record = read_run_record(path)
    analysis = analyse_projection(load_projection(record), record.start["phase_stepping"]["period_um"])
    uid = record.start["uid"]
    out = Path(out_dir)
    write_derived(out / f"derived_{uid[:8]}.h5", analysis.retrieval, analysis.labels,
                  analysis.clusters, uid)
    rows = [{"label": c.label, "centroid_px": [round(v, 2) for v in c.centroid_px],
             "pixels": c.n_pixels, "ratio": round(c.ratio, 4), "variance": round(c.variance, 5),
             "texture": c.texture, "borderline": c.borderline, "suspicious": c.suspicious}
            for c in analysis.clusters]
    (out / f"report_{uid[:8]}.json").write_text(json.dumps(
        {"run": uid, "sample": record.start.get("sample"), "clusters": rows}, indent=2))
    return rows
