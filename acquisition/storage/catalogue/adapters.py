"""tiled adapters of our frame and derived-image files: raw frames (``AD_HDF5``) and derived
images (``TL_DERIVED_HDF5``) read in place through acquisition.storage.frames' handlers, by
asset paths relative to the catalogue directory; :func:`served_catalogue` is tiled's
catalogue of a directory with them."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import numpy as np

from ..frames import (
    DERIVED_DATASET,
    FRAME_DATASET,
    DerivedImageHandler,
    HDF5FrameHandler,
)
from .layout import TABLES_DB, _storage

FRAMES_MIMETYPE = "application/x-talbot-lau-frames+hdf5"
"""Catalogue data sources of raw frames (spec ``AD_HDF5``), read by this module's adapter."""
DERIVED_MIMETYPE = "application/x-talbot-lau-derived+hdf5"
"""Catalogue data sources of derived images (spec ``TL_DERIVED_HDF5``), read by this module's adapter."""
TABLE_MIMETYPE = "application/x-tiled-sql-table"
"""tiled's event tables (in ``TABLES_DB``)."""


def relative_uri(uri: str, directory: str | Path) -> str:
    """The ``file://`` URI ``uri`` as a relative URI reference (RFC 3986: a percent-encoded
    POSIX path, no scheme) from ``directory``, e.g. ``../raw/0a1b2c_000000.h5``."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"uri {uri!r}: not a file:// URI")
    return quote(os.path.relpath(os.path.realpath(parsed.path), os.path.realpath(directory)))


def asset_path(uri: str, directory: str | Path | None, readable: Iterable[str | Path] | None) -> Path:
    """The file an asset URI names: a ``file://`` URI as it is, a relative reference (see
    :func:`relative_uri`) from the catalogue ``directory``.  With ``readable``, a file outside
    every readable directory is refused (PermissionError), as tiled refuses ``file://`` assets."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(parsed.path)
    elif not parsed.scheme and not parsed.netloc:
        if directory is None:
            raise ValueError(f"asset {uri!r} is relative to a catalogue directory; none given")
        path = Path(directory) / unquote(parsed.path)
    else:
        raise ValueError(f"asset {uri!r}: neither a file:// URI nor a relative path")
    path = Path(os.path.realpath(path))
    if readable is not None and not any(path.is_relative_to(os.path.realpath(r)) for r in readable):
        raise PermissionError(f"refusing to read {path}: outside the catalogue's readable directories")
    return path


def _slice_points(text: str | None) -> tuple[int, int]:
    """A frames data source's ``slice`` parameter ``"a:b"`` (the file's points a to b - 1) as (a, b)."""
    try:
        start, stop = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise ValueError(f"slice {text!r}: expected 'first:stop' point numbers") from None
    return start, stop


class _FrameStack:
    """Frames ``points`` of a frame file, read on demand through acquisition.storage.frames' shared
    handle on the file (so never a second HDF5 open of it: no SWMR flag mismatch with a
    reader that already holds it, no stale chunk index while it is written)."""

    def __init__(self, path: Path, points: range, shape: tuple[int, ...], dtype):
        self.path, self.points, self.shape, self.dtype = path, points, tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def _read(self, rows) -> np.ndarray:
        handler = HDF5FrameHandler(str(self.path))
        try:
            return np.stack([handler(self.points[i]) for i in rows]) if len(rows) else \
                np.empty((0, *self.shape[1:]), self.dtype)
        finally:
            handler.close()  # never left open: a later h5py.File(..., swmr=True) must not collide

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if key and isinstance(key[0], (int, np.integer, slice)):
            rows, rest = np.arange(len(self.points))[key[0]], key[1:]
            frames = self._read(np.atleast_1d(rows))
            return frames[0][rest] if np.ndim(rows) == 0 else frames[(slice(None), *rest)]
        return self._read(range(len(self.points)))[key]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype)


class _DerivedImage:
    """A derived image, read on demand through acquisition.storage.frames' DerivedImageHandler."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype):
        self.path, self.name, self.shape, self.dtype = path, name, tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        handler = DerivedImageHandler(str(self.path))
        try:
            return np.asarray(handler(self.name)).reshape(self.shape)[key]
        finally:
            handler.close()

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype)


def _derived_name(dataset: str) -> str:
    """The image name of a derived file's dataset (``DERIVED_DATASET``)."""
    head, _, tail = DERIVED_DATASET.partition("{name}")
    if not (dataset.startswith(head) and dataset.endswith(tail)) or len(dataset) <= len(head + tail):
        raise ValueError(f"dataset {dataset!r}: not a derived image ({DERIVED_DATASET})")
    return dataset[len(head):len(dataset) - len(tail)]


