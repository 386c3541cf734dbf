"""The PaxScan flat panel served over CA: an areaDetector cam (``P + "det:cam1:"``) feeding
the HDF5 plugin (``P + "det:HDF1:"``), the NDStats plugin (``P + "det:Stats1:"``) and the
NDStdArrays plugin (``P + "det:image1:"``, live viewers).

A put with callback to ``Acquire`` = 1 completes when the acquisition (every image of the
ImageMode) ends, as ADDriver's does; ``Acquire`` = 0 ends it (and the pending callback).
A negative, NaN or infinite AcquireTime, AcquirePeriod, NumExposures or NumImages is
refused (a failed put; the old value stays).  In Multiple/Continuous an image starts no
sooner than ``AcquirePeriod`` (recorded seconds, time-scaled) after the previous one.  In
TriggerMode External, Acquire arms the detector (DetectorState Waiting) and each image
waits for a put to ``SimTrigger`` (the twin's stand-in for the trigger input).

``Acquire`` = 1 takes ``NumImages`` images (1 in ImageMode Single); each is one frame of
``AcquireTime * NumExposures`` recorded seconds (a long exposure as a sum of panel frames)
made by the physics engine through ``SimWorld.frame`` for the G2, stage and tube readbacks
at the start of the exposure, computed in an executor thread so motor ticks keep running.
The wall time of an image is the recorded exposure times ``time_scale``.  At the end of
each image the cam's ArrayCounter, the plugin's file and the image statistics are updated
first, then ``Acquire_RBV`` -> 0 (ophyd's ``SingleTrigger`` waits for that edge).

``NDAttributesFile`` names an ADCore NDAttributes XML file on the IOC's host (read at the
put; one that is not readable, or names a PV the twin does not serve, fails the put and
``NDAttributesStatus`` says why): each image then carries those EPICS_PV attributes, read
from the same readbacks as the frame, with its unique id (ArrayCounter) and time stamp
(the exposure's start), and the HDF5 plugin stores them per frame.
"""

from __future__ import annotations

import asyncio
import time

from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, SubGroup, pvproperty

from simulators.shared.frame_file import pv_attribute_values, read_attributes_file
from simulators.shared.world import READBACK_TYPES, readbacks

from .ad_records import (
    DATA_TYPES,
    DETECTOR_STATES,
    DISABLE_ENABLE,
    PATH_LENGTH,
    finite_non_negative,
    readback,
    setting,
)
from .hdf5_plugin import HDF5PluginGroup
from .ndarray_plugin import StdArraysPluginGroup
from .stats_plugin import StatsPluginGroup

IMAGE_MODES = ("Single", "Multiple", "Continuous")
ATTRIBUTES_STATUS = ("Attributes file OK", "File not found", "XML syntax error",
                     "Macro substitution error", "Invalid attribute")
"""ADBase.template's NDAttributesStatus (the last is the twin's: a PV it does not serve)."""
MIN_IMAGE_WALL_S = 0.05
"""Shortest wall time of an image however small the time scale: ophyd's ``SingleTrigger``
returns its status only after ``generate_datum``; an Acquire_RBV 1 -> 0 edge before that
is lost and leaves ``trigger()`` returning None."""


