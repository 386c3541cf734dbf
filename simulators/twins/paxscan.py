"""A simulated PaxScan with the component names and documents of ``devices.PaxScanDetector``.

Like areaDetector's HDF5 plugin in Stream mode: ``stage()`` opens a file and composes one
Resource (spec ``AD_HDF5``); each ``trigger()`` makes a frame with the physics engine,
waits the time-scaled exposure, appends it to ``/entry/data/data`` (N, rows, cols; ADCore's
default layout, ``simulators.shared.frame_file``) and composes a Datum whose id is the event's
``detector_image``.  Files are written in SWMR mode so frames can be read while the file is
still open, compressed as ``hdf1.compression`` says ("None", "zlib", "bslz4").  With
``cam.nd_attributes_file`` set (an ADCore NDAttributes XML file, read at stage), each frame
stores the EPICS_PV attributes it names from the G2, stage and tube readbacks at the start
of its exposure, beside its unique id and time stamp, as the real IOC does.  Like areaDetector's NDStats plugin
(``stats1``), each frame's mean, total, min and max (ADU) are set before the trigger
completes; the mean is a hinted reading (``detector_stats1_mean_value``), as on the EPICS
detector.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from event_model import compose_resource
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from simulators.physics import detector_shape
from simulators.shared.frame_file import (
    append_frame,
    close_frame_file,
    create_frame_file,
    pv_attribute_values,
    read_attributes_file,
)
from simulators.shared.world import READBACK_TYPES, readbacks

log = logging.getLogger(__name__)


class SimCam(Device):
    """The cam's settings, named as ``devices.PaxScanCam``'s: exposure per frame (s),
    frames summed per image, one image a trigger, gain mode and corrections."""

    acquire_time = Cpt(Signal, value=9.0, kind="config")
    num_exposures = Cpt(Signal, value=1, kind="config")
    image_mode = Cpt(Signal, value="Multiple", kind="config")
    num_images = Cpt(Signal, value=1, kind="config")
    trigger_mode = Cpt(Signal, value="Internal", kind="config")
    gain_mode = Cpt(Signal, value=0, kind="config")
    offset_correction = Cpt(Signal, value="Disable", kind="config")
    gain_correction = Cpt(Signal, value="Disable", kind="config")
    manufacturer = Cpt(Signal, value="Varian", kind="config")
    model = Cpt(Signal, value="PaxScan 2520D (in-process twin)", kind="config")
    acquire = Cpt(Signal, value=0, kind="omitted")
    array_counter = Cpt(Signal, value=0, kind="omitted")
    nd_attributes_file = Cpt(Signal, value="", kind="omitted")


class SimHDF5(Device):
    """The HDF5 plugin's file settings and counters; ``compression`` "None", "zlib" (at
    ``zlevel``) or "bslz4"."""

    file_path = Cpt(Signal, value="", kind="omitted")
    file_name = Cpt(Signal, value="", kind="omitted")
    full_file_name = Cpt(Signal, value="", kind="omitted")
    num_captured = Cpt(Signal, value=0, kind="omitted")
    compression = Cpt(Signal, value="None", kind="omitted")
    zlevel = Cpt(Signal, value=6, kind="omitted")


class SimStats(Device):
    """The NDStats plugin's statistics of the last frame (ADU), named as ophyd's
    ``StatsPlugin``'s; only the mean is read into events."""

    mean_value = Cpt(Signal, value=0.0, kind="hinted")
    total = Cpt(Signal, value=0.0, kind="omitted")
    min_value = Cpt(Signal, value=0.0, kind="omitted")
    max_value = Cpt(Signal, value=0.0, kind="omitted")

    def update(self, frame) -> None:
        data = np.asarray(frame, dtype=np.float64)
        self.total.put(float(data.sum()))
        self.min_value.put(float(data.min()))
        self.max_value.put(float(data.max()))
        self.mean_value.put(float(data.mean()))


