"""The run catalogue: every run, raw and derived, in a tiled catalogue searchable by sample.

``open_catalogue(directory)`` serves tiled's embedded SQLite catalogue in process: run
metadata in ``catalog.db``, event tables in ``tables.sqlite``, arrays tiled writes itself in
``data/``.  ``catalogue_writer(client)`` is bluesky's ``TiledWriter`` for the RunEngine (and
for the processor's ``publish``): run ``uid`` becomes ``client[uid]`` with ``start``/``stop``
metadata and one table per stream (``client[uid]["primary"]["g2"]``, um).  Frames are not
copied: the HDF5 files the documents reference are registered as external assets by paths
relative to the catalogue directory (a directory moved with its run folder opens at its new
place), and read in place through acquisition.storage.frames' handlers (no HDF5 open of its own, so
no SWMR flag mismatch with a file open elsewhere in the process).  ``find_runs`` searches by
sample id (a plan's ``{"id": ...}`` or a stock string), ``last_run`` gives the last raw or
derived run.  The same directory behind a tiled server (``server_command``, from the
``tiled.yml`` :func:`open_catalogue` writes; docs/catalogue.md) is reached with
``connect_catalogue``.
:class:`BackgroundCatalogue` opens a catalogue at its first use (the session's, which
must not wait seconds for tiled to start, nor start it when it takes no run); bluesky's
tiled writer, whose import takes about 2 s, is imported at the first document written.

The server's API key never appears on a command line (``ps`` shows those to every user):
:func:`server_api_key` reads it from a file only its owner can read or from
``TALBOT_LAU_API_KEY``, or makes a fresh one in such a file (``API_KEY_FILE`` in the
catalogue directory); :func:`server_environment` hands it to the server as
``TILED_SINGLE_USER_API_KEY``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import os
import secrets
import sqlite3
import stat
import sys
import tempfile
import threading
import warnings
import weakref
from collections import defaultdict
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import numpy as np
from event_model import DocumentNames

from ..errors import TalbotLauError
from .frames import (
    DERIVED_DATASET,
    FRAME_DATASET,
    DerivedImageHandler,
    HDF5FrameHandler,
)
from .frames import _open as _open_hdf5  # SWMR or not, as the file needs

log = logging.getLogger(__name__)

CATALOG_DB = "catalog.db"
"""Run metadata (tiled's SQL catalogue) in the catalogue directory."""
TABLES_DB = "tables.sqlite"
"""Event tables (tiled's tabular SQL storage) in the catalogue directory."""
DATA_DIR = "data"
"""Arrays tiled writes itself, in the catalogue directory."""
API_KEY_ENV = "TALBOT_LAU_API_KEY"
"""The environment variable that gives the catalogue server's API key."""
API_KEY_FILE = "api_key"
"""The file (mode 0600) in the catalogue directory that holds a generated API key."""
TILED_KEY_ENV = "TILED_SINGLE_USER_API_KEY"
"""Where ``tiled serve`` reads its single-user API key from (tiled.server.settings)."""
SERVER_CONFIG = "tiled.yml"
"""The tiled server configuration :func:`open_catalogue` writes into the catalogue directory."""
FRAMES_MIMETYPE = "application/x-talbot-lau-frames+hdf5"
"""Catalogue data sources of raw frames (spec ``AD_HDF5``), read by this module's adapter."""
DERIVED_MIMETYPE = "application/x-talbot-lau-derived+hdf5"
"""Catalogue data sources of derived images (spec ``TL_DERIVED_HDF5``), read by this module's adapter."""
TABLE_MIMETYPE = "application/x-tiled-sql-table"
"""tiled's event tables (in ``TABLES_DB``)."""


def _storage(directory: Path) -> tuple[str, list[str]]:
    """The catalogue database URI and the writable storage of a catalogue directory."""
    return (f"sqlite:///{directory / CATALOG_DB}",
            [str(directory / DATA_DIR), f"sqlite:///{directory / TABLES_DB}"])


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


def write_server_config(directory: str | Path, readable: Iterable[str | Path] = ()) -> Path:
    """Write ``DIR/tiled.yml``: a tiled server configuration serving :func:`served_catalogue`
    of ``directory`` and ``readable`` (absolute paths, rewritten at every open, so a moved
    catalogue serves its new place once opened there)."""
    import yaml

    directory = Path(directory).resolve()
    config = {"trees": [{"path": "/", "tree": f"{__name__}:served_catalogue",
                         "args": {"directory": str(directory),
                                  "readable": [str(Path(p).resolve()) for p in readable]}}]}
    path = directory / SERVER_CONFIG
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tiled-", suffix=".yml")
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write("# written by acquisition.storage.catalogue.open_catalogue; serve with "
                    "`tiled serve config` (docs/catalogue.md)\n")
            yaml.safe_dump(config, f, sort_keys=False)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


_DIRECTORIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""The catalogue directory of each in-process client's context (see :func:`catalogue_writer`)."""


def _initialise(database: str) -> None:
    """Create tiled's tables in a new catalogue database (no-op for an existing one).

    Does in process, in a thread of its own (it runs an asyncio loop), what
    ``tiled catalog init --if-not-exists`` does, sparing a 5 s subprocess."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database
    from tiled.utils import ensure_specified_sql_driver

    database = ensure_specified_sql_driver(database)

    async def setup() -> bool:
        engine = create_async_engine(database)
        try:
            await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            return False
        except UninitializedDatabase:
            await initialize_database(engine)
            return True
        finally:
            await engine.dispose()

    failure: list[BaseException] = []

    def work():
        try:
            if asyncio.run(setup()):
                stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, database)
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=work, name="catalogue-init")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _quiet_tiled() -> None:
    """Silence, at their source, the two lines tiled's in-process server prints at every start:
    starlette's ``StarletteDeprecationWarning`` "Using `httpx` with `starlette.testclient` is
    deprecated" (raised when ``tiled.client.context`` imports ``starlette.testclient`` for
    ``Context.from_app``; nothing of ours can act on it) and the ``tiled.server.app`` logger's
    INFO "Tiled version ..." (lowered to WARNING in :func:`open_catalogue`, after the import
    that sets it).  Other warnings and tiled's warnings and errors still show."""
    try:
        from starlette.exceptions import StarletteDeprecationWarning
    except ImportError:  # a starlette without it does not warn
        return
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated",
                            category=StarletteDeprecationWarning, module=r"tiled\.")


