"""The one loader of frames: event-model handlers for the files our documents reference.

``AD_HDF5`` is areaDetector's HDF5 plugin layout (``/entry/data/data``, frames along the
first axis), written by the PaxScan IOC and by its twin alike; ``TL_DERIVED_HDF5`` is the
processor's derived NeXus file (NXdata ``/entry/<name>``, signal ``data``).  Both open files
in SWMR mode so frames can be read while the writer still appends.  A broken or missing file raises
:class:`FrameReadError` naming the file.

One open frame file per process.  HDF5 shares one open dataset among all the handles a
process opens to it, and once a dataset of a file that another process is still appending
to is open twice at once, ``refresh()`` updates its extent but not its chunk index: every
frame appended since then reads, without any error, as an earlier one (the first: the dark
frame), and a second open sees the first one's stale extent (checked with HDF5 2.0 / h5py
3.16; ``tests/test_live_equals_offline.py`` shows it).  The live monitor's filler and the
processor's worker read the same file at the same time, so with ``talbot-lau session --ioc P
--monitor`` every frame the processor read was the dark frame (T = V = 1, no clusters, or
"no beam").  Every :class:`HDF5FrameHandler` therefore reads through one shared,
reference-counted handle per file (:func:`_acquire`, keyed by device and inode), refreshed
and read under its lock; the file is closed when the last handler is closed or collected.
A reader that asks for a frame the file does not hold yet waits up to :data:`FRAME_WAIT_S`
while the file is still being written (SWMR), then raises :class:`FrameReadError` naming
the file and the frame.

Consumers that must not read files where they receive documents (the live processor gets
them on the RunEngine's thread) keep a :class:`FrameRef` per frame (``frame_ref(resource,
datum)``) and read it later, in a worker, through a :class:`FrameLoader`: the same handler.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from dataclasses import dataclass

import h5py
import hdf5plugin  # noqa: F401  registers bitshuffle/LZ4 with h5py, so bslz4 frame files read in any process
import numpy as np

from ..errors import TalbotLauError


class FrameReadError(TalbotLauError, OSError):
    """A referenced frame file is missing, truncated or not in the expected layout."""


FRAME_DATASET = "entry/data/data"
"""Frames of an ``AD_HDF5`` file, (n, rows, cols) along the first axis."""
DERIVED_DATASET = "entry/{name}/data"
"""A derived image ``name`` of a ``TL_DERIVED_HDF5`` file."""


def _open(filename: str) -> h5py.File:
    """Open a finished file normally (HDF5 then checks it is complete), or a file that is
    still being written in SWMR mode."""
    try:
        return h5py.File(filename, "r")
    except FileNotFoundError:
        raise FrameReadError(f"{filename}: no such file") from None
    except OSError as err:
        if "truncated" in str(err) or "signature" in str(err):
            raise FrameReadError(f"{filename}: not a complete HDF5 file ({err})") from None
        try:
            return h5py.File(filename, "r", swmr=True)
        except OSError:
            raise FrameReadError(f"{filename}: cannot open HDF5 file ({err})") from None


FRAME_WAIT_S = 10.0
"""How long a reader waits for a frame that a file still being written does not hold yet."""


class _OpenFrameFile:
    """The process's one open handle on a frame file, its dataset and the lock around them."""

    def __init__(self, filename: str, key: tuple[int, int]):
        self.filename = filename
        self.key = key
        self.lock = threading.RLock()  # a finalizer may run inside (garbage collection)
        self.users = 0
        self.file = _open(filename)
        try:
            self.dataset = self.file[FRAME_DATASET]
        except KeyError:
            self.file.close()
            raise FrameReadError(f"{filename}: no dataset /{FRAME_DATASET}") from None

    def frames(self) -> int:
        """How many frames the file holds now (refreshed first when it is still written);
        call with ``lock`` held."""
        try:
            self.dataset.refresh()
        except (AttributeError, ValueError, RuntimeError):
            pass  # not opened in SWMR mode: a finished file, nothing to refresh
        return self.dataset.shape[0]

    @property
    def growing(self) -> bool:
        """Opened in SWMR mode: another process may still append to it."""
        try:
            return bool(self.file.swmr_mode)
        except (AttributeError, ValueError):
            return False

    def close(self) -> None:
        with self.lock, contextlib.suppress(OSError, RuntimeError, ValueError):  # broken while open
            self.file.close()


_OPEN_FILES: dict[tuple[int, int], _OpenFrameFile] = {}
_OPEN_FILES_LOCK = threading.RLock()  # as above


def _acquire(filename: str) -> _OpenFrameFile:
    """The shared open handle on ``filename`` (opened now if no reader holds it), one more user."""
    try:
        stat = os.stat(filename)
    except FileNotFoundError:
        raise FrameReadError(f"{filename}: no such file") from None
    except OSError as err:
        raise FrameReadError(f"{filename}: cannot open ({err})") from None
    key = (stat.st_dev, stat.st_ino)  # a file removed and written anew is another file
    with _OPEN_FILES_LOCK:
        entry = _OPEN_FILES.get(key)
        if entry is None:
            entry = _OPEN_FILES[key] = _OpenFrameFile(filename, key)
        entry.users += 1
        return entry


