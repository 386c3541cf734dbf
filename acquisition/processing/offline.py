"""``talbot-lau reconstruct RUN.nxs ...``: offline retrieval and classification of stored runs.

Each run record (``acquisition.storage.run_record``) names its raw frames; they are read through
one frame loader for the whole run (one open handle per frame file, closed at the end),
sorted into sets and analysed by the same code as the live processor
(``acquisition.processing.analysis``); a mosaic's tiles are retrieved one by one (each written to
``derived_<uid8>_tileNN.h5``, as the live processor does), stitched (``reconstruction.stitch``)
and classified as one image.  Results go to ``derived_<uid8>.h5`` and ``report_<uid8>.json``
(one row per cluster), written with ``acquisition.storage.derived_store.write_derived``.

A run folder may be moved or copied: the record's frame paths are relative to its folder
(``read_run_record`` resolves them there), and a stored reference fit that is no longer
where the start document says is looked for under its name in the record's folder
(:func:`portable_record`).

:func:`save_reference_fit` fits a recorded run's reference scan and stores it
(``acquisition.storage.reference_fit``) for the low-dose protocol.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from ..config import embedded_calibration
from ..storage.derived_store import derived_name
from ..storage.frames import FrameLoader, FrameRef
from ..storage.reference_fit import ReferenceFit, ReferenceFitError, write_reference_fit
from ..storage.run_record_reader import RunRecord, RunRecordError, read_run_record
from ..storage.tissue_calibration_file import calibration_record
from .analysis import (
    ProjectionFrames,
    ReferenceFits,
    SetAssembler,
    analyse_tiles,
    check_beam,
    classify_image,
    mosaic_tile,
    reference_fit,
)
from .process_record import write_derived_file


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
        raise RunRecordError(f"the run holds no complete phase-stepping set ({len(record.frames)} frames)")
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
    record's folder by :func:`acquisition.storage.run_record_reader.read_run_record`)."""
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
        write_derived_file(out / name, analysis, uid, run_record=path, tissue_calibration=tissue,
                           start=start, **context)

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


def reference_fit_from_run(record_path: str | Path) -> ReferenceFit:
    """The reference fit of a recorded run (``run_<uid8>.nxs``): its first complete
    reference set, fitted and dark-subtracted with the darks of its own exposure."""
    record = read_run_record(record_path)
    start = record.start
    stepping = start["phase_stepping"]
    if stepping.get("reference_fit"):
        raise ReferenceFitError(f"run {start['uid'][:8]} used a stored reference fit; it has no "
                                "reference scan of its own")
    _, frames = load_sets(record)[0]
    check_beam(frames)
    det = start["detector_pixel"]
    return ReferenceFit(
        reference_fit(frames, stepping["period_um"]),
        float(stepping.get("reference_exposure_s", stepping["exposure_s"])),
        float(start["tube"]["kv"]), float(start["tube"]["ma"]),
        tuple(det["region"]) if det.get("region") else None, int(det["binning"]),
        float(stepping["period_um"]), tuple(float(x) for x in ProjectionFrames.stack(frames.reference)[0]),
        float(start["time"]), start["uid"])


def save_reference_fit(record_path: str | Path, out_path: str | Path) -> ReferenceFit:
    """Store the reference fit of a recorded run at ``out_path``; returns it."""
    reference = reference_fit_from_run(record_path)
    write_reference_fit(out_path, reference)
    return reference
