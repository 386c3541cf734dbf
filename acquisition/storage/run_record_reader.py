"""Reads a run record back: its start and stop documents and its frame rows.

``read_run_record(path)`` reads ``run_<uid8>.nxs`` (written by
``acquisition.storage.run_record``; also of the earlier NeXus and ``run_<uid8>.h5`` layouts)
and resolves the frame files against the record's current place; the frames themselves are
read through ``acquisition.storage.frames``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import TalbotLauError
from .run_record import FRAME_ROW, _text


@dataclass
class RunRecord:
    start: dict
    stop: dict
    frames: np.ndarray
    """FRAME_ROW rows: stream, g2_um, stage_x_mm, stage_y_mm, file (resolved against the
    record's current folder), point, tile, shutter (-1 in records from before the column)."""


class RunRecordError(TalbotLauError, ValueError):
    """A run record file is missing, broken or not a run record; the message names it."""


def read_run_record(path: str | Path) -> RunRecord:
    """Read ``run_<uid8>.nxs`` (or an earlier ``run_<uid8>.h5``); frame files are found
    relative to the record's folder now, wherever it was written."""
    try:
        with h5py.File(path, "r") as f:
            if "entry" in f:
                entry = f["entry"]
                start = json.loads(entry["start_document/data"][()])
                stop = json.loads(entry["stop_document/data"][()])
                frames = _frame_rows(entry["instrument/detector/frames"])
                moved = _linked_files(entry["instrument/detector"], frames)
            else:  # before the NeXus layout: JSON attributes and a compound table
                start = json.loads(f.attrs["start"])
                stop = json.loads(f.attrs["stop"])
                frames = _frame_rows(f["frames"])
                moved = {}
    except FileNotFoundError:
        raise RunRecordError(f"{path}: no such file") from None
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise RunRecordError(f"{path}: not a run record written by talbot-lau ({err})") from None
    if "phase_stepping" not in start:
        raise RunRecordError(f"{path}: the run has no phase-stepping plan in its start document")
    folder = os.path.dirname(os.path.abspath(path))
    frames["file"] = [_resolve(_text(file), folder, moved) for file in frames["file"]]
    return RunRecord(start, stop, frames)


def _resolve(file: str, folder: str, moved: dict[str, str]) -> str:
    """A frame file's path now: relative paths against the record's ``folder``; an absolute
    one (records before portable paths) as it was, or where the record's link to it points
    if it is gone (the folder moved)."""
    if not os.path.isabs(file):
        return os.path.normpath(os.path.join(folder, file))
    if not os.path.exists(file) and file in moved:
        return os.path.normpath(os.path.join(folder, moved[file]))
    return file


def _linked_files(detector: h5py.Group, frames: np.ndarray) -> dict[str, str]:
    """Records before NXtomo link their frame files as ``raw_000``, ... (relative, in the
    order the files first appear in the table): absolute table path -> linked path."""
    files = [_text(f) for f in dict.fromkeys(frames["file"])]
    moved = {}
    for index, file in enumerate(files):
        link = detector.get(f"raw_{index:03d}", getlink=True)
        if isinstance(link, h5py.ExternalLink):
            moved[file] = link.filename
    return moved


def _frame_rows(table) -> np.ndarray:
    """FRAME_ROW rows of a frame table: a group of columns or an early compound dataset."""
    rows = np.empty(len(table["stream"]), FRAME_ROW)
    rows["shutter"] = -1  # records written before the column: not read
    for name in FRAME_ROW.names:
        if isinstance(table, h5py.Group):
            if name not in table:
                continue
            column = table[name]
            rows[name] = column.asstr()[()] if h5py.check_string_dtype(column.dtype) else column[()]
        elif name in table.dtype.names:
            rows[name] = [_text(v) for v in table[name]] if table.dtype[name].kind in "OSU" else table[name]
    return rows
