"""ADCore's NDStats plugin (``P + "det:Stats1:"``): the statistics of every image the cam sends.

The plugin base PVs ophyd's ``PluginBase``/``StatsPlugin`` touch (``PluginType_RBV`` =
``NDPluginStats``, which ophyd checks at stage, ``PortName_RBV``, ``NDArrayPort``,
``EnableCallbacks``, ``BlockingCallbacks``, ``ArrayCounter``, ``ArraySize0/1/2_RBV``) and
the basic statistics: ``ComputeStatistics``, ``MeanValue_RBV``, ``Total_RBV``,
``MinValue_RBV``, ``MaxValue_RBV``, ``Sigma_RBV``, ``Net_RBV`` (= Total: no background
region here).  Names, types and enum strings follow ADCore's NDPluginBase.template and
NDStats.template.  Statistics are computed only while EnableCallbacks and ComputeStatistics
are on, in an executor thread (a full frame takes milliseconds of numpy), and written before
the cam lowers ``Acquire_RBV``, as a real plugin with blocking callbacks does.
"""

from __future__ import annotations

import asyncio

import numpy as np
from caproto.server import PVGroup

from .ad_records import DISABLE_ENABLE, NO_YES, readback, setting


def image_statistics(frame: np.ndarray) -> dict[str, float]:
    """Mean, total, min, max and standard deviation of an image (ADU)."""
    data = np.asarray(frame, dtype=np.float64)
    return {"mean": float(data.mean()), "total": float(data.sum()), "min": float(data.min()),
            "max": float(data.max()), "sigma": float(data.std())}


class StatsPluginGroup(PVGroup):
    """NDPluginStats fed by the cam (``receive``), with the frame ``shape`` (rows, cols)."""

    plugin_type = readback("PluginType_RBV", "NDPluginStats", text="string")
    port_name = readback("PortName_RBV", "STATS1", text="string")
    nd_array_port, nd_array_port_rbv = setting("NDArrayPort", "PAX1", text="string")
    enable, enable_rbv = setting("EnableCallbacks", 1, enum_strings=DISABLE_ENABLE)
    blocking, blocking_rbv = setting("BlockingCallbacks", 1, enum_strings=NO_YES)
    array_counter, array_counter_rbv = setting("ArrayCounter", 0)
    array_size0 = readback("ArraySize0_RBV", 0)
    array_size1 = readback("ArraySize1_RBV", 0)
    array_size2 = readback("ArraySize2_RBV", 0)
    compute_statistics, compute_statistics_rbv = setting("ComputeStatistics", 1,
                                                         enum_strings=NO_YES)
    mean_value = readback("MeanValue_RBV", 0.0, precision=3)
    total = readback("Total_RBV", 0.0, precision=1)
    net = readback("Net_RBV", 0.0, precision=1)
    min_value = readback("MinValue_RBV", 0.0, precision=1)
    max_value = readback("MaxValue_RBV", 0.0, precision=1)
    sigma = readback("Sigma_RBV", 0.0, precision=3)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shape = (1, 1)

    def configure(self, *, shape) -> None:
        """(rows, cols) of the frames, before the server starts."""
        self.shape = (int(shape[0]), int(shape[1]))

    @plugin_type.startup
    async def plugin_type(self, instance, async_lib):
        rows, cols = self.shape
        await self.array_size0.write(cols)
        await self.array_size1.write(rows)

    async def receive(self, frame: np.ndarray) -> None:
        """One NDArray from the cam: counted, and its statistics published when enabled."""
        if self.enable.value != "Enable":
            return
        counter = self.array_counter.value + 1
        await self.array_counter.write(counter, verify_value=False)
        await self.array_counter_rbv.write(counter)
        if self.compute_statistics.value != "Yes":
            return
        stats = await asyncio.get_running_loop().run_in_executor(None, image_statistics, frame)
        await self.total.write(stats["total"])
        await self.net.write(stats["total"])
        await self.min_value.write(stats["min"])
        await self.max_value.write(stats["max"])
        await self.sigma.write(stats["sigma"])
        await self.mean_value.write(stats["mean"])
