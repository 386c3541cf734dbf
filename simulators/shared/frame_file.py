"""The frame file both detector twins write: areaDetector's NDFileHDF5 in Stream mode, in
ADCore's default layout (``NDFileHDF5LayoutXML.cpp``, ``DEFAULT_LAYOUT``).

::

    /entry                                NXentry
      instrument                          NXinstrument
        detector                          NXdetector
          data                            (N, rows, cols) uint16, attribute signal = 1
          NDAttributes                    NXcollection: ColorMode (N,)
        NDAttributes                      NXcollection: NDArrayUniqueId, NDArrayTimeStamp,
                                          NDArrayEpicsTSSec, NDArrayEpicsTSnSec and the
                                          attribute file's EPICS_PV attributes, (N,) each
      data                                NXdata, signal = "data"
        data                              hard link to /entry/instrument/detector/data

Frames go one chunk a frame with the HDF5 Fletcher32 checksum, so a corrupted frame fails
to read instead of reading wrong (h5py raises ``OSError``); the file is in SWMR mode, so
frames can be read while it is still being written: each frame's NDAttribute values are
appended and flushed first, then the frame, so a reader that sees N frames finds N values
of every attribute.  Each NDAttribute dataset carries ``NDAttrName``,
``NDAttrDescription``, ``NDAttrSourceType`` and ``NDAttrSource`` as ADCore writes them.

``compression`` (NDFileHDF5's ``Compression`` enum, any case): "None", "zlib" (HDF5
shuffle + deflate at ``level``, readable by any HDF5) or "bslz4" (bitshuffle/LZ4, HDF5
filter 32008 from the ``hdf5plugin`` package: a reader must ``import hdf5plugin`` first,
as acquisition.storage.frames does).  Fletcher32 runs after the filters, on the stored bytes.
Only the frames are compressed, as ADCore does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np

DETECTOR_DATA = "entry/instrument/detector/data"
DATASET = "entry/data/data"
"""The frames as every reader opens them: the NXdata hard link to :data:`DETECTOR_DATA`."""
ATTRIBUTE_GROUP = "entry/instrument/NDAttributes"
DETECTOR_ATTRIBUTE_GROUP = "entry/instrument/detector/NDAttributes"
COMPRESSIONS = ("None", "zlib", "bslz4")
EPICS_EPOCH_OFFSET_S = 631152000.0
"""POSIX seconds at the EPICS epoch, 1990-01-01 UTC."""
ATTRIBUTE_CHUNK = 64
"""NDAttribute values a chunk (ADCore's ``NDAttributeChunk``)."""
MAX_ATTRIBUTES_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class NDAttribute:
    """One NDAttribute as NDFileHDF5 stores it: a dataset of one value a frame.

    ``source_type``: "NDAttrSourceDriver" or "NDAttrSourceEPICSPV" (ADCore's names);
    ``source``: "Driver" or the PV name; ``dtype``: numpy dtype of the values."""

    name: str
    description: str
    source_type: str
    source: str
    dtype: str


ARRAY_ATTRIBUTES = (
    NDAttribute("NDArrayUniqueId", "The unique ID of the NDArray", "NDAttrSourceDriver",
                "Driver", "<i4"),
    NDAttribute("NDArrayTimeStamp", "The timestamp of the NDArray as float64",
                "NDAttrSourceDriver", "Driver", "<f8"),
    NDAttribute("NDArrayEpicsTSSec", "The NDArray EPICS timestamp seconds past epoch",
                "NDAttrSourceDriver", "Driver", "<u4"),
    NDAttribute("NDArrayEpicsTSnSec", "The NDArray EPICS timestamp nanoseconds",
                "NDAttrSourceDriver", "Driver", "<u4"),
)
"""What NDFileHDF5 adds to every NDArray (``NDFileHDF5::addDefaultAttributes``)."""
COLOR_MODE = NDAttribute("ColorMode", "Color mode", "NDAttrSourceDriver", "Driver", "<i4")
"""The driver's ColorMode (0 = Mono), stored under the detector as the default layout does."""

DBR_TYPES = {"DBR_DOUBLE": "<f8", "DBR_FLOAT": "<f4", "DBR_LONG": "<i4", "DBR_SHORT": "<i2",
             "DBR_ENUM": "<i2", "DBR_CHAR": "<i1"}
"""Channel Access request types to the NDAttribute's numpy dtype (ADCore's PVAttribute)."""


def _pv_key(source: str, native_types: dict[str, str]) -> str | None:
    """The longest PV name of ``native_types`` that ends ``source`` (any prefix), or None."""
    matches = [name for name in native_types if source.endswith(name)]
    return max(matches, key=len) if matches else None


def read_attributes_file(path, native_types: dict[str, str]) -> tuple[NDAttribute, ...]:
    """The EPICS_PV attributes of ADCore's NDAttributes XML file ``path``.

    ``native_types``: the PVs the writer can answer, by name without the IOC prefix, with
    the numpy dtype of their native type (resolves ``dbrtype="DBR_NATIVE"``).  Raises one
    ValueError naming the file and the attribute that is not an EPICS_PV attribute of a
    known PV, has a dbrtype that is not numeric, or repeats a name."""
    path = Path(path)
    try:
        text = path.read_bytes()[:MAX_ATTRIBUTES_FILE_BYTES + 1]
    except OSError as err:
        raise ValueError(f"NDAttributes file {str(path)!r}: cannot read ({err.strerror})") from None
    if len(text) > MAX_ATTRIBUTES_FILE_BYTES:
        raise ValueError(f"NDAttributes file {str(path)!r}: larger than 1 MiB")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as err:
        raise ValueError(f"NDAttributes file {str(path)!r}: not XML ({err})") from None
    if root.tag != "Attributes":
        raise ValueError(f"NDAttributes file {str(path)!r}: root element is <{root.tag}>, "
                         "expected <Attributes>")
    attributes, names = [], set()
    for element in root.iter("Attribute"):
        name = element.get("name", "")
        where = f"NDAttributes file {path.name}: attribute {name!r}"
        if not name or name in names or name in {a.name for a in ARRAY_ATTRIBUTES + (COLOR_MODE,)}:
            raise ValueError(f"{where}: name missing or used twice")
        if element.get("type") != "EPICS_PV":
            raise ValueError(f"{where}: type {element.get('type')!r} is not simulated "
                             "(only EPICS_PV)")
        source = element.get("source", "")
        key = _pv_key(source, native_types)
        if key is None:
            raise ValueError(f"{where}: source {source!r} is not a PV the twin serves "
                             f"(one of {', '.join(sorted(native_types))})")
        dbrtype = element.get("dbrtype", "DBR_NATIVE")
        if dbrtype == "DBR_NATIVE":
            dtype = native_types[key]
        elif dbrtype in DBR_TYPES:
            dtype = DBR_TYPES[dbrtype]
        else:
            raise ValueError(f"{where}: dbrtype {dbrtype!r} not simulated "
                             f"(DBR_NATIVE, {', '.join(DBR_TYPES)})")
        names.add(name)
        attributes.append(NDAttribute(name, element.get("description", ""),
                                      "NDAttrSourceEPICSPV", source, dtype))
    return tuple(attributes)


def pv_attribute_values(attributes, readbacks: dict[str, float]) -> dict[str, float]:
    """Each EPICS_PV attribute's value from ``readbacks`` (PV name without prefix -> value)."""
    return {a.name: readbacks[_pv_key(a.source, readbacks)] for a in attributes
            if a.source_type == "NDAttrSourceEPICSPV"}


def compression_name(compression) -> str:
    """``compression`` as one of COMPRESSIONS: None, or a name in any case (ADCore's enum
    says "BSLZ4"); ValueError naming the choices otherwise."""
    names = {name.lower(): name for name in COMPRESSIONS}
    name = "none" if compression is None else str(compression).lower()
    if name not in names:
        raise ValueError(f"compression {compression!r} not supported: one of {COMPRESSIONS}")
    return names[name]


def _filters(compression, level: int) -> dict:
    compression = compression_name(compression)
    if compression == "None":
        return {}
    if compression == "zlib":
        return {"compression": "gzip", "compression_opts": int(level), "shuffle": True}
    if compression == "bslz4":
        import hdf5plugin  # registers the bitshuffle filter with h5py's HDF5

        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    raise AssertionError(compression)


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.require_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def _attribute_dataset(group: h5py.Group, attribute: NDAttribute) -> None:
    dataset = group.create_dataset(attribute.name, shape=(0,), maxshape=(None,),
                                   dtype=attribute.dtype, chunks=(ATTRIBUTE_CHUNK,), fillvalue=0)
    for key, value in (("NDAttrName", attribute.name), ("NDAttrDescription", attribute.description),
                       ("NDAttrSourceType", attribute.source_type), ("NDAttrSource", attribute.source)):
        if value:  # ADCore writes no empty string attribute
            dataset.attrs[key] = value


def create_frame_file(filename, shape: tuple[int, int], compression=None, level: int = 6,
                      attributes=()) -> tuple[h5py.File, h5py.Dataset]:
    """A new frame file in the default layout for frames of ``shape`` (rows, cols),
    ``compression`` one of COMPRESSIONS (None: uncompressed; ``level`` for zlib), with
    :data:`ARRAY_ATTRIBUTES`, :data:`COLOR_MODE` and ``attributes`` (NDAttribute, e.g. from
    :func:`read_attributes_file`); returns (file, frames dataset)."""
    rows, cols = int(shape[0]), int(shape[1])
    filters = _filters(compression, level)  # before the file exists: a bad name creates none
    file = h5py.File(filename, "w", libver="latest")
    try:
        entry = _group(file, "entry", "NXentry")
        instrument = _group(entry, "instrument", "NXinstrument")
        detector = _group(instrument, "detector", "NXdetector")
        dataset = detector.create_dataset("data", shape=(0, rows, cols),
                                          maxshape=(None, rows, cols), dtype="<u2",
                                          chunks=(1, rows, cols), fletcher32=True, **filters)
        dataset.attrs["signal"] = np.int32(1)
        _attribute_dataset(_group(detector, "NDAttributes", "NXcollection"), COLOR_MODE)
        pv_group = _group(instrument, "NDAttributes", "NXcollection")
        for attribute in (*ARRAY_ATTRIBUTES, *attributes):
            _attribute_dataset(pv_group, attribute)
        data = _group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        data["data"] = dataset  # a hard link: both names are the same dataset
        file.swmr_mode = True
    except BaseException:
        file.close()
        raise
    return file, dataset


def _attribute_datasets(file: h5py.File) -> list[h5py.Dataset]:
    return [item for group in (ATTRIBUTE_GROUP, DETECTOR_ATTRIBUTE_GROUP) if group in file
            for item in file[group].values() if isinstance(item, h5py.Dataset)]


def _frame_values(index: int, unique_id, time_stamp_s, attributes) -> dict:
    """The NDAttribute values of frame ``index``: ``unique_id`` (default index + 1),
    ``time_stamp_s`` (POSIX s, default now) as NDArrayTimeStamp and the EPICS time stamp."""
    posix = time.time() if time_stamp_s is None else float(time_stamp_s)
    epics_s = posix - EPICS_EPOCH_OFFSET_S
    seconds = math.floor(epics_s)
    return {"NDArrayUniqueId": index + 1 if unique_id is None else int(unique_id),
            "NDArrayTimeStamp": epics_s, "NDArrayEpicsTSSec": seconds,
            "NDArrayEpicsTSnSec": min(round((epics_s - seconds) * 1e9), 999_999_999),
            "ColorMode": 0, **(attributes or {})}


def append_frame(dataset: h5py.Dataset, frame: np.ndarray, *, unique_id: int | None = None,
                 time_stamp_s: float | None = None, attributes: dict | None = None) -> int:
    """Append one frame and its NDAttribute values and flush them; returns its index (the
    areaDetector point number).  ``attributes``: name -> value of the file's EPICS_PV
    attributes (one missing is stored as 0, ADCore's fill value).

    A write that fails (disk full: h5py raises OSError or RuntimeError) leaves the datasets
    as they were, as far as the disk allows, and raises one ``OSError`` naming the file; the
    owner should then :func:`close_frame_file` (an HDF5 file left open after a failed
    write can crash the interpreter when it is collected)."""
    index = dataset.shape[0]
    values = _frame_values(index, unique_id, time_stamp_s, attributes)
    columns = _attribute_datasets(dataset.file)
    try:
        for column in columns:  # the values first: a SWMR reader seeing N frames finds N values
            column.resize(index + 1, axis=0)
            column[index] = values.get(column.name.rsplit("/", 1)[-1], 0)
            column.flush()
        dataset.resize(index + 1, axis=0)
        dataset[index] = frame
        dataset.flush()
    except (OSError, RuntimeError) as err:
        for item in (dataset, *columns):
            try:
                item.resize(index, axis=0)
            except (OSError, RuntimeError):
                pass
        raise OSError(f"{dataset.file.filename}: frame {index} not written: {err}") from err
    return index


def close_frame_file(file: h5py.File | None) -> str | None:
    """Close ``file``; returns why closing failed (disk full), or None."""
    if file is None:
        return None
    try:
        file.close()
    except (OSError, RuntimeError) as err:
        try:
            file.close()  # the second close releases what the first could not flush
        except (OSError, RuntimeError):
            pass
        return f"closing {file.filename}: {err}"
    return None