def open_catalogue(directory: str | Path, *, readable: Iterable[str | Path] = ()):
    """A tiled client on the catalogue in ``directory`` (created if missing), served in process.

    ``readable``: directories of the frame files the runs reference (the detector's write
    path, the processor's output); a file elsewhere is catalogued but refused when read.
    Close with ``client.context.close()``.

    Frames and derived images are catalogued by paths relative to ``directory`` and read
    through acquisition.storage.frames' handlers (docs/catalogue.md), so the directory moved or copied
    together with the run folder opens at its new place (given the new ``readable``).  Also
    writes ``directory/tiled.yml``, the configuration of a tiled server on the same catalogue."""
    _quiet_tiled()
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)  # it sets INFO when imported
    directory = Path(directory).resolve()
    (directory / DATA_DIR).mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(directory / TABLES_DB)) as tables:  # readers never block the writer
        tables.execute("PRAGMA journal_mode=WAL")
    database, _ = _storage(directory)
    try:
        _initialise(database)
        init = False
    except ImportError:  # tiled moved its internals: let it initialise in a subprocess
        init = True
    readable = list(readable)
    catalog = served_catalogue(directory, readable, init_if_not_exists=init)
    write_server_config(directory, readable)
    context = Context.from_app(build_app(catalog))
    _DIRECTORIES[context] = directory
    return from_context(context)


