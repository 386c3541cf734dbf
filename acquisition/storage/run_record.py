"""The NeXus record of each phase-stepping run beside its raw frames, for offline reconstruction.

``write_record`` writes ``run_<uid8>.nxs`` (``acquisition.storage.run_recorder`` calls it at
the run's stop): an NXentry of application definition NXtomo (``nxvalidate -a NXtomo``
passes), readable by silx and nexusformat.  docs/data-format.md describes every field; in
short::

    entry: NXentry  definition = NXtomo, entry_identifier_uuid = run uid, title, start/end_time
      start_document, stop_document, derived: NXnote     user: NXuser
      sample: NXsample   name, sample_id, description, thickness (mm), rotation_angle (deg, 0
          per frame), x_translation, y_translation (mm per frame), dose: NXcollection (mGy)
      instrument: NXinstrument
        source: NXsource   anode_material, voltage (kV), current (mA) per frame, depends_on
        filter_0, ...: NXfilter   the beam filtration before the sample (mm)
        g2: NXpositioner   value, target_value (um per frame)
        interferometer: NXcollection   geometry; G0, G1, G2: NXgrating placed by depends_on
        detector: NXdetector   data (n, rows, cols: a virtual dataset over the frame files),
            image_key, count_time, stop_time per frame; region: NXdetector_module;
            frames: NXcollection (one row per frame: stream, g2_um, ..., file, point, tile)
      data: NXdata   data, image_key, rotation_angle (links)

``image_key`` (:data:`IMAGE_KEYS`): 0 a sample frame, 1 a reference (flat), 2 a dark, 3 a
frame no reconstruction uses (lag flush, fringe probe, a beam frame read with the shutter
closed).  Every path in the record is relative to the record's folder, so a run's folder
can be moved or copied as a whole; ``read_run_record`` resolves the frame files against the
record's current place.

A record is built in memory and written to ``.run_<uid8>.nxs.part`` beside its final name,
then renamed: a failed write (disk full, no permission) leaves no empty or truncated record
that would hide the run.  It logs one error naming the file instead, and never raises into
the RunEngine.

The constants here (:data:`FRAME_ROW`, :data:`RECORD_ROW`, ...) are shared by the recorder
and the reader (``acquisition.storage.run_record_reader``), which gives the documents and
frame rows back.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from .derived_store import derived_glob
from .frames import FRAME_DATASET
from .nexus import IMAGE_KEYS as ROLE_IMAGE_KEYS
from .nexus import (
    INVALID_IMAGE_KEY,
    iso8601,
    nx_field,
    nx_group,
    nx_link,
    nx_quantities,
    nx_root,
    nx_translation,
    nx_virtual_stack,
    split_units,
)

log = logging.getLogger(__name__)

FRAME_ROW = np.dtype([("stream", h5py.string_dtype()), ("g2_um", "f8"), ("stage_x_mm", "f8"),
                      ("stage_y_mm", "f8"), ("file", h5py.string_dtype()), ("point", "i8"),
                      ("tile", "i8"), ("shutter", "i1")])
"""One row per frame, as :func:`acquisition.storage.run_record_reader.read_run_record`
returns them (``file``: a path that exists where the record is now)."""
RECORD_ROW = np.dtype([(name, FRAME_ROW[name]) for name in FRAME_ROW.names] + [("time", "f8"), ("kv", "f8"), ("ma", "f8"),
                                         ("g2_target_um", "f8"), ("count_time_s", "f8")])
"""What the recorder keeps per frame: the frame row, the event time (POSIX s), the tube's
kV and mA readbacks, G2's set point (um) and the detector's exposure (s)."""
FRAME_UNITS = {"g2_um": "um", "stage_x_mm": "mm", "stage_y_mm": "mm"}
DOSE_STREAM = "dose"
"""The stream of :class:`acquisition.plans.stubs.DoseTally`: the delivered dose so far (mGy)."""
IMAGE_KEYS = {("primary" if role == "sample" else role): key for role, key in ROLE_IMAGE_KEYS.items()}
"""NXtomo's image_key of each stream's frames (0 projection, 1 flat, 2 dark); frames of any
other stream (``lag_flush``, ``phase_probe``) are 3, invalid: no reconstruction uses them."""
GRATING_FIELDS = {"period": "period", "gold": "depth", "substrate": "substrate_thickness"}
"""Start-document grating values (``g<n>_<name>_<unit>``) that NXgrating defines, by NeXus
name; the others (G1's phase shift, G2's field) stay in the interferometer collection."""
SAMPLE_FIELDS = {"name", "description", "thickness", "type", "chemical_formula", "density", "mass",
                 "situation", "physical_form", "short_title", "temperature", "preparation_date"}
"""Sample values that NXsample defines; any other goes to ``sample/properties`` (NXcollection)."""


def shutter_open(start: dict, data: dict) -> bool | None:
    """The shutter reading of an event's ``data`` (True open, False closed, None if the
    event has none): key ``<tube>_shutter``, the tube device name being the start
    document's ``tube["device"]`` or ``tube_device``, else ``tube``; failing that the one
    key ending in ``_shutter``."""
    tube = start.get("tube")
    name = (tube.get("device") if isinstance(tube, dict) else None) or start.get("tube_device") or "tube"
    value = data.get(f"{name}_shutter")
    if value is None:
        keys = [key for key in data if key.endswith("_shutter")]
        value = data[keys[0]] if len(keys) == 1 else None
    try:
        return None if value is None else bool(float(value))
    except (TypeError, ValueError):
        return None


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


def image_keys(frames: np.ndarray) -> np.ndarray:
    """NXtomo's image_key of every frame row (:data:`IMAGE_KEYS`); a sample or reference
    frame read with the shutter closed is 3 (invalid)."""
    keys = np.array([IMAGE_KEYS.get(_text(s), INVALID_IMAGE_KEY) for s in frames["stream"]], np.int32)
    keys[(keys <= 1) & (frames["shutter"] == 0)] = INVALID_IMAGE_KEY
    return keys


def write_record(path: Path, start: dict, stop: dict, frames: np.ndarray,
                 dose_mgy: float | None, frame: dict | None = None) -> bool:
    """Write the run record to ``path`` all or nothing (module docstring); False, with one
    error logged naming the file, if it could not be written.  ``frames``: RECORD_ROW (or
    FRAME_ROW) rows; ``frame``: shape, dtype and detector of the frames."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.part")
    try:
        buffer = io.BytesIO()  # HDF5 never holds a file on a failing disk
        with h5py.File(buffer, "w") as f:
            write_run_entry(f, start, stop, frames, dose_mgy, record_path=path, frame=frame)
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
                    dose_mgy: float | None, record_path: str | Path | None = None,
                    frame: dict | None = None) -> None:
    """Write the NeXus run record of the module docstring into the open file ``f`` (to be
    stored at ``record_path``, default ``f.filename``: frame paths are relative to it)."""
    frames = _complete(frames)
    record = str(record_path) if record_path is not None else f.filename
    frames["file"] = [_relative(str(file), record) for file in frames["file"]]
    uid = start["uid"]
    entry = nx_root(f, start.get("software_version", "unknown"), file_name=record)
    entry["program_name"].attrs["configuration"] = start.get("config_digest", "")
    sample = sample_fields(start.get("sample"))  # a dict, or a string with stock bluesky
    nx_field(entry, "definition", "NXtomo")
    nx_field(entry, "title", f"{start.get('plan_name', 'run')} of {sample.get('id', 'no sample')}")
    nx_field(entry, "start_time", iso8601(start["time"]))
    nx_field(entry, "end_time", iso8601(stop["time"]))
    nx_field(entry, "entry_identifier_uuid", uid)
    for name, doc in (("start_document", start), ("stop_document", stop)):
        note = nx_group(entry, name, "NXnote")
        nx_field(note, "type", "application/json")
        nx_field(note, "description", f"the run's bluesky {name.replace('_', ' ')}")
        nx_field(note, "data", json.dumps(doc, default=str))
    note = nx_group(entry, "derived", "NXnote")
    nx_field(note, "file_name", derived_glob(uid))
    nx_field(note, "description", "images and clusters derived by the processor (or talbot-lau "
             "reconstruct), written to its output directory when done; each links the raw "
             "frames it used as /entry/raw")
    if start.get("operator"):
        nx_field(nx_group(entry, "user", "NXuser"), "name", start["operator"])

    _sample(nx_group(entry, "sample", "NXsample"), start, sample, frames, dose_mgy)
    detector = _instrument(nx_group(entry, "instrument", "NXinstrument"), start, frames,
                           frame or {})
    data = nx_group(entry, "data", "NXdata", signal="data", axes=["sequence_number", "row", "column"],
                    sequence_number_indices=0, row_indices=1, column_indices=2)
    for name, field in (("data", detector["data"]), ("image_key", detector["image_key"]),
                        ("rotation_angle", entry["sample/rotation_angle"]),
                        ("sequence_number", detector["sequence_number"])):
        nx_link(data, name, field)
    region = start.get("detector_pixel", {}).get("region") or (0, 0)
    for axis, (first, size) in enumerate(zip(region[:2], detector["data"].shape[1:])):
        nx_field(data, ("row", "column")[axis], np.arange(int(first), int(first) + size, dtype=np.int32),
                 long_name=f"panel {('row', 'column')[axis]} (pixel)")
    entry.attrs["default"] = "data"


