"""Small helpers to write NeXus files (https://manual.nexusformat.org) with h5py.

Groups carry an ``NX_class`` attribute, numbers a ``units`` attribute.  Our metadata names
end in their unit (``g0_g1_mm``, ``exposure_s``): :func:`split_units` turns such a name into
a NeXus field name and its units, so a dict from a start document is written as it is.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from importlib import metadata

import h5py
import numpy as np

UNIT_SUFFIXES = {"mm": ("mm", 1.0), "um": ("um", 1.0), "kev": ("keV", 1.0), "kv": ("kV", 1.0),
                 "ma": ("mA", 1.0), "s": ("s", 1.0), "mgy": ("mGy", 1.0), "deg": ("deg", 1.0),
                 "rad": ("rad", 1.0), "pi": ("rad", math.pi)}
"""Name suffix -> (units, factor): ``g1_phase_shift_pi = 0.5`` is written as 1.5708 rad."""


IMAGE_KEYS = {"sample": 0, "reference": 1, "dark": 2, "reference_dark": 2}
"""NXtomo's ``image_key`` of a frame by its role: 0 projection (sample), 1 flat field (the
open-beam reference), 2 dark (at the sample's or the reference's exposure)."""
INVALID_IMAGE_KEY = 3
"""NXtomo's ``image_key`` of a frame no reconstruction uses."""


def software_version() -> str:
    """The installed version of talbot-lau ("unknown" when run from a bare checkout)."""
    try:
        return metadata.version("talbot-lau")
    except metadata.PackageNotFoundError:
        return "unknown"


def iso8601(epoch_s: float) -> str:
    """A POSIX time (s) as an ISO 8601 date-time with the local UTC offset."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).astimezone().isoformat()


def split_units(name: str) -> tuple[str, str | None, float]:
    """``"g0_g1_mm"`` -> ``("g0_g1", "mm", 1.0)``; a name without a unit suffix keeps its name."""
    stem, _, suffix = name.rpartition("_")
    if stem and suffix in UNIT_SUFFIXES:
        return (stem, *UNIT_SUFFIXES[suffix])
    return name, None, 1.0


def nx_group(parent: h5py.Group, name: str, nx_class: str, **attrs) -> h5py.Group:
    """A new group of NeXus class ``nx_class`` (extra attributes as given)."""
    group = parent.create_group(name)
    group.attrs.update(NX_class=nx_class, **attrs)
    return group


def nx_field(group: h5py.Group, name: str, value, units: str | None = None, dtype=None,
             **attrs) -> h5py.Dataset:
    """A field (a str is stored as a UTF-8 string), with ``units`` when given."""
    field = group.create_dataset(name, data=value, dtype=dtype)
    if units is not None:  # "": NX_UNITLESS
        field.attrs["units"] = units
    field.attrs.update(attrs)
    return field


def nx_quantities(group: h5py.Group, values: dict, rename: dict | None = None) -> None:
    """Write every number, list of numbers or string of ``values`` as a field named by
    :func:`split_units` (then ``rename``), with its units; ``None`` and dicts are skipped,
    anything else HDF5 cannot hold (a list of strings, ...) is written as JSON text.  A
    number with a unit is a quantity, NX_FLOAT (``thickness_mm = 45`` is 45.0 mm)."""
    for key, value in values.items():
        if value is None or isinstance(value, dict):
            continue
        name, units, factor = split_units(key)
        if units and not isinstance(value, (str, bool)):
            try:
                value = np.asarray(value, float) * factor
            except (TypeError, ValueError):
                pass  # not numbers: written as JSON text below
        name = (rename or {}).get(name, name)
        try:
            nx_field(group, name, value, units)
        except (TypeError, ValueError):
            nx_field(group, name, json.dumps(value, default=str))


def nx_root(f: h5py.File, version: str, file_name: str | None = None) -> h5py.Group:
    """Mark ``f`` as an NXroot whose default is a new NXentry ``entry``; returns the entry
    (with ``program_name`` talbot-lau at ``version``).  ``file_name``: the name the file is
    stored under (default: ``f``'s); only its base name is written, so a moved file stays true."""
    file_name = os.path.basename(str(file_name if file_name is not None else f.filename))
    f.attrs.update(NX_class="NXroot", default="entry", file_name=file_name,
                   file_time=iso8601(datetime.now().timestamp()), creator=f"talbot-lau {version}",
                   HDF5_Version=h5py.version.hdf5_version, h5py_version=h5py.version.version)
    entry = nx_group(f, "entry", "NXentry")
    nx_field(entry, "program_name", "talbot-lau", version=version)
    return entry


def nx_image(entry: h5py.Group, name: str, image: np.ndarray, units: str | None = None,
             long_name: str | None = None, *, compress: bool = True) -> h5py.Group:
    """An NXdata ``name`` whose signal ``data`` is the 2-D ``image`` (no axis coordinates),
    gzip level 1 unless not ``compress``."""
    data = nx_group(entry, name, "NXdata", signal="data", axes=[".", "."])
    gzip = {"compression": "gzip", "compression_opts": 1} if compress else {}
    field = data.create_dataset("data", data=image, **gzip)
    if units:
        field.attrs["units"] = units
    field.attrs["long_name"] = long_name or name
    return data


def nx_link(group: h5py.Group, name: str, target: h5py.Dataset) -> None:
    """``group[name]`` a hard link to the field ``target``, which gets the NeXus ``target``
    attribute (its own path), as linked fields must have."""
    target.attrs["target"] = target.name
    group[name] = target


def nx_translation(component: h5py.Group, distance_mm: float, axis: str = "z") -> None:
    """Place ``component`` ``distance_mm`` along the beam from the sample (NeXus z, negative
    upstream): an NXtransformations ``transformations`` with one translation, and the
    component's ``depends_on`` naming it (an absolute path)."""
    transformations = nx_group(component, "transformations", "NXtransformations")
    nx_field(transformations, axis, float(distance_mm), "mm", transformation_type="translation",
             vector=np.array([0.0, 0.0, 1.0]), depends_on=".")
    nx_field(component, "depends_on", f"{transformations.name}/{axis}")


def nx_virtual_stack(group: h5py.Group, name: str, frames: list[tuple[str, int]],
                     frame_shape: tuple[int, ...], dtype, dataset: str) -> h5py.Dataset:
    """An (n, *frame_shape) field ``name`` whose frame i is frame ``frames[i][1]`` of
    ``dataset`` in the file ``frames[i][0]``: an HDF5 virtual dataset.  File names relative
    to the directory of ``group``'s file are resolved there by HDF5 on every read (from any
    working directory, and after the folder moved); frames of a missing file read as 0.
    One mapping per frame: nexusformat (2.1) takes a virtual field's length to be its
    number of mappings."""
    frame_shape = tuple(int(n) for n in frame_shape)
    if not frames:
        return group.create_dataset(name, shape=(0, *frame_shape), dtype=dtype)
    layout = h5py.VirtualLayout((len(frames), *frame_shape), dtype)
    held = {}
    for file, point in frames:
        held[file] = max(held.get(file, 0), int(point) + 1)
    sources = {file: h5py.VirtualSource(file, dataset, shape=(n, *frame_shape), dtype=dtype)
               for file, n in held.items()}
    for index, (file, point) in enumerate(frames):
        layout[index] = sources[file][int(point)]
    return group.create_virtual_dataset(name, layout, fillvalue=0)
