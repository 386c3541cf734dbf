"""Collects a phase-stepping run's frame references and dose, and writes its record at the stop.

``run_recorder(out_dir)`` is an ``event_model.RunRouter`` (not filling: it keeps the file
references); at each run's stop it writes ``run_<uid8>.nxs`` through
:func:`acquisition.storage.run_record.write_record`.
"""

from __future__ import annotations

import os
from pathlib import Path

import event_model
import numpy as np

from .frames import image_key
from .run_record import DOSE_STREAM, RECORD_ROW, record_name, shutter_open, write_record


def run_recorder(out_dir: str | Path):
    """A RunRouter that records every run with a ``phase_stepping`` start document."""
    out = Path(out_dir)

    def factory(name, start_doc):
        return ([RunRecorder(out)], []) if "phase_stepping" in start_doc else ([], [])

    return event_model.RunRouter([factory])


class RunRecorder(event_model.DocumentRouter):
    """Collects a run's frame references and dose; writes them when the run stops."""

    def __init__(self, out_dir: Path):
        super().__init__()
        self.out_dir = out_dir
        self.streams: dict[str, str] = {}
        self.exposures: dict[str, float] = {}
        self.files: dict[str, str] = {}
        self.datums: dict[str, tuple[str, int]] = {}
        self.rows: list[tuple] = []
        self.image_key = None
        self.frame = {"shape": (0, 0), "dtype": "<u2", "detector": ""}
        self.dose_mgy: float | None = None

    def start(self, doc):
        self.start_doc = doc
        tube = doc.get("tube") if isinstance(doc.get("tube"), dict) else {}
        self.tube = tube.get("device") or "tube"

    def descriptor(self, doc):
        self.streams[doc["uid"]] = doc["name"]
        key = image_key(doc)
        if key is None:
            return
        self.image_key = key
        info = doc["data_keys"][key]
        camera = doc.get("configuration", {}).get(info.get("object_name", ""), {}).get("data", {})
        self.exposures[doc["uid"]] = _exposure_s(camera)
        self.frame = {"shape": tuple(info["shape"][-2:]), "dtype": info.get("dtype_numpy") or "<u2",
                      "detector": " ".join(str(v) for k, v in camera.items()
                                           if k.endswith(("_manufacturer", "_model")))}

    def resource(self, doc):
        self.files[doc["uid"]] = os.path.join(doc["root"], doc["resource_path"])

    def datum(self, doc):
        self.datums[doc["datum_id"]] = (doc["resource"], int(doc["datum_kwargs"]["point_number"]))

    def event(self, doc):
        data = doc["data"]
        if self.streams[doc["descriptor"]] == DOSE_STREAM:
            self.dose_mgy = float(next(iter(data.values())))  # a running total: the last counts
            return
        if self.image_key not in data or data[self.image_key] not in self.datums:
            return
        resource, point = self.datums[data[self.image_key]]
        shutter = shutter_open(self.start_doc, data)
        self.rows.append((self.streams[doc["descriptor"]], _number(data, "g2"),
                          _number(data, "stage_x"), _number(data, "stage_y"),
                          self.files[resource], point, int(data.get("tile", 0)),
                          -1 if shutter is None else int(shutter), float(doc["time"]),
                          _number(data, f"{self.tube}_kv"), _number(data, f"{self.tube}_ma"),
                          _number(data, "g2_user_setpoint"),
                          self.exposures.get(doc["descriptor"], np.nan)))

    def stop(self, doc):
        path = self.out_dir / record_name(self.start_doc["uid"])
        write_record(path, self.start_doc, doc, np.array(self.rows, dtype=RECORD_ROW), self.dose_mgy,
                     frame=self.frame)


def _number(data: dict, key: str) -> float:
    try:
        return float(data[key])
    except (KeyError, TypeError, ValueError):
        return np.nan


def _exposure_s(camera: dict) -> float:
    """A frame's exposure (s) from the detector's configuration readings: AcquireTime times
    NumExposures, as ``devices.paxscan`` sums it (NaN if not read)."""
    time = [v for k, v in camera.items() if k.endswith("_cam_acquire_time")]
    count = [v for k, v in camera.items() if k.endswith("_cam_num_exposures")]
    if not time:
        return np.nan
    return float(time[0]) * max(int(count[0]) if count else 1, 1)