class SimPaxScan(Device):
    """Flat-panel twin: frames from the physics engine, written to HDF5, read as datum ids,
    with the mean of each frame (``stats1.mean_value``)."""

    cam = Cpt(SimCam, "cam1:")
    hdf1 = Cpt(SimHDF5, "HDF1:")
    image = Cpt(Signal, value="", kind="normal")
    stats1 = Cpt(SimStats, "Stats1:")

    def __init__(self, prefix="", *, name, world, write_path, **kwargs):
        super().__init__(prefix, name=name, **kwargs)
        self.world = world
        self.hdf1.file_path.put(str(Path(write_path)))
        self._file = None
        self._resource = None
        self._attributes = ()
        self._asset_docs: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def stage(self):
        path = Path(self.hdf1.file_path.get())
        path.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex[:12]
        filename = path.resolve() / f"{name}_000000.h5"
        rows, cols = detector_shape(self.world.setup)
        attributes_file = self.cam.nd_attributes_file.get()
        self._attributes = (read_attributes_file(attributes_file, READBACK_TYPES)
                            if attributes_file else ())
        self._file, self._dataset = create_frame_file(
            filename, (rows, cols), compression=self.hdf1.compression.get(),
            level=int(self.hdf1.zlevel.get()), attributes=self._attributes)
        self._resource = compose_resource(spec="AD_HDF5", root="/",
                                          resource_path=str(filename).lstrip("/"),
                                          resource_kwargs={"frame_per_point": 1})
        self._asset_docs = [("resource", self._resource.resource_doc)]
        self.hdf1.file_name.put(name)
        self.hdf1.full_file_name.put(str(filename))
        self.hdf1.num_captured.put(0)
        return super().stage()

    def unstage(self):
        file, self._file = self._file, None
        problem = close_frame_file(file)
        if problem:
            log.error("%s: %s", self.name, problem)
        return super().unstage()

    def trigger(self):
        if self._file is None:
            raise RuntimeError(f"{self.name}: trigger before stage (no file open)")
        status = DeviceStatus(self)
        exposure = float(self.cam.acquire_time.get()) * int(self.cam.num_exposures.get())
        self.cam.acquire.put(1)
        started, started_s = time.monotonic(), time.time()
        state = self.world.state()  # the state at the start of the exposure

        def finish():  # the frame is made here, off the RunEngine's thread
            try:
                frame = self.world.frame(exposure, state)
                time.sleep(max(exposure * self.world.time_scale - (time.monotonic() - started), 0))
                self._append(frame, started_s, state)
                self.stats1.update(frame)
                self.cam.acquire.put(0)
                status.set_finished()
            except Exception as err:  # a failed write fails the trigger
                self.cam.acquire.put(0)
                status.set_exception(err)

        threading.Thread(target=finish, daemon=True, name=f"{self.name}-exposure").start()
        return status

    def _append(self, frame, started_s: float, state: dict) -> None:
        """Write ``frame`` with its NDAttributes: unique id (the cam's ArrayCounter), time
        stamp ``started_s`` (POSIX s) and the readbacks of ``state``."""
        with self._lock:
            index = append_frame(self._dataset, frame,
                                 unique_id=self.cam.array_counter.get() + 1,
                                 time_stamp_s=started_s,
                                 attributes=pv_attribute_values(self._attributes, readbacks(state)))
            datum = self._resource.compose_datum(datum_kwargs={"point_number": index})
            self._asset_docs.append(("datum", datum))
            self.image.put(datum["datum_id"])
            self.cam.array_counter.put(self.cam.array_counter.get() + 1)
            self.hdf1.num_captured.put(index + 1)

    def describe(self):
        description = super().describe()
        rows, cols = detector_shape(self.world.setup)
        description[self.image.name].update(
            source=f"SIM:{self.name}:image", dtype="array", shape=[rows, cols],
            external="FILESTORE:", dtype_numpy="<u2")
        return description

    def collect_asset_docs(self):
        with self._lock:
            docs, self._asset_docs = self._asset_docs, []
        yield from docs
