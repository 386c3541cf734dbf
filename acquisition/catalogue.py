"""The run catalogue: every run, raw and derived, in a tiled catalogue searchable by sample.

``open_catalogue(directory)`` serves tiled's embedded SQLite catalogue in process: run
metadata in ``catalog.db``, event tables in ``tables.sqlite``, arrays tiled writes itself in
``data/``.  ``catalogue_writer(client)`` is bluesky's ``TiledWriter`` for the RunEngine (and
for the processor's ``publish``): run ``uid`` becomes ``client[uid]`` with ``start``/``stop``
metadata and one table per stream (``client[uid]["primary"]["g2"]``, um).  Frames are not
copied: the HDF5 files the documents reference are registered as external assets, read in
place.  ``find_runs`` searches by sample id (a plan's ``{"id": ...}`` or a stock string),
``last_run`` gives the last raw or derived run.  The same directory behind a tiled server
(``server_command``; docs/catalogue.md) is reached with ``connect_catalogue``.
:class:`BackgroundCatalogue` opens a catalogue in a worker thread (the session's, which
must not wait seconds for tiled to start); bluesky's tiled writer, whose import takes about
2 s, is imported at the first document written.

The server's API key never appears on a command line (``ps`` shows those to every user):
:func:`server_api_key` reads it from a file only its owner can read or from
``TALBOT_LAU_API_KEY``, or makes a fresh one in such a file (``API_KEY_FILE`` in the
catalogue directory); :func:`server_environment` hands it to the server as
``TILED_SINGLE_USER_API_KEY``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import sqlite3
import stat
import sys
import tempfile
import threading
import warnings
from collections import defaultdict
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

import h5py
from event_model import DocumentNames

from .frames import DERIVED_DATASET, FRAME_DATASET

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


def _storage(directory: Path) -> tuple[str, list[str]]:
    """The catalogue database URI and the writable storage of a catalogue directory."""
    return (f"sqlite:///{directory / CATALOG_DB}",
            [str(directory / DATA_DIR), f"sqlite:///{directory / TABLES_DB}"])


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
    Close with ``client.context.close()``."""
    _quiet_tiled()
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)  # it sets INFO when imported
    directory = Path(directory).resolve()
    (directory / DATA_DIR).mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(directory / TABLES_DB)) as tables:  # readers never block the writer
        tables.execute("PRAGMA journal_mode=WAL")
    database, writable = _storage(directory)
    try:
        _initialise(database)
        init = False
    except ImportError:  # tiled moved its internals: let it initialise in a subprocess
        init = True
    catalog = catalog_from_uri(database, writable_storage=writable, init_if_not_exists=init,
                               readable_storage=[str(Path(p).resolve()) for p in readable])
    context = Context.from_app(build_app(catalog))
    return from_context(context)


def server_command(directory: str | Path, *, readable: Iterable[str | Path] = (),
                   host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """The command line of a tiled server on the catalogue in ``directory`` (already opened
    once by :func:`open_catalogue`), reading frames from ``readable``.  It holds no API
    key: run it with ``env=server_environment(key)``."""
    directory = Path(directory).resolve()
    database, writable = _storage(directory)
    command = [sys.executable, "-m", "tiled", "serve", "catalog", database]
    for location in writable:
        command += ["-w", location]
    for location in readable:
        command += ["-r", str(Path(location).resolve())]
    return command + ["--host", host, "--port", str(port)]


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
    the key is ``api_key``, else read from ``api_key_file``, else ``$TALBOT_LAU_API_KEY``."""
    from tiled.client import from_uri

    if api_key is None and api_key_file is not None:
        api_key = read_api_key(api_key_file)
    if api_key is None and os.environ.get(API_KEY_ENV):
        api_key = _checked_key(os.environ[API_KEY_ENV], API_KEY_ENV)
    return from_uri(uri, api_key=api_key)


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


class CatalogueNotReady(RuntimeError):
    """The session's catalogue could not be opened (or not in time)."""


class BackgroundCatalogue:
    """The session's catalogue, opened in a thread of its own (``open_catalogue`` costs
    seconds: tiled's catalogue, server app and in-process client) while the session starts.

    Use it as the tiled client it becomes (``find_runs(catalogue, ...)``,
    ``catalogue[uid]``, ``last_run(catalogue)``, ``catalogue.search(...)``): each use waits
    until it is open (at most ``timeout`` s).  ``ready`` says whether it is open, ``wait()``
    gives the client itself.  :func:`catalogue_writer` accepts it and writes once it is open:
    documents wait in the writer's buffer meanwhile."""

    def __init__(self, directory: str | Path, *, readable: Iterable[str | Path] = (),
                 timeout: float = 120.0):
        self.directory = Path(directory)
        self.readable = list(readable)
        self.timeout = timeout
        self._opened = threading.Event()
        self._client = None
        self._error: BaseException | None = None
        self._closed = False

    def open(self) -> None:
        """Open the catalogue (in the calling thread; the session runs it in the catalogue
        writer's buffer thread), and import the writer that will write into it."""
        try:
            client = open_catalogue(self.directory, readable=self.readable)
            frame_normalizer_class()  # the writer's import, while nobody waits for it
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
        """The tiled client, once open; :class:`CatalogueNotReady` if it failed to open or
        is not open after ``timeout`` s (default: the catalogue's ``timeout``)."""
        if not self._opened.wait(self.timeout if timeout is None else timeout):
            raise CatalogueNotReady(f"catalogue {self.directory} still opening after "
                                    f"{self.timeout if timeout is None else timeout} s")
        if self._client is None:
            raise CatalogueNotReady(f"catalogue {self.directory} is not open"
                                    + (f": {type(self._error).__name__}: {self._error}"
                                       if self._error else " (closed)")) from self._error
        return self._client

    def close(self, timeout: float = 30.0) -> None:
        """Close tiled's in-process server (waiting at most ``timeout`` s for an opening one)."""
        self._closed = True
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
        state = "failed" if self._error else "closed" if self._closed else "opening"
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
    ``TL_DERIVED_HDF5`` become the ``images`` stream's arrays.

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
                    writer = TiledWriter(target, normalizer=frame_normalizer_class(), batch_size=1,
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
        readable is checked by bluesky at the stop document instead (``_validate``)."""

        SPECS = {"AD_HDF5": "application/x-hdf5", "TL_DERIVED_HDF5": "application/x-hdf5"}

        def __init__(self, patches=None, spec_to_mimetype=None):
            super().__init__(patches=patches, spec_to_mimetype={**self.SPECS, **(spec_to_mimetype or {})})
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
            try:
                with h5py.File(_path(resource), "r") as f:
                    data = f[dataset]
                    self._derived_dtypes[name] = data.dtype.str
                    return {"dataset": dataset, "chunk_shape": list(data.chunks or data.shape)}
            except (OSError, KeyError):
                return {"dataset": dataset, "_validate": True}

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
                          "swmr": True, "join_method": "stack", "chunk_shape": [1]}
            if "dtype_numpy" not in data_keys.get(key, {}):
                parameters["_validate"] = True
            uid = f"{resource['uid']}-{stream}-{key}"
            self.emit(DocumentNames.stream_resource, {
                "uid": uid, "data_key": key, "mimetype": "application/x-hdf5",
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
    return FrameNormalizer
