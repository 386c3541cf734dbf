"""The session's catalogue, opened at its first use: :class:`BackgroundCatalogue`."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from ...errors import TalbotLauError
from .access import open_catalogue
from .normalizer import frame_normalizer_class

log = logging.getLogger(__package__)  # the catalogue's one logger name, as before its split


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
