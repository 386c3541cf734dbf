"""A record of each phase-stepping run beside its raw frames, for offline reconstruction.

``run_recorder(out_dir)`` is an ``event_model.RunRouter`` (not filling: it keeps the file
references) that writes ``run_<uid>.h5`` at the run's stop: the start and stop documents
as JSON attributes and one row per frame (stream, G2 position um, stage x/y mm, file,
point number, mosaic tile).  ``read_run_record(path)`` gives them back; the frames themselves are read
through ``acquisition.frames``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import event_model
import h5py
import numpy as np

from .frames import image_key

FRAME_ROW = np.dtype([("stream", h5py.string_dtype()), ("g2_um", "f8"), ("stage_x_mm", "f8"),
                      ("stage_y_mm", "f8"), ("file", h5py.string_dtype()), ("point", "i8"),
                      ("tile", "i8")])


def run_recorder(out_dir: str | Path):
    """A RunRouter that records every run with a ``phase_stepping`` start document."""
    out = Path(out_dir)

    def factory(name, start_doc):
        return ([RunRecorder(out)], []) if "phase_stepping" in start_doc else ([], [])

    return event_model.RunRouter([factory])


class RunRecorder(event_model.DocumentRouter):
    """Collects a run's frame references; writes them when the run stops."""

    def __init__(self, out_dir: Path):
        super().__init__()
        self.out_dir = out_dir
        self.streams: dict[str, str] = {}
        self.files: dict[str, str] = {}
        self.datums: dict[str, tuple[str, int]] = {}
        self.rows: list[tuple] = []
        self.image_key = None

    def start(self, doc):
        self.start_doc = doc

    def descriptor(self, doc):
        self.streams[doc["uid"]] = doc["name"]
        self.image_key = image_key(doc) or self.image_key

    def resource(self, doc):
        self.files[doc["uid"]] = os.path.join(doc["root"], doc["resource_path"])

    def datum(self, doc):
        self.datums[doc["datum_id"]] = (doc["resource"], int(doc["datum_kwargs"]["point_number"]))

    def event(self, doc):
        data = doc["data"]
        if self.image_key not in data or data[self.image_key] not in self.datums:
            return
        resource, point = self.datums[data[self.image_key]]
        self.rows.append((self.streams[doc["descriptor"]], float(data.get("g2", np.nan)),
                          float(data.get("stage_x", np.nan)), float(data.get("stage_y", np.nan)),
                          self.files[resource], point, int(data.get("tile", 0))))

    def stop(self, doc):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"run_{self.start_doc['uid'][:8]}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["start"] = json.dumps(self.start_doc, default=str)
            f.attrs["stop"] = json.dumps(doc, default=str)
            f.create_dataset("frames", data=np.array(self.rows, dtype=FRAME_ROW))


@dataclass
class RunRecord:
    start: dict
    stop: dict
    frames: np.ndarray
    """Structured rows: stream, g2_um, stage_x_mm, stage_y_mm, file, point, tile."""


class RunRecordError(ValueError):
    """A run record file is missing, broken or not a run record; the message names it."""


def read_run_record(path: str | Path) -> RunRecord:
    """Read ``run_<uid>.h5``."""
    try:
        with h5py.File(path, "r") as f:
            start = json.loads(f.attrs["start"])
            stop = json.loads(f.attrs["stop"])
            frames = f["frames"][()]
    except FileNotFoundError:
        raise RunRecordError(f"{path}: no such file") from None
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise RunRecordError(f"{path}: not a run record written by talbot-lau ({err})") from None
    if "phase_stepping" not in start:
        raise RunRecordError(f"{path}: the run has no phase-stepping plan in its start document")
    return RunRecord(start, stop, frames)
