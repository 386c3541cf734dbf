"""The benchmarks' timing helpers: median wall seconds of repeated calls."""

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


def interleaved_medians(functions: dict, repeat: int) -> dict:
    """Median wall time (s) of each of ``functions`` (name: callable), called in turn
    ``repeat`` rounds, so that all see the same load of a shared machine."""
    times = {name: [] for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