@functools.cache
def _adapter_classes() -> dict[str, type]:
    """The tiled adapters of our two mimetypes (tiled's ArrayAdapter over :class:`_FrameStack`
    and :class:`_DerivedImage`), unbound: absolute ``file://`` assets only, no readable check
    (the writer validates its own files with them)."""
    from tiled.adapters.array import ArrayAdapter
    from tiled.structures.array import ArrayStructure, BuiltinDtype

    class _Adapter(ArrayAdapter):
        directory: Path | None = None  # bound by _bound_adapters: the catalogue directory
        readable: list[Path] | None = None  # and its readable directories

        @classmethod
        def _array(cls, path: Path, structure, dataset=None, slice=None):
            raise NotImplementedError

        @classmethod
        def from_catalog(cls, data_source, node, /, dataset=None, slice=None, squeeze=False, **_):
            (uri,) = [a.data_uri for a in data_source.assets if a.parameter == "data_uris"] or \
                [data_source.assets[0].data_uri]
            path = asset_path(uri, cls.directory, cls.readable)
            array = cls._array(path, data_source.structure, dataset, slice)
            return cls(array, data_source.structure, metadata=dict(node.metadata_ or {}),
                       specs=list(node.specs or []))

        @classmethod
        def from_uris(cls, *uris, dataset=None, slice=None, squeeze=False, **_):
            """The adapter of a file as it is (bluesky's consolidator validates with it)."""
            (uri,) = uris
            path = asset_path(uri, cls.directory, cls.readable)
            array = cls._array(path, None, dataset, slice)
            chunks = tuple(((1,) * n if axis == 0 and isinstance(array, _FrameStack) else (n,))
                           for axis, n in enumerate(array.shape))
            structure = ArrayStructure(data_type=BuiltinDtype.from_numpy_dtype(array.dtype),
                                       shape=array.shape, chunks=chunks)
            return cls(array, structure)

        def read(self, *args, **kwargs):
            return np.asarray(super().read(*args, **kwargs))

        def read_block(self, *args, **kwargs):
            return np.asarray(super().read_block(*args, **kwargs))

    class FramesAdapter(_Adapter):
        """Raw frames of a catalogue run: points ``slice`` of an ``AD_HDF5`` file."""

        @classmethod
        def _array(cls, path, structure, dataset=None, slice=None):
            if dataset not in (None, FRAME_DATASET, "/" + FRAME_DATASET):
                raise ValueError(f"dataset {dataset!r}: frames are in /{FRAME_DATASET}")
            start, stop = _slice_points(slice)
            if structure is not None:
                return _FrameStack(path, range(start, stop), structure.shape,
                                   structure.data_type.to_numpy_dtype())
            handler = HDF5FrameHandler(str(path))  # the file as it is: read the first frame
            try:
                frame = np.asarray(handler(start))
            finally:
                handler.close()
            return _FrameStack(path, range(start, stop), (stop - start, *frame.shape), frame.dtype)

    class DerivedAdapter(_Adapter):
        """A derived image of a catalogue run: ``dataset`` of a ``TL_DERIVED_HDF5`` file."""

        @classmethod
        def _array(cls, path, structure, dataset=None, slice=None):
            name = _derived_name(str(dataset).strip("/"))
            if structure is not None:
                return _DerivedImage(path, name, structure.shape, structure.data_type.to_numpy_dtype())
            handler = DerivedImageHandler(str(path))  # the file as it is
            try:
                image = np.asarray(handler(name))
            finally:
                handler.close()
            return _DerivedImage(path, name, image.shape, image.dtype)

    return {FRAMES_MIMETYPE: FramesAdapter, DERIVED_MIMETYPE: DerivedAdapter}


def _bound_adapters(directory: Path, readable: list[Path]) -> dict[str, type]:
    """The adapters of one catalogue: our two mimetypes, relative assets resolved from
    ``directory`` and refused outside ``readable``; and tiled's SQL table adapter reading a
    table in the catalogue's own ``TABLES_DB`` wherever the catalogue was when it was written."""
    from tiled.adapters.sql import SQLAdapter
    from tiled.storage import parse_storage

    bound = {mimetype: type(cls.__name__, (cls,), {"directory": directory, "readable": readable})
             for mimetype, cls in _adapter_classes().items()}
    tables = parse_storage(_storage(directory)[1][1]).uri

    class Tables(SQLAdapter):
        @classmethod
        def from_catalog(cls, data_source, node, /, **kwargs):
            first, *others = data_source.assets
            if first.data_uri != tables and urlparse(first.data_uri).path.endswith("/" + TABLES_DB):
                # a pydantic model in the server: a copy with the catalogue's own tables
                data_source = data_source.model_copy(update={
                    "assets": [first.model_copy(update={"data_uri": tables}), *others]})
            return super().from_catalog(data_source, node, **kwargs)

    return {**bound, TABLE_MIMETYPE: Tables}


def served_catalogue(directory: str | Path, readable: Iterable[str | Path] = (), *,
                     init_if_not_exists: bool = False):
    """tiled's catalogue adapter (``tiled.catalog.from_uri``) of the catalogue in ``directory``,
    with our adapters, reading frame files under ``readable``: what :func:`open_catalogue`
    serves in process, and ``tiled serve config DIR/tiled.yml`` behind a server."""
    from tiled.catalog import from_uri as catalog_from_uri

    directory = Path(directory).resolve()
    readable = [Path(p).resolve() for p in readable]
    database, writable = _storage(directory)
    return catalog_from_uri(database, writable_storage=writable, init_if_not_exists=init_if_not_exists,
                            readable_storage=[str(p) for p in readable],
                            adapters_by_mimetype=_bound_adapters(directory, readable))
