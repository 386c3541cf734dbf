"""Opening a catalogue directory in process (created and initialised if new), and finding
runs in any catalogue client by sample id or start time."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import warnings
import weakref
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from .adapters import served_catalogue
from .layout import DATA_DIR, TABLES_DB, _storage
from .server import write_server_config

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
        except BaseException as err:  # noqa: BLE001  re-raised in the caller's thread
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


def catalogue_directory(client) -> Path | None:
    """The directory of the catalogue behind an in-process client (:func:`open_catalogue`),
    None for one behind a server (its directory is the server's)."""
    try:
        return _DIRECTORIES.get(client.context)
    except (AttributeError, TypeError):
        return None