def _release(entry: _OpenFrameFile) -> None:
    """One user less; the last one closes the file."""
    with _OPEN_FILES_LOCK:
        entry.users -= 1
        if entry.users > 0:
            return
        if _OPEN_FILES.get(entry.key) is entry:
            del _OPEN_FILES[entry.key]
    entry.close()


@atexit.register
def _close_all() -> None:
    """At the interpreter's exit, every frame file still held (a handler in a reference
    cycle, a daemon thread's) is closed while h5py still works: an HDF5 file object
    destroyed during the interpreter's teardown can crash it."""
    with _OPEN_FILES_LOCK:
        entries = list(_OPEN_FILES.values())
        _OPEN_FILES.clear()
    for entry in entries:
        entry.close()


def open_frame_files() -> list[str]:
    """The frame files the process's readers hold open now (for tests and diagnostics)."""
    with _OPEN_FILES_LOCK:
        return [entry.filename for entry in _OPEN_FILES.values()]


class HDF5FrameHandler:
    """Handler for spec ``AD_HDF5``: ``handler(point_number)`` is that point's frame(s).

    Reads through the process's one shared handle on the file (see the module docstring);
    a point the file does not hold yet is waited for, up to ``wait_s`` (default
    :data:`FRAME_WAIT_S`), while the file is still being written."""

    specs = {"AD_HDF5"}

    def __init__(self, filename: str, frame_per_point: int = 1, *, wait_s: float | None = None):
        self._filename = filename
        self._frame_per_point = frame_per_point
        self._wait_s = FRAME_WAIT_S if wait_s is None else wait_s
        self._entry = _acquire(filename)
        self._release = weakref.finalize(self, _release, self._entry)

    def __call__(self, point_number: int) -> np.ndarray:
        first = point_number * self._frame_per_point
        stop = first + self._frame_per_point
        entry = self._entry
        deadline = time.monotonic() + self._wait_s
        while True:
            with entry.lock:
                if not self._release.alive:
                    raise FrameReadError(f"{self._filename}: handler closed")
                held = entry.frames()
                if held >= stop:
                    try:
                        frames = entry.dataset[first:stop]
                    except OSError as err:
                        raise FrameReadError(f"{self._filename}: cannot read frame {first} ({err})") from None
                    return frames[0] if self._frame_per_point == 1 else frames
                growing = entry.growing
            if not growing or time.monotonic() >= deadline:
                waited = f" after waiting {self._wait_s:g} s for it" if growing else ""
                raise FrameReadError(f"{self._filename}: frame {first} requested but the file holds "
                                     f"{held} frames{waited}")
            time.sleep(0.02)

    def close(self) -> None:
        self._release()


class DerivedImageHandler:
    """Handler for spec ``TL_DERIVED_HDF5``: ``handler(name)`` is ``/entry/<name>/data``."""

    specs = {"TL_DERIVED_HDF5"}

    def __init__(self, filename: str):
        self._filename = filename
        self._file = _open(filename)

    def __call__(self, name: str) -> np.ndarray:
        try:
            return self._file[DERIVED_DATASET.format(name=name)][()]
        except KeyError:
            raise FrameReadError(f"{self._filename}: no derived image {name!r}") from None

    def close(self) -> None:
        self._file.close()


def image_key(descriptor: dict) -> str | None:
    """The data key of a descriptor whose values are frames in files (2-D, external)."""
    for key, info in descriptor["data_keys"].items():
        if info.get("external") and len(info.get("shape", [])) >= 2:
            return key
    return None


HANDLERS = {"AD_HDF5": HDF5FrameHandler, "TL_DERIVED_HDF5": DerivedImageHandler}
"""The handler registry for ``event_model.Filler`` / ``RunRouter``."""


@dataclass(frozen=True)
class FrameRef:
    """Where one frame is: point ``point`` of the ``AD_HDF5`` file ``file`` (read later)."""

    file: str
    point: int
    frame_per_point: int = 1

    def __str__(self) -> str:
        return f"{self.file} point {self.point}"


def frame_ref(resource: dict, datum: dict) -> FrameRef:
    """The FrameRef of a Datum of an ``AD_HDF5`` Resource (raises FrameReadError otherwise)."""
    if resource.get("spec") != "AD_HDF5":
        raise FrameReadError(f"{resource.get('resource_path')}: spec {resource.get('spec')!r} "
                             "is not a frame file (AD_HDF5)")
    kwargs = resource.get("resource_kwargs") or {}
    return FrameRef(os.path.join(resource.get("root") or "/", resource["resource_path"]),
                    int(datum["datum_kwargs"]["point_number"]), int(kwargs.get("frame_per_point", 1)))


class FrameLoader:
    """Reads :class:`FrameRef` s (an array is passed through), one open handler per file;
    ``close()`` (or ``with``) closes the files."""

    def __init__(self):
        self._handlers: dict[tuple[str, int], HDF5FrameHandler] = {}

    def __call__(self, ref) -> np.ndarray:
        if not isinstance(ref, FrameRef):
            return np.asarray(ref)
        key = (ref.file, ref.frame_per_point)
        handler = self._handlers.get(key)
        if handler is None:
            handler = self._handlers[key] = HDF5FrameHandler(ref.file, ref.frame_per_point)
        return handler(ref.point)

    def close(self) -> None:
        handlers, self._handlers = self._handlers, {}
        for handler in handlers.values():
            with contextlib.suppress(OSError, RuntimeError, ValueError):  # a file broken while open
                handler.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
