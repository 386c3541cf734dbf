"""What every ADCore plugin twin shares (NDPluginBase.template), and the ``image1:``
NDStdArrays plugin live viewers read.

:class:`NDPluginBaseGroup` holds the plugin base PVs stock clients read (ophyd's
``PluginBase``, ``HDF5Plugin``, ``StatsPlugin``, ``ImagePlugin``; CSS/PyDM screens):
``PluginType_RBV``, ``PortName_RBV``, ``NDArrayPort``, ``EnableCallbacks``,
``BlockingCallbacks``, ``ArrayCounter``, ``ArraySize0/1/2_RBV``, ``DataType_RBV``,
``NDimensions_RBV``, ``Dimensions_RBV`` (waveform of 10), ``UniqueId_RBV``,
``TimeStamp_RBV``, ``QueueSize``, ``QueueFree_RBV``, ``DroppedArrays``.  A plugin
subclasses it, overrides ``plugin_type``/``port_name`` and calls :meth:`count` for each
NDArray it receives.  Callbacks are blocking, so nothing is ever queued or dropped.

:class:`StdArraysPluginGroup` (``P + "det:image1:"``, ``PluginType_RBV`` NDPluginStdArrays)
publishes the last image as ``ArrayData``: a waveform of rows x cols elements, row-major
(X fastest), DBR_LONG on the wire (CA has no unsigned 16-bit type; a USHORT waveform of a
real IOC is served the same way), values 0..65535.  A full 1536 x 1920 frame is 11.8 MB:
clients must raise ``EPICS_CA_MAX_ARRAY_BYTES``.
"""

from __future__ import annotations

import time

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from simulators.shared.frame_file import (
    EPICS_EPOCH_OFFSET_S,  # TimeStamp_RBV counts from it
)

from .ad_records import DATA_TYPES, DISABLE_ENABLE, NO_YES, readback, setting

MAX_DIMS = 10
FULL_FRAME_ELEMENTS = 1536 * 1920


class NDPluginBaseGroup(PVGroup):
    """The NDPluginBase PVs, fed through :meth:`count`; ``shape`` (rows, cols) of the frames."""

    plugin_type = readback("PluginType_RBV", "NDPluginBase", text="string")
    port_name = readback("PortName_RBV", "PLUGIN", text="string")
    nd_array_port, nd_array_port_rbv = setting("NDArrayPort", "PAX1", text="string")
    enable, enable_rbv = setting("EnableCallbacks", 1, enum_strings=DISABLE_ENABLE)
    blocking, blocking_rbv = setting("BlockingCallbacks", 1, enum_strings=NO_YES)
    array_counter, array_counter_rbv = setting("ArrayCounter", 0)
    array_size0 = readback("ArraySize0_RBV", 0)
    array_size1 = readback("ArraySize1_RBV", 0)
    array_size2 = readback("ArraySize2_RBV", 0)
    data_type = readback("DataType_RBV", "UInt16", enum_strings=DATA_TYPES)
    ndimensions = readback("NDimensions_RBV", 0)
    dimensions = readback("Dimensions_RBV", [0] * MAX_DIMS, max_length=MAX_DIMS)
    unique_id = readback("UniqueId_RBV", 0)
    time_stamp = readback("TimeStamp_RBV", 0.0, precision=3, units="s")
    queue_size, queue_size_rbv = setting("QueueSize", 2)
    queue_free = readback("QueueFree_RBV", 2)
    dropped_arrays, dropped_arrays_rbv = setting("DroppedArrays", 0)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shape = (1, 1)

    def configure(self, *, shape) -> None:
        """(rows, cols) of the frames, before the server starts."""
        self.shape = (int(shape[0]), int(shape[1]))

    @ndimensions.startup
    async def ndimensions(self, instance, async_lib):
        """Look primed (ophyd's ``HDF5Plugin.stage()`` refuses ArraySize 0)."""
        rows, cols = self.shape
        await self.array_size0.write(cols)
        await self.array_size1.write(rows)
        await self.ndimensions.write(2)
        await self.dimensions.write([cols, rows] + [0] * (MAX_DIMS - 2))
        await self.queue_free.write(self.queue_size.value)

    async def count(self, frame: np.ndarray, unique_id: int | None = None) -> bool:
        """One NDArray arrived: False (and nothing updated) while EnableCallbacks is off;
        else ArrayCounter, UniqueId, TimeStamp and the dimensions follow it."""
        if self.enable.value != "Enable":
            return False
        counter = self.array_counter.value + 1
        await self.array_counter.write(counter, verify_value=False)
        await self.array_counter_rbv.write(counter)
        await self.unique_id.write(counter if unique_id is None else int(unique_id))
        await self.time_stamp.write(time.time() - EPICS_EPOCH_OFFSET_S)
        rows, cols = frame.shape[-2:]
        if (self.array_size0.value, self.array_size1.value) != (cols, rows):
            await self.array_size0.write(cols)
            await self.array_size1.write(rows)
            await self.dimensions.write([cols, rows] + [0] * (MAX_DIMS - 2))
        return True


class StdArraysPluginGroup(NDPluginBaseGroup):
    """NDPluginStdArrays: ``ArrayData`` is the last image the cam sent (while enabled)."""

    plugin_type = readback("PluginType_RBV", "NDPluginStdArrays", text="string")
    port_name = readback("PortName_RBV", "IMAGE1", text="string")
    array_data = pvproperty(name="ArrayData", value=[0], dtype=ChannelType.LONG,
                            max_length=FULL_FRAME_ELEMENTS, read_only=True)

    def configure(self, *, shape) -> None:
        super().configure(shape=shape)
        rows, cols = self.shape
        # the element count clients see; caproto has no public setter for it
        self.array_data._max_length = rows * cols

    async def receive(self, frame: np.ndarray, unique_id: int | None = None) -> None:
        """One NDArray from the cam: published as ArrayData."""
        if not await self.count(frame, unique_id):
            return
        await self.array_data.write(np.ascontiguousarray(frame, dtype=np.int32).ravel())
