"""The benchmarks' one timing helper: median wall seconds of repeated calls."""

from __future__ import annotations

import statistics
import time


def median_seconds(function, repeat: int) -> float:
    """Median wall time (s) of ``repeat`` calls of ``function``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
