"""A NeXus record of each phase-stepping run beside its raw frames, for offline reconstruction.

``run_recorder(out_dir)`` is an ``event_model.RunRouter`` (not filling: it keeps the file
references) that writes ``run_<uid8>.nxs`` at the run's stop (HDF5, readable by silx and
nexusformat)::

    /  NXroot  @default=entry
      entry: NXentry  @default=data
        title, start_time, end_time (ISO 8601), experiment_identifier (run uid),
        program_name (talbot-lau) @version @configuration (config digest)
        start_document, stop_document: NXnote   data: the bluesky document as JSON
        derived: NXnote   file_name: derived_<uid8>*.h5 (the processor's files, written later)
        user: NXuser   name (operator)
        sample: NXsample   name, sample_id, thickness (mm), delivered_dose (mGy, the run's
            dose stream), planned_dose (mGy)
        instrument: NXinstrument
          source: NXsource   type, probe, voltage (kV), current (mA), distance (mm)
          G0, G1, G2: NXgrating   period (um), distance (mm), depth, substrate_thickness (um), ...
          interferometer: NXcollection   the start document's geometry and shared grating
              values (mm, keV, ...)
          detector: NXdetector   x/y_pixel_size (um), binning, region, count_time (s),
              distance (mm), sample_pixel_size (mm)
            raw_000, raw_001, ... -> <frame file>:/entry/data/data  (ExternalLink per file)
            frames: NXcollection   one row per frame: stream, g2_um, stage_x_mm, stage_y_mm,
                file, point, tile, shutter (1 open, 0 closed, -1 not read) (1-D columns with units)
        data: NXdata   @signal=raw_000   the same links (frames along the first axis)

Distances are from the sample, negative upstream (NeXus convention).  Links name frame
files relative to the record's directory, so a run's folder can be moved as a whole.

A record is built in memory and written to ``.run_<uid8>.nxs.part`` beside its final name,
then renamed: a failed write (disk full, no permission) leaves no empty or truncated record
that would hide the run.  It logs one error naming the file instead, and never raises into
the RunEngine.

``read_run_record(path)`` gives the documents and frame rows back (also of the earlier
``run_<uid8>.h5`` records); the frames themselves are read through ``acquisition.frames``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import event_model
import h5py
import numpy as np

from .derived_store import derived_glob
from .frames import FRAME_DATASET, image_key
from .nexus import iso8601, nx_field, nx_group, nx_quantities, nx_root
from .projection import shutter_open

log = logging.getLogger(__name__)

FRAME_ROW = np.dtype([("stream", h5py.string_dtype()), ("g2_um", "f8"), ("stage_x_mm", "f8"),
                      ("stage_y_mm", "f8"), ("file", h5py.string_dtype()), ("point", "i8"),
                      ("tile", "i8"), ("shutter", "i1")])
FRAME_UNITS = {"g2_um": "um", "stage_x_mm": "mm", "stage_y_mm": "mm"}
DOSE_STREAM = "dose"
"""The stream of :class:`acquisition.plans.stubs.DoseTally`: the delivered dose so far (mGy)."""
GRATING_NAMES = {"gold": "depth", "substrate": "substrate_thickness", "field": "field_size"}


def sample_fields(sample) -> dict:
    """A start document's ``sample`` as a dict: the plans' ``{"id": ..., ...}`` as it is, a
    stock bluesky string (``RE(plan, sample="S-1")``) as ``{"id": "S-1"}``, nothing as {}."""
    if isinstance(sample, dict):
        return sample
    if isinstance(sample, str) and sample.strip():
        return {"id": sample}
    return {}


def sample_id(sample, default: str = "") -> str:
    """The id of a start document's ``sample`` (a dict with an ``id`` or a string)."""
    return str(sample_fields(sample).get("id", default))


