"""``talbot-lau reconstruct RUN.nxs ...``: offline retrieval and classification of stored runs.

Each run record (``acquisition.run_record``) names its raw frames; they are read through
the one frame loader, sorted into sets and analysed by the same code as the live processor
(``acquisition.projection``); a mosaic's tiles are retrieved one by one, stitched
(``reconstruction.stitch``) and classified as one image.  Results go to
``derived_<uid8>.h5`` (linked to the run record) and ``report_<uid8>.json`` (one row per cluster).
"""

from __future__ import annotations

import json
from pathlib import Path

from .derived_store import derived_name, write_derived
from .frames import FrameLoader, FrameRef
from .projection import (
    ProjectionFrames,
    SetAssembler,
    analyse_mosaic,
    analyse_projection,
    retrieve_projection,
)
from .run_record import read_run_record
from .tissue_calibration_file import calibration_record, embedded_calibration


def load_sets(record) -> list[tuple[int, ProjectionFrames]]:
    """Every complete (tile, frames) set of a recorded run, read from the frame files.

    Sets are assembled as the live processor does (``SetAssembler``: a repeated set
    replaces the interrupted one, a set with a frame recorded with the shutter closed waits
    for its repeat); the beam check itself comes with the retrieval."""
    stepping = record.start["phase_stepping"]
    sets = SetAssembler.from_start(stepping)
    has_shutter = "shutter" in (record.frames.dtype.names or ())
    ready = []
    for row in record.frames:
        shutter = int(row["shutter"]) if has_shutter else -1
        ready += sets.add(_text(row["stream"]), float(row["g2_um"]),
                          FrameRef(_text(row["file"]), int(row["point"])), int(row["tile"]),
                          None if shutter < 0 else bool(shutter))
    ready += sets.finish()
    if not ready:
        raise ValueError(f"the run holds no complete phase-stepping set ({len(record.frames)} frames)")
    with FrameLoader() as loader:
        return [(tile, frames.load(loader)) for tile, frames in ready]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reconstruct_run(path: str | Path, out_dir: str | Path, *, calibration="configured") -> list[dict]:
    """Reconstruct one recorded run; returns its report rows.  ``calibration``: the tissue
    calibration applied, as the live processor's (``darkfield_router``)."""
    if isinstance(calibration, str) and calibration == "configured":
        calibration = embedded_calibration()
    correction = None if calibration is None else calibration.correction
    record = read_run_record(path)
    period = record.start["phase_stepping"]["period_um"]
    sets = load_sets(record)
    mosaic = record.start.get("mosaic")
    if mosaic:
        retrievals = {tile: retrieve_projection(frames, period) for tile, frames in sets}
        analysis = analyse_mosaic(retrievals, mosaic, record.start["detector_pixel"]["sample_pixel_mm"],
                                  correction)
    else:
        analysis = analyse_projection(sets[-1][1], period, correction)
    uid = record.start["uid"]
    out = Path(out_dir)
    write_derived(out / derived_name(uid), analysis.retrieval, analysis.labels,
                  analysis.clusters, uid, run_record=path,
                  tissue_calibration=calibration_record(calibration))
    rows = [{"label": c.label, "centroid_px": [round(v, 2) for v in c.centroid_px],
             "pixels": c.n_pixels, "ratio": round(c.ratio, 4), "variance": round(c.variance, 5),
             "texture": c.texture, "borderline": c.borderline, "suspicious": c.suspicious}
            for c in analysis.clusters]
    (out / f"report_{uid[:8]}.json").write_text(json.dumps(
        {"run": uid, "sample": record.start.get("sample"),
         "tissue_calibration": calibration_record(calibration), "clusters": rows}, indent=2))
    return rows
