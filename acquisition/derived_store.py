"""Write what the processor derives from one projection to an HDF5 file.

Layout: ``/entry/derived/{transmission, dark_field, differential_phase, absorption,
scattering, labels}`` (float32 images, int32 labels), ``/entry/clusters`` (one row per
cluster: label, centroid, pixels, mu/eps ratio, variance, class, flags) and
``/entry/cluster_pixels/<label>/{mu, eps}`` (each cluster's tissue-normalised pixels).  The file's
attribute ``parent_uid`` links it to the raw run.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

IMAGES = ("transmission", "dark_field", "differential_phase", "absorption", "scattering")


def write_derived(path: Path, retrieval, labels: np.ndarray, clusters: list, parent_uid: str) -> Path:
    """Write the retrieved images, the cluster labels and the cluster table to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["parent_uid"] = parent_uid
        derived = f.create_group("entry/derived")
        for name in IMAGES:
            derived.create_dataset(name, data=np.asarray(getattr(retrieval, name), np.float32),
                                   compression="gzip", compression_opts=1)
        derived.create_dataset("labels", data=labels.astype(np.int32), compression="gzip")
        rows = np.array(
            [(c.label, c.centroid_px[0], c.centroid_px[1], c.n_pixels, c.ratio, c.variance,
              c.texture, c.borderline, c.suspicious) for c in clusters],
            dtype=[("label", "i4"), ("centroid_row", "f8"), ("centroid_col", "f8"),
                   ("n_pixels", "i4"), ("ratio", "f8"), ("variance", "f8"),
                   ("texture", h5py.string_dtype()), ("borderline", "?"), ("suspicious", "?")],
        )
        f.create_dataset("entry/clusters", data=rows)
        for c in clusters:  # the tissue-normalised pixels of each cluster, for scatter plots
            group = f.create_group(f"entry/cluster_pixels/{int(c.label)}")
            group.create_dataset("mu", data=np.asarray(c.mu, np.float32))
            group.create_dataset("eps", data=np.asarray(c.eps, np.float32))
    return path