def record_name(uid: str) -> str:
    """File name of the run record of run ``uid``."""
    return f"run_{uid[:8]}.nxs"


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
        self.files: dict[str, str] = {}
        self.datums: dict[str, tuple[str, int]] = {}
        self.rows: list[tuple] = []
        self.image_key = None
        self.dose_mgy: float | None = None

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
        if self.streams[doc["descriptor"]] == DOSE_STREAM:
            self.dose_mgy = float(next(iter(data.values())))  # a running total: the last counts
            return
        if self.image_key not in data or data[self.image_key] not in self.datums:
            return
        resource, point = self.datums[data[self.image_key]]
        shutter = shutter_open(self.start_doc, data)
        self.rows.append((self.streams[doc["descriptor"]], float(data.get("g2", np.nan)),
                          float(data.get("stage_x", np.nan)), float(data.get("stage_y", np.nan)),
                          self.files[resource], point, int(data.get("tile", 0)),
                          -1 if shutter is None else int(shutter)))

    def stop(self, doc):
        path = self.out_dir / record_name(self.start_doc["uid"])
        write_record(path, self.start_doc, doc, np.array(self.rows, dtype=FRAME_ROW), self.dose_mgy)


def write_record(path: Path, start: dict, stop: dict, frames: np.ndarray,
                 dose_mgy: float | None) -> bool:
    """Write the run record to ``path`` all or nothing (module docstring); False, with one
    error logged naming the file, if it could not be written."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.part")
    try:
        buffer = io.BytesIO()  # HDF5 never holds a file on a failing disk
        with h5py.File(buffer, "w") as f:
            write_run_entry(f, start, stop, frames, dose_mgy, record_path=path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as out:
            out.write(buffer.getbuffer())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        return True
    except Exception as err:  # noqa: BLE001 - a record that fails never reaches the RunEngine
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        log.error("run record %s NOT written (%s: %s); the run's frames are in %s", path,
                  type(err).__name__, err,
                  ", ".join(sorted({os.path.dirname(str(f)) for f in frames["file"]})) or "no file")
        return False


def write_run_entry(f: h5py.File, start: dict, stop: dict, frames: np.ndarray,
                    dose_mgy: float | None, record_path: str | Path | None = None) -> None:
    """Write the NeXus run record of the module docstring into the open file ``f`` (to be
    stored at ``record_path``, default ``f.filename``: frame links are relative to it)."""
    uid = start["uid"]
    entry = nx_root(f, start.get("software_version", "unknown"))
    entry["program_name"].attrs["configuration"] = start.get("config_digest", "")
    sample = sample_fields(start.get("sample"))  # a dict, or a string with stock bluesky
    nx_field(entry, "title", f"{start.get('plan_name', 'run')} of {sample.get('id', 'no sample')}")
    nx_field(entry, "start_time", iso8601(start["time"]))
    nx_field(entry, "end_time", iso8601(stop["time"]))
    nx_field(entry, "experiment_identifier", uid)
    for name, doc in (("start_document", start), ("stop_document", stop)):
        note = nx_group(entry, name, "NXnote")
        nx_field(note, "type", "application/json")
        nx_field(note, "description", f"the run's bluesky {name.replace('_', ' ')}")
        nx_field(note, "data", json.dumps(doc, default=str))
    note = nx_group(entry, "derived", "NXnote")
    nx_field(note, "file_name", derived_glob(uid))
    nx_field(note, "description", "images and clusters derived by the processor, written to its "
             "output directory when done; each links this entry's data as /entry/raw")
    if start.get("operator"):
        nx_field(nx_group(entry, "user", "NXuser"), "name", start["operator"])

    group = nx_group(entry, "sample", "NXsample")
    nx_field(group, "name", sample.get("name", sample.get("id", "")))
    nx_quantities(group, {k: v for k, v in sample.items() if k != "name"}, {"id": "sample_id"})
    nx_field(group, "planned_dose", start.get("planned_dose_mgy", np.nan), "mGy",
             long_name="planned mean glandular dose")
    if dose_mgy is not None:
        nx_field(group, "delivered_dose", dose_mgy, "mGy", long_name="delivered mean glandular dose")

    record = str(record_path) if record_path is not None else f.filename
    files = [_relative(str(file), record) for file in dict.fromkeys(frames["file"])]
    links = {f"raw_{index:03d}": file for index, file in enumerate(files)}
    _instrument(nx_group(entry, "instrument", "NXinstrument"), start, frames, links)
    if links:
        data = nx_group(entry, "data", "NXdata", signal="raw_000", axes=[".", ".", "."])
        for name, file in links.items():
            data[name] = h5py.ExternalLink(file, "/" + FRAME_DATASET)
        entry.attrs["default"] = "data"


def _instrument(instrument: h5py.Group, start: dict, frames: np.ndarray, links: dict) -> None:
    geometry, gratings = start.get("geometry", {}), start.get("gratings", {})
    tube = start.get("tube", {})
    distance = _distances_from_sample(geometry)

    source = nx_group(instrument, "source", "NXsource")
    nx_field(source, "type", "Rotating Anode X-ray")
    nx_field(source, "probe", "x-ray")
    nx_quantities(source, {"voltage_kv": tube.get("kv"), "current_ma": tube.get("ma"),
                           "distance_mm": distance.get("source")})

    for n in range(3):
        grating = nx_group(instrument, f"G{n}", "NXgrating")
        prefix = f"g{n}_"
        nx_quantities(grating, {k[len(prefix):]: v for k, v in gratings.items() if k.startswith(prefix)},
                      GRATING_NAMES)
        nx_quantities(grating, {"distance_mm": distance.get(f"G{n}")})
    shared = {k: v for k, v in gratings.items() if k[:3] not in ("g0_", "g1_", "g2_")}
    nx_quantities(nx_group(instrument, "interferometer", "NXcollection"), {**geometry, **shared})

    pixel = start.get("detector_pixel", {})
    detector = nx_group(instrument, "detector", "NXdetector")
    size_um = pixel.get("pixel_um", np.nan) * pixel.get("binning", 1)
    for axis in "xy":
        nx_field(detector, f"{axis}_pixel_size", size_um, "um")
    nx_quantities(detector, {"binning": pixel.get("binning"), "count_time_s":
                             start["phase_stepping"].get("exposure_s"),
                             "distance_mm": distance.get("detector"),
                             "sample_pixel_size_mm": pixel.get("sample_pixel_mm")})
    if pixel.get("region"):
        nx_field(detector, "region", np.asarray(pixel["region"], np.int64),
                 description="first row, first column, rows, columns of the read-out region")
    for name, file in links.items():
        detector[name] = h5py.ExternalLink(file, "/" + FRAME_DATASET)
    table = nx_group(detector, "frames", "NXcollection")
    for name in FRAME_ROW.names:
        nx_field(table, name, frames[name], FRAME_UNITS.get(name), dtype=FRAME_ROW[name])


def _distances_from_sample(geometry: dict) -> dict[str, float]:
    """Source, gratings and detector positions along the beam (mm from the sample)."""
    try:
        source = -geometry["source_sample_mm"]
        g1 = geometry["sample_g1_mm"]
        return {"source": source, "G0": source + geometry["source_g0_mm"], "G1": g1,
                "G2": g1 + geometry["g1_g2_mm"], "detector": geometry["sample_detector_mm"]}
    except KeyError:
        return {}


def _relative(file: str, record: str) -> str:
    """``file`` relative to the directory of ``record`` (absolute across drives)."""
    try:
        return os.path.relpath(os.path.abspath(file), os.path.dirname(os.path.abspath(record)))
    except ValueError:
        return os.path.abspath(file)


@dataclass
class RunRecord:
    start: dict
    stop: dict
    frames: np.ndarray
    """Structured rows: stream, g2_um, stage_x_mm, stage_y_mm, file, point, tile, shutter
    (missing in records from before NeXus)."""


class RunRecordError(ValueError):
    """A run record file is missing, broken or not a run record; the message names it."""


def read_run_record(path: str | Path) -> RunRecord:
    """Read ``run_<uid8>.nxs`` (or an earlier ``run_<uid8>.h5``)."""
    try:
        with h5py.File(path, "r") as f:
            if "entry" in f:
                entry = f["entry"]
                start = json.loads(entry["start_document/data"][()])
                stop = json.loads(entry["stop_document/data"][()])
                frames = _frame_rows(entry["instrument/detector/frames"])
            else:  # before the NeXus layout: JSON attributes and a compound table
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


def _frame_rows(table: h5py.Group) -> np.ndarray:
    rows = np.empty(len(table["stream"]), FRAME_ROW)
    rows["shutter"] = -1  # records written before the column: not read
    for name in FRAME_ROW.names:
        if name not in table:
            continue
        column = table[name]
        rows[name] = column.asstr()[()] if h5py.check_string_dtype(column.dtype) else column[()]
    return rows