def _complete(frames: np.ndarray) -> np.ndarray:
    """``frames`` as RECORD_ROW rows (columns it lacks: NaN, shutter -1)."""
    rows = np.zeros(len(frames), RECORD_ROW)
    for name in RECORD_ROW.names:
        if name in (frames.dtype.names or ()):
            rows[name] = frames[name]
        elif RECORD_ROW[name].kind == "f":
            rows[name] = np.nan
        elif name == "shutter":
            rows[name] = -1
    return rows


def _sample(group: h5py.Group, start: dict, sample: dict, frames: np.ndarray,
            dose_mgy: float | None) -> None:
    nx_field(group, "name", str(sample.get("name", sample.get("id", ""))))
    if "id" in sample:
        nx_field(group, "sample_id", str(sample["id"]))
    values = {k: v for k, v in sample.items() if k not in ("id", "name")}
    nx_quantities(group, {k: v for k, v in values.items() if _stem(k) in SAMPLE_FIELDS})
    others = {k: v for k, v in values.items() if _stem(k) not in SAMPLE_FIELDS}
    if others:
        nx_quantities(nx_group(group, "properties", "NXcollection"), others)
    nx_field(group, "rotation_angle", np.zeros(len(frames)), "deg",
             long_name="no rotation: a projection (NXtomo)")
    nx_field(group, "x_translation", frames["stage_x_mm"], "mm", long_name="stage x")
    nx_field(group, "y_translation", frames["stage_y_mm"], "mm", long_name="stage y")
    dose = nx_group(group, "dose", "NXcollection")
    nx_field(dose, "planned", float(start.get("planned_dose_mgy", np.nan)), "mGy",
             long_name="planned mean glandular dose")
    if dose_mgy is not None:
        nx_field(dose, "delivered", float(dose_mgy), "mGy",
                 long_name="delivered mean glandular dose (the run's dose stream)")


