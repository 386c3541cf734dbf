"""Benchmark: one full-frame simulated exposure (1536 x 1920) against one pass over a frame.

Run: python tests/benchmarks/bench_frame.py [--repeat N]
Prints medians side by side: the engine's frame, the same-size baselines (one numpy
cosine over the frame, one normal draw over the frame), and the one-off scene build.
Goal (issue 3): a frame in under 0.3 s on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from timing import median_seconds

from simulators.physics import PhantomSpec, Setup, TubeState, build_phantom, simulate_frame
from simulators.physics.scene import scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    setup = Setup()
    phantom = build_phantom(PhantomSpec())
    tube = TubeState()
    started = time.perf_counter()
    scene(setup, phantom, (0.0, 0.0), tube.kv)
    scene_s = time.perf_counter() - started
    seeds = iter(range(10**6))

    def frame():
        simulate_frame(setup, phantom, g2_um=1.6, stage_mm=(0.0, 0.0), tube=tube,
                       exposure_s=9.0, seed=next(seeds))

    field = np.random.default_rng(0).random((1536, 1920), dtype=np.float32)
    rng = np.random.default_rng(1)
    rows = [
        ("simulate_frame (full 1536 x 1920)", median_seconds(frame, args.repeat)),
        ("baseline: np.cos over one frame (float32)", median_seconds(lambda: np.cos(field), args.repeat)),
        ("baseline: one normal draw per pixel (float32)",
         median_seconds(lambda: rng.standard_normal((1536, 1920), np.float32), args.repeat)),
    ]
    print(f"{'what':<48}{'median s':>10}")
    for name, seconds in rows:
        print(f"{name:<48}{seconds:>10.4f}")
    print(f"{'scene build, once per phantom and stage position':<48}{scene_s:>10.4f}")
    print(f"goal: frame < 0.3 s -> {'met' if rows[0][1] < 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
