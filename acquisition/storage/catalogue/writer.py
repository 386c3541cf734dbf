"""Writing runs into the catalogue: :func:`catalogue_writer`, bluesky's ``TiledWriter`` for
the RunEngine and the processor, one write at a time in the process."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

from .access import catalogue_directory
from .background import BackgroundCatalogue
from .normalizer import frame_normalizer_class

log = logging.getLogger(__package__)  # the catalogue's one logger name, as before its split


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