def _stem(key: str) -> str:
    return split_units(key)[0]


def _instrument(instrument: h5py.Group, start: dict, frames: np.ndarray, frame: dict) -> h5py.Group:
    """The instrument's groups; returns the detector."""
    geometry, gratings = start.get("geometry", {}), start.get("gratings", {})
    tube, anode = start.get("tube", {}), start.get("source", {})
    distance = _distances_from_sample(geometry)

    source = nx_group(instrument, "source", "NXsource")
    nx_field(source, "name", f"{anode.get('target', 'unknown')}-anode X-ray tube")
    nx_field(source, "type", "Rotating Anode X-ray")
    nx_field(source, "probe", "x-ray")
    if anode.get("target"):
        nx_field(source, "anode_material", anode["target"])
    if len(frames):
        nx_field(source, "voltage", frames["kv"], "kV", long_name="tube voltage readback per frame")
        nx_field(source, "current", frames["ma"], "mA", long_name="tube current readback per frame")
    else:
        nx_quantities(source, {"voltage_kv": tube.get("kv"), "current_ma": tube.get("ma")})
    if "source" in distance:
        nx_field(source, "distance", distance["source"], "mm")
        nx_translation(source, distance["source"])
    notes = nx_group(source, "notes", "NXnote")
    nx_field(notes, "type", "application/json")
    nx_field(notes, "description", "the tube as configured: anode, anode angle (deg), focal "
             "spot (mm), filtration (material, mm), output factor; the plan's kV and mA")
    nx_field(notes, "data", json.dumps({**anode, "kv": tube.get("kv"), "ma": tube.get("ma")}))

    for index, (material, thickness_mm) in enumerate(anode.get("filtration", ())):
        beam_filter = nx_group(instrument, f"filter_{index}", "NXfilter")
        nx_field(beam_filter, "description", str(material))
        nx_field(beam_filter, "thickness", float(thickness_mm), "mm")
        nx_field(beam_filter, "status", "in")

    g2 = nx_group(instrument, "g2", "NXpositioner")
    nx_field(g2, "name", "g2")
    nx_field(g2, "description", "G2's lateral position, the phase-stepping axis (readback per frame)")
    nx_field(g2, "value", frames["g2_um"], "um")
    nx_field(g2, "target_value", frames["g2_target_um"], "um")

    interferometer = nx_group(instrument, "interferometer", "NXcollection")
    for n in range(3):
        grating = nx_group(interferometer, f"G{n}", "NXgrating")
        prefix = f"g{n}_"
        own = {k[len(prefix):]: v for k, v in gratings.items() if k.startswith(prefix)}
        nx_quantities(grating, {k: v for k, v in own.items() if _stem(k) in GRATING_FIELDS},
                      GRATING_FIELDS)
        if "duty_cycle" in gratings:
            nx_field(grating, "duty_cycle", float(gratings["duty_cycle"]), units="")
        if f"G{n}" in distance:
            nx_translation(grating, distance[f"G{n}"])
    rest = {k: v for k, v in gratings.items()
            if not (k[:3] in ("g0_", "g1_", "g2_") and _stem(k[3:]) in GRATING_FIELDS)}
    nx_quantities(interferometer, {**geometry, **rest})

    pixel = start.get("detector_pixel", {})
    detector = nx_group(instrument, "detector", "NXdetector")
    frame_shape = tuple(frame.get("shape") or (0, 0))
    nx_virtual_stack(detector, "data", [(str(f), int(p)) for f, p in zip(frames["file"], frames["point"])],
                     frame_shape, np.dtype(frame.get("dtype", "<u2")), "/" + FRAME_DATASET)
    detector["data"].attrs.update(units="counts", long_name="raw frame (ADU)")
    nx_field(detector, "image_key", image_keys(frames))
    nx_field(detector, "sequence_number", np.arange(len(frames), dtype=np.int32),
             long_name="frame number in the run")
    nx_field(detector, "count_time", frames["count_time_s"], "s",
             long_name="exposure per frame (AcquireTime x NumExposures)")
    nx_field(detector, "stop_time", frames["time"] - float(start["time"]), "s",
             start=iso8601(start["time"]), long_name="event time of each frame (read out)")
    nx_field(detector, "layout", "area")
    if frame.get("detector"):
        nx_field(detector, "description", frame["detector"])
    size_um = float(pixel.get("pixel_um", np.nan) * pixel.get("binning", 1))
    for axis in "xy":
        nx_field(detector, f"{axis}_pixel_size", size_um, "um")
    if "detector" in distance:
        nx_field(detector, "distance", distance["detector"], "mm")
        nx_translation(detector, distance["detector"])
    readout = nx_group(detector, "readout", "NXcollection")
    nx_quantities(readout, {"binning": pixel.get("binning"),
                            "sample_pixel_size_mm": pixel.get("sample_pixel_mm"),
                            "exposure_s": start["phase_stepping"].get("exposure_s"),
                            "reference_exposure_s": start["phase_stepping"].get("reference_exposure_s")})
    if pixel.get("region"):
        region = nx_group(detector, "region", "NXdetector_module")
        first_row, first_column, rows, columns = (int(v) for v in pixel["region"])
        nx_field(region, "data_origin", np.array([first_row, first_column], np.int32),
                 long_name="first row, first column of the read-out region on the panel")
        nx_field(region, "data_size", np.array([rows, columns], np.int32),
                 long_name="rows, columns of the read-out region")
    table = nx_group(detector, "frames", "NXcollection")
    links = {"g2_um": g2["value"], "stage_x_mm": instrument.parent["sample/x_translation"],
             "stage_y_mm": instrument.parent["sample/y_translation"]}
    for name in FRAME_ROW.names:
        if name in links:
            nx_link(table, name, links[name])
        else:
            nx_field(table, name, frames[name], FRAME_UNITS.get(name), dtype=FRAME_ROW[name])
    return detector


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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
