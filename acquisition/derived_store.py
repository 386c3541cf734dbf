"""Write what the processor derives from one projection to a NeXus (HDF5) file.

``derived_<uid8>.h5`` (a mosaic tile: ``derived_<uid8>_tile<NN>.h5``)::

    /  NXroot  @default=entry  @parent_uid=<raw run uid>
      entry: NXentry  @default=dark_field
        title, experiment_identifier (= parent uid), program_name @version
        transmission, dark_field, differential_phase, absorption, scattering: NXdata
            @signal=data @axes=[".", "."]   data: float32 image (differential_phase in rad)
        labels: NXdata   data: int32 cluster labels (0 = no cluster)
        clusters: NXcollection   one 1-D field per column, one row per cluster: label,
            centroid_row, centroid_col (pixel), n_pixels, ratio (mu/eps), variance,
            texture, borderline, suspicious, tissue_factor (c(Ts) applied to the ratio),
            uncorrected_ratio (as measured), Ts, Vs (surrounding tissue, eq. 2)
        tissue_calibration: NXcollection   id, version, sha256 of the tissue calibration
            applied ("none", -1, "" if none; acquisition.tissue_calibration_file)
        cluster_pixels: NXcollection
            <label>: NXcollection   mu, eps (the cluster's tissue-normalised pixels)
        raw -> run_<uid8>.nxs:/entry/data   (ExternalLink to the run record's raw frames)

The link is relative to this file's directory; it resolves once the run record exists
(the live processor links to its own directory, where the recorder writes in the demo, the
session and the CLI) and is simply dangling otherwise.  It targets the record's NXdata, not
its whole NXentry: nexusformat (2.1) cannot follow an external link to a group that holds
groups (``.tree`` fails), silx can; the record itself is the link's file.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .nexus import nx_field, nx_group, nx_image, nx_root, software_version

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


def write_derived(path: Path, retrieval, labels: np.ndarray, clusters: list, parent_uid: str,
                  run_record: str | Path | None = None, tissue_calibration: dict | None = None) -> Path:
    """Write the retrieved images, the cluster labels and the cluster table to ``path``;
    the raw frames of ``run_record`` (the run's ``run_<uid8>.nxs``) are linked as ``/entry/raw``.
    ``tissue_calibration``: the record (id, version, sha256) of the calibration applied to
    the clusters' ratios (None: none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["parent_uid"] = parent_uid
        entry = nx_root(f, software_version())
        entry.attrs["default"] = "dark_field"
        nx_field(entry, "title", f"dark-field retrieval of run {parent_uid}")
        nx_field(entry, "experiment_identifier", parent_uid)
        for name in IMAGES:
            nx_image(entry, name, np.asarray(getattr(retrieval, name), np.float32),
                     UNITS.get(name), LONG_NAMES[name])
        nx_image(entry, "labels", labels.astype(np.int32), long_name="cluster label")
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
        record = tissue_calibration or {"id": "none"}
        calibration = nx_group(entry, "tissue_calibration", "NXcollection")
        nx_field(calibration, "id", str(record.get("id") or "none"))
        nx_field(calibration, "version", -1 if record.get("version") is None else int(record["version"]))
        nx_field(calibration, "sha256", str(record.get("sha256") or ""))
        pixels = nx_group(entry, "cluster_pixels", "NXcollection")
        for c in clusters:  # the tissue-normalised pixels of each cluster, for scatter plots
            group = nx_group(pixels, str(int(c.label)), "NXcollection")
            group.create_dataset("mu", data=np.asarray(c.mu, np.float32))
            group.create_dataset("eps", data=np.asarray(c.eps, np.float32))
        if run_record is not None:
            target = os.path.relpath(Path(run_record).resolve(), path.parent.resolve())
            entry["raw"] = h5py.ExternalLink(target, "/entry/data")
    return path
