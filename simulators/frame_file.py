"""The frame file both detector twins write, as areaDetector's NDFileHDF5 in Stream mode.

Frames go to ``/entry/data/data`` (N, rows, cols, uint16), one chunk a frame with the
HDF5 Fletcher32 checksum, so a corrupted frame fails to read instead of reading wrong
(h5py raises ``OSError``); the file is in SWMR mode, so frames can be read while it is
still being written, and each frame is flushed as it is appended.

``compression`` (the names of NDFileHDF5's ``Compression`` enum): "None", "zlib" (HDF5
shuffle + deflate at ``level``, readable by any HDF5) or "bslz4" (bitshuffle/LZ4, HDF5
filter 32008 from the ``hdf5plugin`` package: a reader must ``import hdf5plugin`` first,
as acquisition.frames does).  Fletcher32 runs after the filters, on the stored bytes.
"""

from __future__ import annotations

import h5py
import numpy as np

DATASET = "entry/data/data"
COMPRESSIONS = ("None", "zlib", "bslz4")


def _filters(compression, level: int) -> dict:
    if compression in (None, "None"):
        return {}
    if compression == "zlib":
        return {"compression": "gzip", "compression_opts": int(level), "shuffle": True}
    if compression == "bslz4":
        import hdf5plugin  # registers the bitshuffle filter with h5py's HDF5

        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    raise ValueError(f"compression {compression!r} not supported: one of {COMPRESSIONS}")


def create_frame_file(filename, shape: tuple[int, int], compression=None,
                      level: int = 6) -> tuple[h5py.File, h5py.Dataset]:
    """A new frame file for frames of ``shape`` (rows, cols), ``compression`` one of
    COMPRESSIONS (None: uncompressed; ``level`` for zlib); returns (file, dataset)."""
    rows, cols = int(shape[0]), int(shape[1])
    filters = _filters(compression, level)  # before the file exists: a bad name creates none
    file = h5py.File(filename, "w", libver="latest")
    try:
        dataset = file.create_dataset(DATASET, shape=(0, rows, cols), maxshape=(None, rows, cols),
                                      dtype="<u2", chunks=(1, rows, cols), fletcher32=True,
                                      **filters)
        file.swmr_mode = True
    except BaseException:
        file.close()
        raise
    return file, dataset


def append_frame(dataset: h5py.Dataset, frame: np.ndarray) -> int:
    """Append one frame and flush it; returns its index (the areaDetector point number).

    A write that fails (disk full: h5py raises OSError or RuntimeError) leaves the dataset
    as it was, as far as the disk allows, and raises one ``OSError`` naming the file; the
    owner should then :func:`close_frame_file` (an HDF5 file left open after a failed
    write can crash the interpreter when it is collected)."""
    index = dataset.shape[0]
    try:
        dataset.resize(index + 1, axis=0)
        dataset[index] = frame
        dataset.flush()
    except (OSError, RuntimeError) as err:
        try:
            dataset.resize(index, axis=0)
        except (OSError, RuntimeError):
            pass
        raise OSError(f"{dataset.file.filename}: frame {index} not written: {err}") from err
    return index


def close_frame_file(file: h5py.File | None) -> str | None:
    """Close ``file``; returns why closing failed (disk full), or None."""
    if file is None:
        return None
    try:
        file.close()
    except (OSError, RuntimeError) as err:
        try:
            file.close()  # the second close releases what the first could not flush
        except (OSError, RuntimeError):
            pass
        return f"closing {file.filename}: {err}"
    return None
