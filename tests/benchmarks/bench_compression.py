"""Benchmark: a full-size 9-frame phase-stepping stack written and read with each compression.

Run: python tests/benchmarks/bench_compression.py [--repeat N] [--dir DIR]
Frames come from the physics engine (embedded configs, full 1536 x 1920 panel, the embedded
phantom at the sample position, 40 kV / 70 mA / 9 s, G2 stepped over one period), written
through ``simulators.shared.frame_file`` as the twins write them (Fletcher32, SWMR, NDAttributes)
and read back through the loader (``acquisition.storage.frames.HDF5FrameHandler``), checked equal.
Prints, side by side: stored size, raw size / stored size, and the medians of ``--repeat``
writes and reads of the whole stack (s).  Reads come from the page cache: they time the
filters, not the disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tempfile
from pathlib import Path

import numpy as np
from timing import median_seconds

from acquisition.config import load_config
from acquisition.storage.frames import HDF5FrameHandler
from acquisition.instrument import embedded_attributes_file
from simulators.shared.frame_file import (COMPRESSIONS, append_frame, close_frame_file,
                                   create_frame_file, read_attributes_file)
from simulators.physics import build_phantom, simulate_frame
from simulators.physics.setup import TubeState
from simulators.shared.world import READBACK_TYPES


def stack(steps: int = 9) -> list[np.ndarray]:
    """``steps`` full-panel frames of one phase-stepping scan (uint16 ADU)."""
    config = load_config()
    setup = dataclasses.replace(config.setup,
                                detector=dataclasses.replace(config.setup.detector, region=None))
    phantom = build_phantom(config.simulation.phantom)
    period = config.instrument.gratings.g2_period_um
    frames, previous = [], None
    for k in range(steps):
        previous = simulate_frame(setup, phantom, g2_um=k * period / steps, stage_mm=(0.0, 0.0),
                                  tube=TubeState(kv=40.0, ma=70.0), exposure_s=9.0, seed=k,
                                  time_s=9.0 * k, previous_frame=previous)
        frames.append(previous)
    return frames


def write(path, frames, compression, attributes, readbacks) -> None:
    """The stack into a new frame file at ``path``, as a twin writes it."""
    file, dataset = create_frame_file(path, frames[0].shape, compression=compression,
                                      attributes=attributes)
    for frame in frames:
        append_frame(dataset, frame, attributes=readbacks)
    problem = close_frame_file(file)
    if problem:
        raise OSError(problem)


def read(path, count: int) -> list[np.ndarray]:
    """``count`` frames through the loader."""
    handler = HDF5FrameHandler(str(path))
    try:
        return [handler(k) for k in range(count)]
    finally:
        handler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary dir)")
    args = parser.parse_args()
    frames = stack()
    raw_bytes = sum(frame.nbytes for frame in frames)
    attributes = read_attributes_file(embedded_attributes_file(), READBACK_TYPES)
    readbacks = {a.name: 0.0 for a in attributes}
    directory = Path(args.dir or tempfile.mkdtemp(prefix="bench-compression-"))
    rows = []
    for compression in COMPRESSIONS:
        path = directory / f"{compression}_000000.h5"
        write_s = median_seconds(
            functools.partial(write, path, frames, compression, attributes, readbacks), args.repeat)
        read_s = median_seconds(functools.partial(read, path, len(frames)), args.repeat)
        if not all(np.array_equal(a, b) for a, b in zip(read(path, len(frames)), frames)):
            raise AssertionError(f"{compression}: frames read back differ")
        size = os.path.getsize(path)
        rows.append((compression, size, raw_bytes / size, write_s, read_s))
        path.unlink()
    print(f"{len(frames)} frames of {frames[0].shape[0]} x {frames[0].shape[1]} uint16, "
          f"{raw_bytes / 1e6:.1f} MB raw; medians of {args.repeat}")
    print(f"{'compression':<12}{'file MB':>10}{'raw/file':>10}{'write s':>10}{'read s':>10}"
          f"{'write MB/s':>12}{'read MB/s':>11}")
    for name, size, ratio, write_s, read_s in rows:
        print(f"{name:<12}{size / 1e6:>10.1f}{ratio:>10.2f}{write_s:>10.3f}{read_s:>10.3f}"
              f"{raw_bytes / 1e6 / write_s:>12.0f}{raw_bytes / 1e6 / read_s:>11.0f}")


if __name__ == "__main__":
    main()