def server_command(directory: str | Path, *, host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """The command line of a tiled server on the catalogue in ``directory``, as configured by
    the last :func:`open_catalogue` there (``directory/tiled.yml``: the readable directories
    and our adapters).  It holds no API key: run it with ``env=server_environment(key)``."""
    config = Path(directory).resolve() / SERVER_CONFIG
    return [sys.executable, "-m", "tiled", "serve", "config", str(config),
            "--host", host, "--port", str(port)]


def server_environment(api_key: str, base: dict | None = None) -> dict[str, str]:
    """The environment of the server process: ``base`` (this process's) plus the key."""
    base = os.environ if base is None else base
    return {**base, TILED_KEY_ENV: _checked_key(api_key, "the API key")}


def _checked_key(key: str, source: str) -> str:
    key = key.strip()
    if not key or not key.isalnum():
        raise ValueError(f"{source}: an API key is letters and digits only (tiled's rule), "
                         f"e.g. from `openssl rand -hex 32`")
    return key


def read_api_key(path: str | Path) -> str:
    """The key in ``path``, a regular file of this user that nobody else may read."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise ValueError(f"API key file {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"API key file {path}: not a regular file")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ValueError(f"API key file {path}: must belong to you and be readable by you only "
                         f"(chmod 600 {path})")
    return _checked_key(path.read_text(), f"API key file {path}")


def server_api_key(directory: str | Path,
                   key_file: str | Path | None = None) -> tuple[str, str, Path | None]:
    """The catalogue server's API key, from ``key_file``, else ``TALBOT_LAU_API_KEY``, else
    a fresh one written to ``directory/API_KEY_FILE`` (mode 0600, replacing an old one).

    Returns ``(key, where it came from, the file that holds it or None)``."""
    if key_file is not None:
        return read_api_key(key_file), str(key_file), Path(key_file).resolve()
    if os.environ.get(API_KEY_ENV):
        return _checked_key(os.environ[API_KEY_ENV], API_KEY_ENV), f"${API_KEY_ENV}", None
    key = secrets.token_hex(32)
    path = Path(directory).resolve() / API_KEY_FILE
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".api_key-")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write(key + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return key, f"new, in {path}", path


def connect_catalogue(uri: str, api_key: str | None = None, *, api_key_file: str | Path | None = None):
    """A tiled client on a catalogue behind a tiled server, e.g. ``http://127.0.0.1:8000``;
    the key is ``api_key``, else read from ``api_key_file``, else ``$TALBOT_LAU_API_KEY``.
    Close with ``client.context.close()``."""
    from tiled.client import from_context
    from tiled.client.context import Context

    if api_key is None and api_key_file is not None:
        api_key = read_api_key(api_key_file)
    if api_key is None and os.environ.get(API_KEY_ENV):
        api_key = _checked_key(os.environ[API_KEY_ENV], API_KEY_ENV)
    # tiled's from_uri, except that a refused connection (401: a wrong key) closes its context
    context, node_path_parts = Context.from_any_uri(uri, api_key=api_key)
    try:
        return from_context(context, node_path_parts=node_path_parts)
    except BaseException:
        context.close()
        raise


def find_runs(client, sample_id: str, *, derived: bool = False):
    """The measured runs whose start document names sample ``sample_id`` (with ``derived``,
    the processor's derived runs of that sample instead, the ones with a ``parent_uid``): a
    tiled container keyed by run uid.  The plans write ``sample = {"id": ...}``; stock
    bluesky's ``RE(plan, sample="S-1")`` writes the id as a string: both are found."""
    from tiled.queries import Key, KeyPresent, KeysFilter

    kind = KeyPresent("start.parent_uid", exists=derived)
    by_id = client.search(Key("start.sample.id") == sample_id).search(kind)
    by_text = client.search(Key("start.sample") == sample_id).search(kind)
    if not len(by_text):
        return by_id
    if not len(by_id):
        return by_text
    return client.search(KeysFilter(keys=[*by_id, *by_text]))


def last_run(client, *, derived: bool = False):
    """The last measured run in the catalogue (with ``derived``, the processor's last derived
    run), by start time; None when there is none.  ``client[-1]`` does not do it: tiled keys
    runs by uid."""
    from tiled.queries import KeyPresent

    runs = client.search(KeyPresent("start.parent_uid", exists=derived)).sort(("start.time", 1))
    return runs.values().last() if len(runs) else None


class CatalogueNotReady(TalbotLauError, RuntimeError):
    """The session's catalogue could not be opened (or not in time)."""


class BackgroundCatalogue:
    """The session's catalogue, opened at its first use (``open_catalogue`` costs about 5 s
    of CPU: tiled's catalogue, server app and in-process client), so that the session starts
    without it and a session that takes no run never starts tiled.

    The first use opens it in the thread that uses it: the first document written (the
    catalogue writer's buffer thread, whose later documents wait behind it), or the
    operator's first look.  Use it as the tiled client it becomes (``find_runs(catalogue,
    ...)``, ``catalogue[uid]``, ``last_run(catalogue)``, ``catalogue.search(...)``): each use
    waits until it is open (at most ``timeout`` s).  ``ready`` says whether it is open,
    ``wait()`` gives the client itself.  :func:`catalogue_writer` accepts it.  ``close()``
    of one never used opens nothing."""

    def __init__(self, directory: str | Path, *, readable: Iterable[str | Path] = (),
                 timeout: float = 120.0):
        self.directory = Path(directory)
        self.readable = list(readable)
        self.timeout = timeout
        self._opened = threading.Event()
        self._started = False  # someone is opening it, opened it or closed it unused
        self._start_lock = threading.Lock()
        self._client = None
        self._error: BaseException | None = None
        self._closed = False

    def open(self) -> None:
        """Open the catalogue in the calling thread, and import the writer that will write
        into it; if another thread is already opening it, wait for that (at most
        ``timeout`` s) instead.

        Then every object so far goes to the garbage collector's permanent generation
        (``gc.freeze``): tiled's import leaves about 0.6 million long-lived objects, whose
        next full collection (0.35 s, measured, holding the GIL) would hold the
        RunEngine's loop longer than a suspender waits for it (0.1 s)."""
        with self._start_lock:
            first, self._started = not self._started, True
        if not first:
            self._opened.wait(self.timeout)
            return
        try:
            client = open_catalogue(self.directory, readable=self.readable)
            frame_normalizer_class()  # the writer's import, once
            gc.freeze()
            if self._closed:  # the session ended while it was opening
                client.context.close()
            else:
                self._client = client
        except Exception as err:  # noqa: BLE001  raised to whoever uses the catalogue
            self._error = err
            log.error("catalogue %s could not be opened: %s: %s", self.directory,
                      type(err).__name__, err)
        finally:
            self._opened.set()

    @property
    def ready(self) -> bool:
        return self._client is not None

    def wait(self, timeout: float | None = None):
        """The tiled client, opened here if nobody did yet; :class:`CatalogueNotReady` if it
        failed to open, is closed, or is not open after ``timeout`` s (default: the
        catalogue's ``timeout``) of another thread's opening."""
        if not self._started:
            self.open()
        if not self._opened.wait(self.timeout if timeout is None else timeout):
            raise CatalogueNotReady(f"catalogue {self.directory} still opening after "
                                    f"{self.timeout if timeout is None else timeout} s")
        if self._client is None:
            raise CatalogueNotReady(f"catalogue {self.directory} is not open"
                                    + (f": {type(self._error).__name__}: {self._error}"
                                       if self._error else " (closed)")) from self._error
        return self._client

    def close(self, timeout: float = 30.0) -> None:
        """Close tiled's in-process server (waiting at most ``timeout`` s for an opening
        one); one never opened stays so."""
        with self._start_lock:
            self._closed = True
            unused, self._started = not self._started, True
        if unused:
            self._opened.set()
        self._opened.wait(timeout)
        client, self._client = self._client, None
        if client is not None:
            client.context.close()

    def __getattr__(self, name: str):
        if name.startswith("_"):  # IPython's and pickle's probes: no waiting for them
            raise AttributeError(name)
        return getattr(self.wait(), name)

    def __getitem__(self, key):
        return self.wait()[key]

    def __contains__(self, key) -> bool:
        return key in self.wait()

    def __iter__(self):
        return iter(self.wait())

    def __len__(self) -> int:
        return len(self.wait())

    def __repr__(self) -> str:
        if self._client is not None:
            return repr(self._client)
        state = ("failed" if self._error else "closed" if self._closed
                 else "opening" if self._started else "not opened yet: its first use opens it")
        return f"<catalogue {self.directory} ({state})>"


_WRITE_LOCK = threading.Lock()
"""One catalogue write at a time in this process: the RunEngine's and the processor's
writers share the SQLite tables, which refuse a second writer."""


def catalogue_writer(client, *, backup_directory: str | Path | None = None):
    """The callback that writes every run into the catalogue behind ``client``; subscribe
    it to the RunEngine, and give another one to the dark-field processor as ``publish``.

    Frames of spec ``AD_HDF5`` become the stream's image array (e.g. ``primary/
    detector_image``, one frame a row, registered as a slice of the HDF5 file, read in
    place) when a stream's frames are one block of consecutive points of one file, one
    frame a point: every stream of a projection.  A stream whose frames interleave with
    another's in the file (a mosaic's tiles) cannot be a slice and keeps no image array
    (a warning says so); its events are still in the table.  Derived images of spec
    ``TL_DERIVED_HDF5`` become the ``images`` stream's arrays.  Into an in-process catalogue
    their files are registered by paths relative to its directory; through a server, by
    absolute ``file://`` URIs (the writer does not know the server's directory).

    A document the catalogue refuses never fails the scan: the error is logged, and with
    ``backup_directory`` the whole run is written there as JSON lines instead."""
    writer = None  # made at the first document: ``client`` may be a catalogue still opening
    failing = False  # the current run already failed once: log the rest quietly

    def write(name: str, doc: dict) -> None:
        nonlocal failing, writer
        failing = failing and name != "start"
        with _WRITE_LOCK:
            try:
                if writer is None:
                    from bluesky.callbacks.tiled_writer import TiledWriter

                    backup = None if backup_directory is None else str(backup_directory)
                    target = client.wait() if isinstance(client, BackgroundCatalogue) else client
                    normalizer = functools.partial(frame_normalizer_class(),
                                                   relative_to=catalogue_directory(target))
                    writer = TiledWriter(target, normalizer=normalizer, batch_size=1,
                                         backup_directory=backup)
                writer(name, doc)
            except Exception as err:
                if failing:
                    log.debug("catalogue: %s document not written (%r)", name, err)
                else:
                    log.exception("catalogue: %s document not written; the run is incomplete "
                                  "in the catalogue", name)
                failing = True

    return write


def catalogue_directory(client) -> Path | None:
    """The directory of the catalogue behind an in-process client (:func:`open_catalogue`),
    None for one behind a server (its directory is the server's)."""
    try:
        return _DIRECTORIES.get(client.context)
    except (AttributeError, TypeError):
        return None


def _path(resource: dict) -> Path:
    """The absolute path of the file of a Resource document."""
    return Path("/" + resource["root"].strip("/")) / resource["resource_path"].strip("/")


def __getattr__(name: str):
    """``FrameNormalizer`` is built on first use: its base class comes with bluesky's tiled
    writer, whose import (tiled's dataframe client, dask, pandas) takes about 2 s."""
    if name == "FrameNormalizer":
        return frame_normalizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def frame_normalizer_class() -> type:
    """The class ``FrameNormalizer`` (bluesky's ``RunNormalizer`` taught our file specs)."""
    from bluesky.callbacks.tiled_writer import RunNormalizer

    class FrameNormalizer(RunNormalizer):
        """bluesky's document normaliser, taught our two file specs.

        ``RunNormalizer`` turns a Resource into one StreamResource a data key and counts a
        stream's frames from 0, but our detector writes all streams of a run into one file
        (dark, reference, sample one after the other, ``point_number`` counting on), so it
        would put every frame into the first stream.  ``AD_HDF5`` references are therefore
        collected here and, at the stop document, given one StreamResource per stream
        (``slice`` = that stream's points in the file) and one StreamDatum.
        ``TL_DERIVED_HDF5`` datums name their image: the name becomes the HDF5 dataset, whose
        dtype (float32, labels int32) and chunks, which the processor's descriptor does not
        give, are read from the (finished) file and put into the descriptor; a file not yet
        readable is checked by bluesky at the stop document instead (``_validate``).

        Both get our mimetypes (read by :func:`_adapter_classes`' adapters, through
        acquisition.storage.frames' handlers) and, with ``relative_to`` (the catalogue directory),
        the parameter that makes :class:`_RelativeConsolidator` register their files by
        relative paths."""

        SPECS = {"AD_HDF5": FRAMES_MIMETYPE, "TL_DERIVED_HDF5": DERIVED_MIMETYPE}

        def __init__(self, patches=None, spec_to_mimetype=None, relative_to: str | Path | None = None):
            super().__init__(patches=patches, spec_to_mimetype={**self.SPECS, **(spec_to_mimetype or {})})
            self._relative = {} if relative_to is None else {RELATIVE_TO: str(relative_to)}
            self._frame_resources: dict[str, dict] = {}
            self._frame_datums: dict[str, tuple[str, int]] = {}
            self._derived_resources: dict[str, dict] = {}
            self._derived_dtypes: dict[str, str] = {}  # image name -> numpy dtype string
            self._descriptors: dict[str, dict] = {}  # uid -> descriptor
            # (stream, data key) -> [(seq_num, resource uid, point number)], and its first descriptor
            self._frames: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
            self._first_descriptor: dict[tuple[str, str], str] = {}

        def resource(self, doc):
            if doc["spec"] == "AD_HDF5":
                self._frame_resources[doc["uid"]] = doc
                return
            if doc["spec"] == "TL_DERIVED_HDF5":
                self._derived_resources[doc["uid"]] = doc
            # RunNormalizer edits resource_kwargs in place: give it a copy, not the document
            # every other subscriber (the processor's Filler) reads too
            super().resource({**doc, "resource_kwargs": dict(doc.get("resource_kwargs", {}))})

        def datum(self, doc):
            if doc["resource"] in self._frame_resources:
                self._frame_datums[doc["datum_id"]] = (doc["resource"], int(doc["datum_kwargs"]["point_number"]))
                return
            if doc["resource"] in self._derived_resources:
                kwargs = self._derived_image(self._derived_resources[doc["resource"]], doc["datum_kwargs"]["name"])
            else:
                kwargs = dict(doc.get("datum_kwargs", {}))  # edited in place, as resource_kwargs
            super().datum({**doc, "datum_kwargs": kwargs})

        def _derived_image(self, resource: dict, name: str) -> dict:
            """StreamResource parameters of a derived image; remembers its dtype."""
            dataset = DERIVED_DATASET.format(name=name)
            try:  # acquisition.storage.frames' opener: no SWMR flag mismatch with a reader holding it
                with _open_hdf5(str(_path(resource))) as f:
                    data = f[dataset]
                    self._derived_dtypes[name] = data.dtype.str
                    # one chunk an image: the adapter reads whole images
                    return {"dataset": dataset, "chunk_shape": list(data.shape), **self._relative}
            except (OSError, KeyError):
                return {"dataset": dataset, "_validate": True, **self._relative}

        def descriptor(self, doc):
            self._descriptors[doc["uid"]] = doc
            missing = {key for key, info in doc["data_keys"].items()
                       if "external" in info and "dtype_numpy" not in info and key in self._derived_dtypes}
            if missing:
                doc = {**doc, "data_keys": {key: {**info, "dtype_numpy": self._derived_dtypes[key]}
                                            if key in missing else info
                                            for key, info in doc["data_keys"].items()}}
            super().descriptor(doc)

        def event(self, doc):
            filled = doc.get("filled", {})
            frames = {key: value for key, value in doc["data"].items()
                      if not filled.get(key) and isinstance(value, str) and value in self._frame_datums}
            if frames:
                stream = self._descriptors[doc["descriptor"]]["name"]
                for key, datum_id in frames.items():
                    resource, point = self._frame_datums.pop(datum_id)
                    self._frames[(stream, key)].append((doc["seq_num"], resource, point))
                    self._first_descriptor.setdefault((stream, key), doc["descriptor"])
                doc = {**doc,
                       "data": {k: v for k, v in doc["data"].items() if k not in frames},
                       "timestamps": {k: v for k, v in doc["timestamps"].items() if k not in frames},
                       "filled": {k: v for k, v in filled.items() if k not in frames}}
            super().event(doc)

        def stop(self, doc):
            for (stream, key), frames in self._frames.items():  # in the order the events came
                self._emit_frames(self._first_descriptor[(stream, key)], key, frames)
            self._frames.clear()
            super().stop(doc)

        def _emit_frames(self, descriptor: str, key: str, frames: list[tuple[int, str, int]]) -> None:
            """One StreamResource (a slice of the file) for a stream's frames, row i the frame of
            the stream's i-th event (its row in the event table), and one StreamDatum per run of
            consecutive seq_nums.  A resumed plan repeats the points since its last checkpoint
            with the same seq_nums (bluesky rewinds its counters): the interrupted frames and
            their repeats are all kept, in the order taken, as the event table keeps their rows."""
            stream, data_keys = self._descriptors[descriptor]["name"], self._descriptors[descriptor]["data_keys"]
            points = [p for _, _, p in frames]
            resources = {r for _, r, _ in frames}
            resource = self._frame_resources[frames[0][1]]
            per_point = int(resource.get("resource_kwargs", {}).get("frame_per_point", 1))
            n = len(frames)
            if len(resources) > 1 or per_point != 1 or points != list(range(points[0], points[0] + n)):
                log.warning("run stream %r: the %d frames of %r are not one block of consecutive "
                            "points of one file; no image array in the catalogue", stream, n, key)
                return
            path = _path(resource)
            parameters = {"dataset": FRAME_DATASET, "slice": f"{points[0]}:{points[0] + n}",
                          "join_method": "stack", "chunk_shape": [1], **self._relative}
            if "dtype_numpy" not in data_keys.get(key, {}):
                parameters["_validate"] = True
            uid = f"{resource['uid']}-{stream}-{key}"
            self.emit(DocumentNames.stream_resource, {
                "uid": uid, "data_key": key, "mimetype": FRAMES_MIMETYPE,
                "uri": "file://localhost" + path.as_posix(), "parameters": parameters})
            runs, first = [], 0  # [(first index, last index + 1)] of consecutive seq_nums
            for i in range(1, n + 1):
                if i == n or frames[i][0] != frames[i - 1][0] + 1:
                    runs.append((first, i))
                    first = i
            for number, (start, stop) in enumerate(runs):
                self.emit(DocumentNames.stream_datum, {
                    "uid": f"{uid}/{number}", "stream_resource": uid, "descriptor": descriptor,
                    "indices": {"start": start, "stop": stop},
                    "seq_nums": {"start": frames[start][0], "stop": frames[start][0] + stop - start}})

    FrameNormalizer.__qualname__ = "FrameNormalizer"
    _register_consolidator()
    return FrameNormalizer


RELATIVE_TO = "_relative_to"
"""StreamResource parameter: the catalogue directory the files' assets are relative to
(the writer's only: not among the data source's parameters)."""


def _register_consolidator() -> None:
    """Register :class:`_RelativeConsolidator` for our mimetypes in bluesky's consolidator registry."""
    from bluesky import consolidators
    from bluesky.consolidators import HDF5Consolidator

    class _RelativeConsolidator(HDF5Consolidator):
        """bluesky's HDF5 consolidator for our mimetypes: the data source's assets are relative
        to the catalogue directory (``RELATIVE_TO``), and the writer validates the files
        (absolute) with our adapters, through acquisition.storage.frames' handlers."""

        supported_mimetypes = frozenset({FRAMES_MIMETYPE, DERIVED_MIMETYPE})

        def adapter_parameters(self) -> dict:
            parameters = super().adapter_parameters()
            parameters.pop("swmr", None)  # acquisition.storage.frames decides how a file is opened
            return parameters

        def get_data_source(self):
            source = super().get_data_source()
            base = self._sres_parameters.get(RELATIVE_TO)
            if base is None:
                return source
            return dataclasses.replace(source, assets=[
                dataclasses.replace(asset, data_uri=relative_uri(asset.data_uri, base))
                for asset in source.assets])

        def get_adapter(self, adapters_by_mimetype=None):
            """Our adapter on the files as written (absolute paths)."""
            node = type("Node", (), {"metadata_": {}, "specs": []})
            absolute = HDF5Consolidator.get_data_source(self)
            return _adapter_classes()[self.mimetype].from_catalog(absolute, node, **self.adapter_parameters())

        def validate(self, adapters_by_mimetype=None, fix_errors=False):
            return super().validate({**_adapter_classes(), **(adapters_by_mimetype or {})}, fix_errors)

    for mimetype in _RelativeConsolidator.supported_mimetypes:
        consolidators.CONSOLIDATOR_REGISTRY[mimetype] = _RelativeConsolidator
