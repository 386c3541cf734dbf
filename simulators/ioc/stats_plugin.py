"""ADCore's NDStats plugin (``P + "det:Stats1:"``): the statistics of every image the cam sends.

The plugin base PVs ophyd's ``PluginBase``/``StatsPlugin`` touch (``PluginType_RBV`` =
``NDPluginStats``, which ophyd checks at stage, ``PortName_RBV``, ``NDArrayPort``,
``EnableCallbacks``, ``BlockingCallbacks``, ``ArrayCounter``, ``ArraySize0/1/2_RBV`` and
the rest of NDPluginBase: ``ndarray_plugin.NDPluginBaseGroup``) and
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

from .ad_records import NO_YES, readback, setting
from .ndarray_plugin import NDPluginBaseGroup


def image_statistics(frame: np.ndarray) -> dict[str, float]:
    """Mean, total, min, max and standard deviation of an image (ADU)."""
    data = np.asarray(frame, dtype=np.float64)
    return {"mean": float(data.mean()), "total": float(data.sum()), "min": float(data.min()),
            "max": float(data.max()), "sigma": float(data.std())}


class StatsPluginGroup(NDPluginBaseGroup):
    """NDPluginStats fed by the cam (``receive``), with the frame ``shape`` (rows, cols)."""

    plugin_type = readback("PluginType_RBV", "NDPluginStats", text="string")
    port_name = readback("PortName_RBV", "STATS1", text="string")
    compute_statistics, compute_statistics_rbv = setting("ComputeStatistics", 1,
                                                         enum_strings=NO_YES)
    mean_value = readback("MeanValue_RBV", 0.0, precision=3)
    total = readback("Total_RBV", 0.0, precision=1)
    net = readback("Net_RBV", 0.0, precision=1)
    min_value = readback("MinValue_RBV", 0.0, precision=1)
    max_value = readback("MaxValue_RBV", 0.0, precision=1)
    sigma = readback("Sigma_RBV", 0.0, precision=3)

    async def receive(self, frame: np.ndarray, unique_id: int | None = None) -> None:
        """One NDArray from the cam: counted, and its statistics published when enabled."""
        if not await self.count(frame, unique_id):
            return
        if self.compute_statistics.value != "Yes":
            return
        stats = await asyncio.get_running_loop().run_in_executor(None, image_statistics, frame)
        await self.total.write(stats["total"])
        await self.net.write(stats["total"])
        await self.min_value.write(stats["min"])
        await self.max_value.write(stats["max"])
        await self.sigma.write(stats["sigma"])
        await self.mean_value.write(stats["mean"])
