"""Benchmark: a 16-tile full-frame mosaic (4 x 4 tiles of 1536 x 1920, 10 % overlap).

Run: python tests/benchmarks/bench_stitching.py [--repeat N]
Prints medians side by side: `stitch` without and with phase-correlation refinement, and
the baseline of placing the 16 tiles' three images into a mosaic by plain copies.
Goal (issue 4): about a second.
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import median_seconds

from reconstruction import Tile, place_tiles, stitch

PIXEL_MM = 0.0852


def make_tiles(seed: int = 0) -> list[Tile]:
    rng = np.random.default_rng(seed)
    ny, nx = 1536, 1920
    tiles = []
    for row in range(4):
        for col in range(4):
            t = np.exp(-(0.3 + 0.01 * rng.standard_normal((ny, nx), np.float32))).astype(np.float32)
            v = np.exp(-(0.05 + 0.01 * rng.standard_normal((ny, nx), np.float32))).astype(np.float32)
            phase = (0.1 * rng.standard_normal((ny, nx), np.float32)).astype(np.float32)
            tiles.append(Tile(t, v, phase, (-col * nx * 0.9 * PIXEL_MM, -row * ny * 0.9 * PIXEL_MM)))
    return tiles


def copies_only(tiles: list[Tile]) -> None:
    offsets = np.rint(place_tiles([t.stage_mm for t in tiles], PIXEL_MM)).astype(int)
    ny, nx = tiles[0].transmission.shape
    shape = (offsets[:, 0].max() + ny, offsets[:, 1].max() + nx)
    images = [np.empty(shape, np.float32) for _ in range(3)]
    for tile, (r, c) in zip(tiles, offsets):
        for image, source in zip(images, (tile.transmission, tile.dark_field, tile.differential_phase)):
            image[r:r + ny, c:c + nx] = source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tiles = make_tiles()
    stitch(tiles, PIXEL_MM, refine=False)  # first touch of the mosaic's memory
    rows = [("stitch, stage placement only", median_seconds(lambda: stitch(tiles, PIXEL_MM, refine=False), args.repeat)),
            ("stitch, with phase-correlation refinement", median_seconds(lambda: stitch(tiles, PIXEL_MM), args.repeat)),
            ("baseline: copy 3 images of 16 tiles into place", median_seconds(lambda: copies_only(tiles), args.repeat))]
    print("16 tiles of 1536 x 1920, 10 % overlap (mosaic 5683 x 7104), medians:")
    print(f"{'what':<48}{'seconds':>9}")
    for name, seconds in rows:
        print(f"{name:<48}{seconds:>9.2f}")


if __name__ == "__main__":
    main()
