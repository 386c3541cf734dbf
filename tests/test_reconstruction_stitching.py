"""Mosaic stitching: placement from stage positions, refinement, seamless blending."""

import numpy as np
import pytest

from reconstruction.stitching import Tile, place_tiles, stitch

PIXEL = 0.085  # mm


def truth_field(shape=(160, 200), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    mu = 0.3 + 0.1 * np.sin(x / 17.0) * np.cos(y / 23.0)
    eps = 0.05 + 0.02 * np.cos(x / 11.0 + y / 29.0)
    for _ in range(12):  # sharp discs (calcifications)
        cy, cx, r = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10), rng.uniform(2, 6)
        disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
        mu[disc] += 0.5
        eps[disc] += 0.8
    return mu, eps


def cut_tiles(mu, eps, grid=(2, 2), size=(96, 120), noise=0.0, seed=1):
    """Tiles as the instrument sees them: tile at stage s shows sample column c at c + s/pixel."""
    rng = np.random.default_rng(seed)
    step = ((mu.shape[0] - size[0]) // (grid[0] - 1), (mu.shape[1] - size[1]) // (grid[1] - 1))
    tiles = []
    for row in range(grid[0]):
        for col in range(grid[1]):
            r0, c0 = row * step[0], col * step[1]
            window = (slice(r0, r0 + size[0]), slice(c0, c0 + size[1]))
            stage = (-c0 * PIXEL, -r0 * PIXEL)  # sample further right needs the stage to the left
            m = mu[window] + rng.normal(0, noise, size)
            e = eps[window] + rng.normal(0, noise, size)
            tiles.append(Tile(np.exp(-m), np.exp(-e), np.zeros(size), stage))
    return tiles


def test_placement_follows_the_stage_sign_convention():
    offsets = place_tiles([(0.0, 0.0), (-8.5, 0.0), (0.0, -8.5)], PIXEL)
    np.testing.assert_allclose(offsets, [[0.0, 0.0], [0.0, 100.0], [100.0, 0.0]], atol=1e-9)


@pytest.mark.parametrize("grid", [(2, 2), (3, 3)])
def test_stitched_mosaic_equals_the_truth_without_seams(grid):
    mu, eps = truth_field()
    tiles = cut_tiles(mu, eps, grid=grid, noise=0.01)
    mosaic = stitch(tiles, PIXEL, feather_px=16)
    assert mosaic.absorption.shape == mu.shape
    error = np.abs(mosaic.absorption - mu)
    assert np.nanmax(error) < 0.06 and np.nanmean(error) < 0.01
    overlap = mosaic.weight > 1.01
    assert overlap.any() and error[overlap].mean() <= error[~overlap].mean() * 1.05


def test_refinement_corrects_stage_errors():
    mu, eps = truth_field()
    tiles = cut_tiles(mu, eps, noise=0.005)
    wrong = [Tile(t.transmission, t.dark_field, t.differential_phase,
                  (t.stage_mm[0] + (3 * PIXEL if k == 3 else 0), t.stage_mm[1] - (2 * PIXEL if k == 1 else 0)))
             for k, t in enumerate(tiles)]
    good = stitch(wrong, PIXEL, refine=True)
    assert good.absorption.shape == mu.shape
    assert np.nanmean(np.abs(good.absorption - mu)) < 0.01
    assert good.offsets_px == [(0, 0), (0, 80), (64, 0), (64, 80)]  # where the tiles really are
    bad = stitch(wrong, PIXEL, refine=False)
    assert bad.offsets_px != good.offsets_px


def test_nan_regions_are_filled_by_the_neighbour_and_bad_input_is_named():
    mu, eps = truth_field()
    tiles = cut_tiles(mu, eps)
    t = tiles[0].transmission.copy()
    t[60:90, 90:110] = np.nan  # inside the overlap with tile 1
    tiles[0] = Tile(t, tiles[0].dark_field, tiles[0].differential_phase, tiles[0].stage_mm)
    mosaic = stitch(tiles, PIXEL, refine=False)
    assert np.isfinite(mosaic.absorption[60:90, 90:110]).all()
    with pytest.raises(ValueError, match="no tiles"):
        stitch([], PIXEL)
    odd = Tile(np.ones((5, 5)), np.ones((5, 5)), np.zeros((5, 5)), (0.0, 0.0))
    with pytest.raises(ValueError, match="tile 1 has images of shape"):
        stitch([tiles[0], odd], PIXEL)


def test_tiles_no_pair_ties_to_tile_0_keep_their_stage_placement():
    """Only tiles 1 and 3 (one above the other) share a textured overlap: their difference
    is measured, but nothing ties them to tile 0, so they must stay at the stage offsets."""
    from reconstruction.stitching import refine_offsets

    mu, eps = truth_field()
    tiles = cut_tiles(mu, eps, noise=0.005)
    flat = np.exp(-0.3 * np.ones_like(tiles[0].transmission))
    tiles[0] = Tile(flat, flat, flat * 0, tiles[0].stage_mm)  # no texture: no correlation peak
    tiles[2] = Tile(flat, flat, flat * 0, tiles[2].stage_mm)
    offsets = place_tiles([t.stage_mm for t in tiles], PIXEL)
    np.testing.assert_allclose(refine_offsets(tiles, offsets), offsets, atol=0.6)


@pytest.mark.slow
def test_float32_tiles_stitch_as_float64_ones_within_a_bounded_peak():
    """The live processor keeps float32 T, V, dphi: the mosaic is the float64 tiles' to
    float32 precision, and the stitch never holds more than its seven float32 accumulators
    of the mosaic's size plus one tile's temporaries (no float64 copy of the tiles)."""
    import tracemalloc

    rng = np.random.default_rng(2)
    mu, eps = truth_field(shape=(700, 880))
    tiles = cut_tiles(mu, eps, grid=(3, 3), size=(384, 480), noise=0.01)
    tiles = [Tile(t.transmission, t.dark_field, rng.uniform(-3, 3, t.transmission.shape), t.stage_mm)
             for t in tiles]
    single = [Tile(*(np.asarray(a, np.float32) for a in (t.transmission, t.dark_field, t.differential_phase)),
                   t.stage_mm) for t in tiles]
    double = stitch(tiles, PIXEL)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        mosaic = stitch(single, PIXEL)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert mosaic.offsets_px == double.offsets_px
    for name in ("transmission", "dark_field", "absorption", "scattering", "weight"):
        np.testing.assert_allclose(getattr(mosaic, name), getattr(double, name), rtol=2e-6, atol=1e-6)
    dphi = np.angle(np.exp(1j * (mosaic.differential_phase - double.differential_phase)))
    assert np.nanmax(np.abs(dphi)) < 1e-5
    image, tile = mosaic.absorption.nbytes, single[0].transmission.nbytes
    assert mosaic.absorption.dtype == np.float32
    assert peak < 7 * image + 12 * tile, (peak / image, tile / image)
