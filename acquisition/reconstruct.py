"""``talbot-lau reconstruct RUN.nxs ...``: offline retrieval and classification of stored runs.

Each run record (``acquisition.run_record``) names its raw frames; they are read through
one frame loader for the whole run (one open handle per frame file, closed at the end),
sorted into sets and analysed by the same code as the live processor
(``acquisition.projection``); a mosaic's tiles are retrieved one by one (each written to
``derived_<uid8>_tileNN.h5``, as the live processor does), stitched (``reconstruction.stitch``)
and classified as one image.  Results go to ``derived_<uid8>.h5`` and ``report_<uid8>.json``
(one row per cluster), written with ``acquisition.derived_store.write_derived``.

A run folder may be moved or copied: the record's frame paths are relative to its folder
(``read_run_record`` resolves them there), and a stored reference fit that is no longer
where the start document says is looked for under its name in the record's folder
(:func:`portable_record`).
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import numpy as np

from .derived_store import derived_name, write_derived
from .frames import FrameLoader, FrameRef
from .projection import (
    ProjectionFrames,
    ReferenceFits,
    SetAssembler,
    analyse_tiles,
    classify_image,
    mosaic_tile,
)
from .run_record import RunRecord, read_run_record
from .tissue_calibration_file import calibration_record, embedded_calibration

def ready_sets(record) -> list[tuple[int, ProjectionFrames]]:
    """Every complete (tile, frames) set of a recorded run, its frames as FrameRefs (unread).

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
    return ready


def load_sets(record) -> list[tuple[int, ProjectionFrames]]:
    """Every complete (tile, frames) set of a recorded run, read from the frame files."""
    with FrameLoader() as loader:
        return [(tile, frames.load(loader)) for tile, frames in ready_sets(record)]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def portable_record(record: RunRecord, path: str | Path) -> RunRecord:
    """``record`` with its stored reference fit found in the record's current folder when it
    is no longer where the start document says (the frame files are resolved against the
    record's folder by :func:`acquisition.run_record.read_run_record`)."""
    folder = Path(path).resolve().parent
    stored = record.start["phase_stepping"].get("reference_fit")
    if not stored or Path(stored["path"]).is_file() or not (folder / Path(stored["path"]).name).is_file():
        return record
    start = copy.deepcopy(record.start)
    start["phase_stepping"]["reference_fit"]["path"] = str(folder / Path(stored["path"]).name)
    return RunRecord(start, record.stop, record.frames)


def reconstruct_run(path: str | Path, out_dir: str | Path, *, calibration="configured") -> list[dict]:
    """Reconstruct one recorded run; returns its report rows.  ``calibration``: the tissue
    calibration applied, as the live processor's (``darkfield_router``)."""
    if isinstance(calibration, str) and calibration == "configured":
        calibration = embedded_calibration()
    correction = None if calibration is None else calibration.correction
    record = portable_record(read_run_record(path), path)
    start, uid = record.start, record.start["uid"]
    period = start["phase_stepping"]["period_um"]
    sets = ready_sets(record)
    out = Path(out_dir)
    tissue = calibration_record(calibration)

    def write(name: str, analysis, **context) -> None:
        target = out / name
        try:
            write_derived(target, analysis.retrieval, analysis.labels, analysis.clusters, uid,
                          run_record=path, tissue_calibration=tissue, start=start, **context)
        except Exception:
            with contextlib.suppress(OSError):  # no truncated derived file left
                target.unlink(missing_ok=True)
            raise

    mosaic = start.get("mosaic")
    fits = ReferenceFits()  # a mosaic's tiles share a reference: fitted once
    with FrameLoader() as loader:  # one handle per frame file for the whole run
        if mosaic:
            tiles = {}  # float32 T, V, dphi per tile: what the stitch needs
            for tile, frames in sets:
                retrieval = fits.retrieve(frames, loader, period)
                write(derived_name(uid, tile), classify_image(retrieval, correction),
                      tile=tile, frames=frames)
                tiles[tile] = mosaic_tile(retrieval, mosaic, tile)
                del retrieval
            analysis = analyse_tiles(tiles, start["detector_pixel"]["sample_pixel_mm"], correction)
            write(derived_name(uid), analysis, tiles=sorted(tiles))
        else:
            frames = sets[-1][1]
            analysis = classify_image(fits.retrieve(frames, loader, period), correction)
            write(derived_name(uid), analysis, frames=frames)
    rows = [{"label": c.label, "centroid_px": [round(v, 2) for v in c.centroid_px],
             "pixels": c.n_pixels, "ratio": round(c.ratio, 4), "variance": round(c.variance, 5),
             "texture": c.texture, "borderline": c.borderline, "suspicious": c.suspicious}
            for c in analysis.clusters]
    (out / f"report_{uid[:8]}.json").write_text(json.dumps(
        {"run": uid, "sample": start.get("sample"), "tissue_calibration": tissue,
         "clusters": rows}, indent=2, default=_plain))
    return rows


def _plain(value):
    """numpy scalars in the report as plain JSON numbers."""
    return value.item() if isinstance(value, np.generic) else str(value)
