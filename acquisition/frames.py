"""The one loader of frames: event-model handlers for the files our documents reference.

``AD_HDF5`` is areaDetector's HDF5 plugin layout (``/entry/data/data``, frames along the
first axis), written by the PaxScan IOC and by its twin alike; ``TL_DERIVED_HDF5`` is the
processor's derived NeXus file (NXdata ``/entry/<name>``, signal ``data``).  Both open files
in SWMR mode so frames can be read while the writer still appends.  A broken or missing file raises
:class:`FrameReadError` naming the file.

Consumers that must not read files where they receive documents (the live processor gets
them on the RunEngine's thread) keep a :class:`FrameRef` per frame (``frame_ref(resource,
datum)``) and read it later, in a worker, through a :class:`FrameLoader`: the same handler.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import h5py
import numpy as np


class FrameReadError(OSError):
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


class HDF5FrameHandler:
    """Handler for spec ``AD_HDF5``: ``handler(point_number)`` is that point's frame(s)."""

    specs = {"AD_HDF5"}

    def __init__(self, filename: str, frame_per_point: int = 1):
        self._filename = filename
        self._frame_per_point = frame_per_point
        self._file = _open(filename)
        try:
            self._dataset = self._file[FRAME_DATASET]
        except KeyError:
            self._file.close()
            raise FrameReadError(f"{filename}: no dataset /{FRAME_DATASET}") from None

    def __call__(self, point_number: int) -> np.ndarray:
        first = point_number * self._frame_per_point
        stop = first + self._frame_per_point
        try:
            self._dataset.refresh()
        except (AttributeError, ValueError, RuntimeError):
            pass  # not opened in SWMR mode: nothing to refresh
        if self._dataset.shape[0] < stop:
            raise FrameReadError(
                f"{self._filename}: frame {first} requested but the file holds "
                f"{self._dataset.shape[0]} frames"
            )
        try:
            frames = self._dataset[first:stop]
        except OSError as err:
            raise FrameReadError(f"{self._filename}: cannot read frame {first} ({err})") from None
        return frames[0] if self._frame_per_point == 1 else frames

    def close(self) -> None:
        self._file.close()


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
open_frame_files = lambda: []
