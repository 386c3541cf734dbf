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

The package, one module a concept (import the names from the package itself): ``layout``
(the catalogue directory's files), ``adapters`` (tiled adapters of our frame and derived
files, :func:`served_catalogue`), ``access`` (:func:`open_catalogue`, :func:`find_runs`,
:func:`last_run`), ``server`` (``tiled.yml``, the server's command line and API key,
:func:`connect_catalogue`), ``background`` (:class:`BackgroundCatalogue`), ``normalizer``
(bluesky's normaliser and consolidator taught our file specs) and ``writer``
(:func:`catalogue_writer`).
"""

from __future__ import annotations

from .access import catalogue_directory, find_runs, last_run, open_catalogue
from .adapters import (
    DERIVED_MIMETYPE,
    FRAMES_MIMETYPE,
    TABLE_MIMETYPE,
    asset_path,
    relative_uri,
    served_catalogue,
)
from .background import BackgroundCatalogue, CatalogueNotReady
from .layout import CATALOG_DB, DATA_DIR, TABLES_DB
from .normalizer import RELATIVE_TO, frame_normalizer_class
from .server import (
    API_KEY_ENV,
    API_KEY_FILE,
    SERVER_CONFIG,
    TILED_KEY_ENV,
    connect_catalogue,
    read_api_key,
    server_api_key,
    server_command,
    server_environment,
    write_server_config,
)
from .writer import catalogue_writer

__all__ = [
    "API_KEY_ENV", "API_KEY_FILE", "CATALOG_DB", "DATA_DIR", "DERIVED_MIMETYPE", "FRAMES_MIMETYPE",
    "RELATIVE_TO", "SERVER_CONFIG", "TABLES_DB", "TABLE_MIMETYPE", "TILED_KEY_ENV",
    "BackgroundCatalogue", "CatalogueNotReady", "asset_path", "catalogue_directory",
    "catalogue_writer", "connect_catalogue", "find_runs", "frame_normalizer_class", "last_run",
    "open_catalogue", "read_api_key", "relative_uri", "served_catalogue", "server_api_key",
    "server_command", "server_environment", "write_server_config",
]


def __getattr__(name: str):
    """``FrameNormalizer`` is built on first use: its base class comes with bluesky's tiled
    writer, whose import (tiled's dataframe client, dask, pandas) takes about 2 s."""
    if name == "FrameNormalizer":
        return frame_normalizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