class PaxScanCamGroup(PVGroup):
    """ADBase cam PVs plus the PaxScan's GainMode/OffsetCorrection/GainCorrection."""

    acquire = pvproperty(name="Acquire", value="Done", dtype=ChannelType.ENUM,
                         enum_strings=("Done", "Acquire"))
    acquire_rbv = readback("Acquire_RBV", "Done", enum_strings=("Done", "Acquiring"))
    acquire_time, acquire_time_rbv = setting("AcquireTime", 9.0, precision=3, units="s",
                                             check=finite_non_negative)
    acquire_period, acquire_period_rbv = setting("AcquirePeriod", 9.0, precision=3, units="s",
                                                 check=finite_non_negative)
    image_mode, image_mode_rbv = setting("ImageMode", 0, enum_strings=IMAGE_MODES)
    num_images, num_images_rbv = setting("NumImages", 1, check=finite_non_negative)
    num_images_counter = readback("NumImagesCounter_RBV", 0)
    num_exposures, num_exposures_rbv = setting("NumExposures", 1, check=finite_non_negative)
    trigger_mode, trigger_mode_rbv = setting("TriggerMode", 0, enum_strings=("Internal", "External"))
    array_callbacks, array_callbacks_rbv = setting("ArrayCallbacks", 1, enum_strings=DISABLE_ENABLE)
    array_counter, array_counter_rbv = setting("ArrayCounter", 0)
    array_size_x = readback("ArraySizeX_RBV", 0)
    array_size_y = readback("ArraySizeY_RBV", 0)
    array_size_z = readback("ArraySizeZ_RBV", 0)
    array_size = readback("ArraySize_RBV", 0)
    data_type = pvproperty(name="DataType", value="UInt16", dtype=ChannelType.ENUM,
                           enum_strings=DATA_TYPES)
    data_type_rbv = pvproperty(name="DataType_RBV", value="UInt16", dtype=ChannelType.ENUM,
                               enum_strings=DATA_TYPES, record="mbbi", read_only=True)
    color_mode, color_mode_rbv = setting("ColorMode", 0, enum_strings=("Mono", "Bayer", "RGB1"))
    detector_state = readback("DetectorState_RBV", 0, enum_strings=DETECTOR_STATES)
    status_message = readback("StatusMessage_RBV", "Idle", text=True)
    manufacturer = readback("Manufacturer_RBV", "Varian", text="string")
    model = readback("Model_RBV", "PaxScan 2520D (simulated)", text="string")
    port_name = readback("PortName_RBV", "PAX1", text="string")
    max_size_x = readback("MaxSizeX_RBV", 1920)
    max_size_y = readback("MaxSizeY_RBV", 1536)
    gain_mode, gain_mode_rbv = setting("GainMode", 0)
    offset_correction, offset_correction_rbv = setting("OffsetCorrection", 0,
                                                       enum_strings=DISABLE_ENABLE)
    gain_correction, gain_correction_rbv = setting("GainCorrection", 0, enum_strings=DISABLE_ENABLE)
    sim_trigger = pvproperty(name="SimTrigger", value=0, doc="twin only: one external trigger")
    nd_attributes_file = pvproperty(name="NDAttributesFile", value="", dtype=ChannelType.CHAR,
                                    max_length=PATH_LENGTH, string_encoding="latin-1")
    nd_attributes_status = readback("NDAttributesStatus", 0, enum_strings=ATTRIBUTES_STATUS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world = None
        self.plugin_sink = None
        self.shape = self.full_shape = (1, 1)
        self._task: asyncio.Task | None = None
        self._trigger = asyncio.Event()
        self.nd_attributes: tuple = ()
        """The NDAttributes of NDAttributesFile (``frame_file.NDAttribute``)."""

    def configure(self, *, world, plugin_sink, shape, full_shape) -> None:
        """``world`` makes frames (``SimWorld``), ``plugin_sink`` is the HDF5 plugin's receive."""
        self.world, self.plugin_sink = world, plugin_sink
        self.shape = (int(shape[0]), int(shape[1]))
        self.full_shape = (int(full_shape[0]), int(full_shape[1]))

    @acquire_rbv.startup
    async def acquire_rbv(self, instance, async_lib):
        rows, cols = self.shape
        await self.array_size_x.write(cols)
        await self.array_size_y.write(rows)
        await self.array_size.write(rows * cols * 2)
        await self.max_size_y.write(self.full_shape[0])
        await self.max_size_x.write(self.full_shape[1])

    @acquire.putter
    async def acquire(self, instance, value):
        """Acquire = 1 completes (put callback) when the acquisition ends, as ADDriver's
        does; a put without callback returns at once.  Acquire = 0 stops it."""
        running = self._task is not None and not self._task.done()
        if value in ("Acquire", 1):
            if not running:
                self._trigger.clear()
                await instance.write("Acquire", verify_value=False)
                await self.acquire_rbv.write("Acquiring")
                await self.detector_state.write("Acquire")
                self._task = asyncio.get_running_loop().create_task(self._acquire())
            await asyncio.wait([self._task])  # cancelled by Acquire = 0 too
            raise SkipWrite()  # _acquire wrote Acquire = Done
        if running:
            self._task.cancel()
            await asyncio.wait([self._task])
        return value

    @nd_attributes_file.putter
    async def nd_attributes_file(self, instance, value):
        """Read the NDAttributes file (empty: none); a bad file fails the put, the old
        attributes stay."""
        if not value:
            self.nd_attributes = ()
            await self.nd_attributes_status.write("Attributes file OK")
            return value
        try:
            attributes = read_attributes_file(value, READBACK_TYPES)
        except ValueError as err:
            status = ("File not found" if "cannot read" in str(err) else
                      "XML syntax error" if "not XML" in str(err) else "Invalid attribute")
            await self.nd_attributes_status.write(status)
            await self.status_message.write(str(err)[:200])
            raise
        self.nd_attributes = attributes
        await self.nd_attributes_status.write("Attributes file OK")
        return value

    @sim_trigger.putter
    async def sim_trigger(self, instance, value):
        """Twin only: an external trigger pulse (TriggerMode External)."""
        self._trigger.set()
        return value

    def _images_to_take(self) -> int:
        mode = self.image_mode.value
        if mode == "Single":
            return 1
        if mode == "Multiple":
            return max(int(self.num_images.value), 1)
        return 1_000_000_000  # Continuous: until Acquire = 0

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        taken = 0
        previous_start = None
        try:
            for taken in range(1, self._images_to_take() + 1):
                if self.trigger_mode.value == "External":
                    await self.detector_state.write("Waiting")
                    await self._trigger.wait()
                    self._trigger.clear()
                    await self.detector_state.write("Acquire")
                elif previous_start is not None:  # AcquirePeriod: start to start
                    period = float(self.acquire_period.value) * self.world.time_scale
                    wait = previous_start + period - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                exposure = float(self.acquire_time.value) * max(int(self.num_exposures.value), 1)
                started = previous_start = time.monotonic()
                started_s, state = time.time(), self.world.state()
                frame = await loop.run_in_executor(None, self.world.frame, exposure, state)
                wait = max(exposure * self.world.time_scale, MIN_IMAGE_WALL_S) - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.detector_state.write("Readout")
                counter = self.array_counter.value + 1
                if self.array_callbacks.value == "Enable":
                    values = pv_attribute_values(self.nd_attributes, readbacks(state))
                    await self.plugin_sink(frame, counter, started_s, values)
                await self.array_counter.write(counter, verify_value=False)
                await self.array_counter_rbv.write(counter)
                await self.num_images_counter.write(taken)
                await self.detector_state.write("Acquire")
        except asyncio.CancelledError:
            await self.detector_state.write("Aborted")
        except Exception as err:  # noqa: BLE001  a failed frame is an Error state, not a dead IOC
            await self.detector_state.write("Error")
            await self.status_message.write(str(err)[:200])
        else:
            await self.detector_state.write("Idle")
        await self.acquire.write("Done", verify_value=False)
        await self.acquire_rbv.write("Done")


class PaxScanGroup(PVGroup):
    """The detector's IOC: ``cam1:``, ``HDF1:`` and ``Stats1:`` under the group's prefix
    (``P + "det:"``)."""

    cam = SubGroup(PaxScanCamGroup, prefix="cam1:")
    hdf1 = SubGroup(HDF5PluginGroup, prefix="HDF1:")
    stats1 = SubGroup(StatsPluginGroup, prefix="Stats1:")
    image1 = SubGroup(StdArraysPluginGroup, prefix="image1:")

    def configure(self, *, world, shape, full_shape=(1536, 1920)) -> None:
        """Frames of ``shape`` (rows, cols) from ``world`` (a ``SimWorld``)."""
        self.hdf1.configure(shape=shape, attributes=lambda: self.cam.nd_attributes)
        self.stats1.configure(shape=shape)
        self.image1.configure(shape=shape)
        self.cam.configure(world=world, plugin_sink=self.plugins_receive, shape=shape,
                           full_shape=full_shape)

    async def plugins_receive(self, frame, unique_id=None, time_stamp_s=None,
                              attributes=None) -> None:
        """The cam's NDArray (with its time stamp, POSIX s, and NDAttribute values) to each
        plugin on its port, in turn (blocking callbacks)."""
        await self.hdf1.receive(frame, unique_id, time_stamp_s, attributes)
        await self.stats1.receive(frame, unique_id)
        await self.image1.receive(frame, unique_id)
