"""Write what the processor derives from one projection to a NeXus (HDF5) file.

``derived_<uid8>.h5`` (a mosaic tile: ``derived_<uid8>_tile<NN>.h5``; a mosaic's stitch:
``derived_<uid8>.h5``)::

    /  NXroot  @default=entry  @file_name (the file's own name, no folder)
      entry: NXentry  @default=dark_field
        title, program_name @version
        sample: NXsample   name, sample_id; a tile: stage_x, stage_y (NXpositioner, mm)
        transmission, dark_field, differential_phase, absorption, scattering, labels: NXdata
            @signal=data @axes=["y", "x"] @y_indices=0 @x_indices=1
            data: float32 image (differential_phase in rad; labels int32, 0 = no cluster)
            y, x: mm at the sample (:func:`sample_axes`)
        clusters: NXcollection   one 1-D field per column, one row per cluster: label,
            centroid_row, centroid_col (pixel), n_pixels, ratio (mu/eps), variance,
            texture, borderline, suspicious, tissue_factor (c(Ts) applied to the ratio),
            uncorrected_ratio (as measured), Ts, Vs (surrounding tissue, eq. 2)
        tissue_calibration: NXcollection   id, version, sha256 of the tissue calibration
            applied ("none", -1, "" if none; acquisition.storage.tissue_calibration_file)
        cluster_pixels: NXcollection
            <label>: NXcollection   mu, eps (the cluster's tissue-normalised pixels)
        process: NXprocess   program, version, date, sequence_index (:func:`write_process`)
            run_record: NXnote   file_name (relative), identifier_run_uuid (the raw run)
            retrieval, segmentation, normalisation, classification, tissue_correction
            [, stitching] [, tile]: NXparameters   sequence_index, function, description and
                every parameter as the code uses it
        raw   a tile or projection: NXdata over the set's own frames (virtual dataset with
              relative source paths, image_key 0 sample / 1 reference / 2 dark per frame);
              a stitch (or no frames given): -> run_<uid8>.nxs:/entry/data (ExternalLink)

Every path written is relative to this file's folder, so a run folder moves as a whole.
The record link targets the record's NXdata, not its NXentry: nexusformat (2.1) cannot
follow an external link to a group that holds groups.  A virtual dataset whose frame file
is missing reads as zeros (HDF5's fill value), not as an error.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from .frames import FRAME_DATASET, FrameLoader, FrameRef
from .nexus import (
    IMAGE_KEYS,
    iso8601,
    nx_field,
    nx_group,
    nx_image,
    nx_quantities,
    nx_root,
    nx_virtual_stack,
    software_version,
)

IMAGES = ("transmission", "dark_field", "differential_phase", "absorption", "scattering")
UNITS = {"differential_phase": "rad"}
LONG_NAMES = {"transmission": "transmission T", "dark_field": "dark-field V (visibility reduction)",
              "differential_phase": "differential phase dphi", "absorption": "absorption mu = -ln T",
              "scattering": "scattering eps = -ln V"}
CLUSTER_COLUMNS = {"label": "i4", "centroid_row": "f8", "centroid_col": "f8", "n_pixels": "i4",
                   "ratio": "f8", "variance": "f8", "texture": h5py.string_dtype(),
                   "borderline": "?", "suspicious": "?", "tissue_factor": "f8",
                   "uncorrected_ratio": "f8", "Ts": "f8", "Vs": "f8"}


def derived_name(uid: str, tile: int | None = None) -> str:
    """File name of the derived file of run ``uid`` (of one mosaic ``tile``)."""
    return f"derived_{uid[:8]}{'' if tile is None else f'_tile{tile:02d}'}.h5"


def derived_glob(uid: str) -> str:
    """Glob pattern matching every derived file of run ``uid``."""
    return f"derived_{uid[:8]}*.h5"


def sample_axes(shape: tuple[int, int], pixel_mm: float, stage_mm=(0.0, 0.0),
                origin_px=(0, 0), tile_shape: tuple[int, int] | None = None):
    """(y, x): mm at the sample of each row and column of an image.

    Sample coordinates as in ``reconstruction.stitching``: the point imaged at pixel p (from
    the tile centre) of a tile taken at stage position s (x_mm, y_mm) is u = p*pixel - s.
    ``origin_px``: (row, column) of that tile's first pixel in the image (a mosaic's
    ``offsets_px``); ``tile_shape``: its shape (default the image's)."""
    if not pixel_mm > 0:
        raise ValueError(f"sample_pixel_mm must be > 0, got {pixel_mm}")
    rows, cols = tile_shape or shape
    sx, sy = (float(v) for v in stage_mm)
    y = (np.arange(shape[0]) - origin_px[0] - (rows - 1) / 2) * pixel_mm - sy
    x = (np.arange(shape[1]) - origin_px[1] - (cols - 1) / 2) * pixel_mm - sx
    return y, x


def write_derived(path: Path, retrieval, labels: np.ndarray, clusters: list, parent_uid: str,
                  run_record: str | Path | None = None, tissue_calibration: dict | None = None, *,
                  start: dict | None = None, tile: int | None = None, frames=None,
                  tiles: list[int] | None = None, process_steps=None) -> Path:
    """Write the retrieved images, the cluster labels and the cluster table to ``path``.

    ``run_record``: the run's ``run_<uid8>.nxs``; ``tissue_calibration``: the record (id,
    version, sha256) of the calibration applied to the clusters' ratios (None: none).
    ``start``: the raw run's start document (axes in mm, sample, processing parameters;
    None: pixel axes only); ``tile``: the mosaic tile this file holds (None: a projection
    or the stitch); ``frames``: the set's ``ProjectionFrames`` with FrameRefs (as
    assembled, before loading), linked as ``/entry/raw``; ``tiles``: the tile indices of a
    stitched ``Mosaic``, in its ``offsets_px`` order; ``process_steps``: (name, parameters)
    of every processing step, written to the NXprocess (:func:`write_process`)."""
    path = Path(path)
    stitched = hasattr(retrieval, "offsets_px")
    if start is not None:
        _check_context(start, tile, tiles, retrieval, stitched)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        entry = nx_root(f, software_version())
        f.attrs["file_name"] = path.name  # no folder: the file may move
        entry.attrs["default"] = "dark_field"
        what = "stitched mosaic" if stitched else ("mosaic tile" if tile is not None else "projection")
        nx_field(entry, "title", f"dark-field retrieval of run {parent_uid} ({what}"
                 f"{'' if tile is None else f' {tile}'})")
        axes = _axes(np.shape(labels), start, tile, tiles, retrieval) if start else None
        for name in IMAGES:
            _image(entry, name, np.asarray(getattr(retrieval, name), np.float32), axes,
                   UNITS.get(name), LONG_NAMES[name])
        _image(entry, "labels", labels.astype(np.int32, copy=False), axes, long_name="cluster label")
        _cluster_table(entry, clusters)
        record = tissue_calibration or {"id": "none"}
        calibration = nx_group(entry, "tissue_calibration", "NXcollection")
        nx_field(calibration, "id", str(record.get("id") or "none"))
        nx_field(calibration, "version", -1 if record.get("version") is None else int(record["version"]))
        nx_field(calibration, "sha256", str(record.get("sha256") or ""))
        if start is not None:
            _sample(entry, start, tile)
        write_process(entry, path, parent_uid, run_record, process_steps)
        linked = frames is not None and not stitched and _link_frames(entry, path, frames, axes)
        if not linked and run_record is not None:
            entry["raw"] = h5py.ExternalLink(relative_path(run_record, path), "/entry/data")
    return path


def _check_context(start: dict, tile, tiles, retrieval, stitched: bool) -> None:
    """One clear error naming the argument that does not fit the start document."""
    if not isinstance(start, dict) or "phase_stepping" not in start:
        raise ValueError("start: the raw run's start document (with phase_stepping) is needed")
    if not isinstance((start.get("detector_pixel") or {}).get("sample_pixel_mm"), (int, float)):
        raise ValueError("start: the start document has no detector_pixel.sample_pixel_mm (mm)")
    mosaic = {t["tile"]: t for t in (start.get("mosaic") or {}).get("tiles", [])}
    if tile is not None and tile not in mosaic:
        raise ValueError(f"tile: {tile} is not a tile of the run's mosaic ({sorted(mosaic)})")
    if stitched:
        if tiles is None or len(tiles) != len(retrieval.offsets_px):
            raise ValueError(f"tiles: the {len(retrieval.offsets_px)} tile indices of the stitched "
                             f"mosaic are needed, got {tiles}")
        missing = sorted(set(tiles) - set(mosaic))
        if missing:
            raise ValueError(f"tiles: {missing} are not tiles of the run's mosaic ({sorted(mosaic)})")


def tile_stage_mm(start: dict, tile: int) -> tuple[float, float]:
    """(x_mm, y_mm) of a mosaic tile's stage position (the start document's plan)."""
    spec = next(t for t in start["mosaic"]["tiles"] if t["tile"] == tile)
    return float(spec["x_mm"]), float(spec["y_mm"])


def _axes(shape, start: dict, tile, tiles, retrieval):
    pixel_mm = float(start["detector_pixel"]["sample_pixel_mm"])
    if tiles is not None and hasattr(retrieval, "offsets_px"):  # the stitch: tile 0 of the list
        offsets = np.asarray(retrieval.offsets_px, int).reshape(-1, 2)
        tile_shape = tuple(np.asarray(shape) - offsets.max(axis=0))
        return sample_axes(shape, pixel_mm, tile_stage_mm(start, tiles[0]), offsets[0], tile_shape)
    return sample_axes(shape, pixel_mm, (0.0, 0.0) if tile is None else tile_stage_mm(start, tile))


def _image(entry, name: str, image: np.ndarray, axes, units=None, long_name=None) -> None:
    # gzip-1 shrinks a full-frame float image by 7-31 % in 0.2-0.35 s, the labels by 99 % in 0.03 s
    data = nx_image(entry, name, image, units, long_name, compress=name == "labels")
    if axes is None:
        return
    for axis, values in zip("yx", axes):
        nx_field(data, axis, values, "mm", long_name=f"{axis} at the sample (mm)")
    data.attrs.update(axes=["y", "x"], y_indices=0, x_indices=1)


def _cluster_table(entry, clusters: list) -> None:
    table = nx_group(entry, "clusters", "NXcollection")
    rows = [(c.label, c.centroid_px[0], c.centroid_px[1], c.n_pixels, c.ratio, c.variance,
             c.texture, c.borderline, c.suspicious, c.tissue_factor, c.uncorrected_ratio,
             c.Ts, c.Vs)
            for c in clusters]
    columns = list(zip(*rows)) if rows else [()] * len(CLUSTER_COLUMNS)
    for (name, dtype), column in zip(CLUSTER_COLUMNS.items(), columns):
        table.create_dataset(name, data=np.array(column, dtype=dtype), dtype=dtype)
    for name in ("centroid_row", "centroid_col"):
        table[name].attrs["units"] = "pixel"
    pixels = nx_group(entry, "cluster_pixels", "NXcollection")
    for c in clusters:  # the tissue-normalised pixels of each cluster, for scatter plots
        group = nx_group(pixels, str(int(c.label)), "NXcollection")
        group.create_dataset("mu", data=np.asarray(c.mu, np.float32))
        group.create_dataset("eps", data=np.asarray(c.eps, np.float32))


def _sample(entry, start: dict, tile) -> None:
    from .run_record import sample_fields  # run_record imports this module

    sample = sample_fields(start.get("sample"))
    group = nx_group(entry, "sample", "NXsample")
    nx_field(group, "name", str(sample.get("name", sample.get("id", ""))))
    nx_field(group, "sample_id", str(sample.get("id", "")))
    if tile is not None:
        for axis, value in zip(("x", "y"), tile_stage_mm(start, tile)):
            stage = nx_group(group, f"stage_{axis}", "NXpositioner")
            nx_field(stage, "name", f"stage_{axis}")
            nx_field(stage, "value", value, "mm")


def write_process(entry, path: Path, parent_uid: str, run_record, steps) -> h5py.Group:
    """The NXprocess ``process``: program, version, date, the raw run's record, and one
    NXparameters group per ``(name, values)`` of ``steps`` (in order; the processor's
    ``acquisition.processing.process_record.process_steps``)."""
    process = nx_group(entry, "process", "NXprocess")
    nx_field(process, "program", "talbot-lau")
    nx_field(process, "version", software_version())
    nx_field(process, "date", iso8601(time.time()))
    nx_field(process, "sequence_index", 1)
    note = nx_group(process, "run_record", "NXnote")
    nx_field(note, "description", "the run record of the raw run this file derives from")
    nx_field(note, "identifier_run_uuid", parent_uid)
    if run_record is not None:
        nx_field(note, "file_name", relative_path(run_record, path))
    for index, (name, values) in enumerate(steps or (), start=1):
        group = nx_group(process, name, "NXparameters")
        nx_field(group, "sequence_index", index)
        _parameters(group, values)
    return process


def _parameters(group, values: dict) -> None:
    """Parameters as fields (names ending in a unit get it: ``nexus.nx_quantities``; ``_px``:
    pixel); a list of strings as a string array."""
    texts = {k: v for k, v in values.items()
             if isinstance(v, (list, tuple)) and v and all(isinstance(i, str) for i in v)}
    for name, value in texts.items():
        nx_field(group, name, list(value), dtype=h5py.string_dtype())
    nx_quantities(group, {k: v for k, v in values.items() if k not in texts})
    for name in group:
        if name.endswith("_px"):
            group[name].attrs["units"] = "pixel"


def _frame_list(frames) -> list[tuple[str, float, FrameRef]] | None:
    """(role, G2 position um, FrameRef) of every frame of a set, darks first; None if a
    frame is not a FrameRef (arrays cannot be linked)."""
    listed = [("dark", np.nan, f) for f in frames.darks]
    listed += [("reference_dark", np.nan, f) for f in frames.reference_darks]
    listed += [("reference", x, f) for _, (x, f) in sorted(frames.reference.items())]
    listed += [("sample", x, f) for _, (x, f) in sorted(frames.sample.items())]
    if not listed or not all(isinstance(f, FrameRef) for _, _, f in listed):
        return None
    return listed


def _link_frames(entry, path: Path, frames, axes) -> bool:
    """``/entry/raw``: an NXdata over exactly this set's frames (a virtual dataset whose
    sources are named relative to this file's folder); False if the frames are arrays."""
    listed = _frame_list(frames)
    if listed is None:
        return False
    with FrameLoader() as loader:  # one frame per file: its shape and type (shared handle)
        first = {}
        for _, _, ref in listed:
            if ref.file not in first:
                first[ref.file] = np.asarray(loader(ref))
    sample = first[listed[0][2].file]
    rows = [(role, x, ref, index) for role, x, ref in listed
            for index in range(ref.point * ref.frame_per_point, (ref.point + 1) * ref.frame_per_point)]
    raw = nx_group(entry, "raw", "NXdata", signal="data")
    data = nx_virtual_stack(raw, "data", [(relative_path(ref.file, path), i) for _, _, ref, i in rows],
                            sample.shape[-2:], sample.dtype, FRAME_DATASET)
    data.attrs["long_name"] = "raw frames of this set (ADU)"
    nx_field(raw, "frame", np.arange(len(rows)), long_name="frame of this set")
    if axes is None:
        raw.attrs["axes"] = ["frame", ".", "."]
    else:
        for axis, values in zip("yx", axes):
            nx_field(raw, axis, values, "mm", long_name=f"{axis} at the sample (mm)")
        raw.attrs.update(axes=["frame", "y", "x"], frame_indices=0, y_indices=1, x_indices=2)
    nx_field(raw, "image_key", np.array([IMAGE_KEYS[r] for r, _, _, _ in rows], np.int8),
             long_name="0 sample, 1 reference (flat field), 2 dark (NXtomo)")
    nx_field(raw, "role", [r for r, _, _, _ in rows], dtype=h5py.string_dtype())
    nx_field(raw, "g2_position", np.array([x for _, x, _, _ in rows], float), "um")
    nx_field(raw, "frame_file", [relative_path(ref.file, path) for _, _, ref, _ in rows],
             dtype=h5py.string_dtype(), long_name="frame file, relative to this file's folder")
    nx_field(raw, "frame_index", np.array([i for _, _, _, i in rows], np.int64),
             long_name="the frame's index in its file (/entry/data/data)")
    return True


def relative_path(target, path: Path) -> str:
    """``target`` relative to the folder of ``path`` (absolute across drives)."""
    try:
        return os.path.relpath(Path(target).resolve(), Path(path).parent.resolve())
    except ValueError:
        return str(Path(target).resolve())
