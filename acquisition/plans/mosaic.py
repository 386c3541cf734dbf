"""A mosaic of dark-field tiles over the sample stage (paper: 16 tiles for a mastectomy).

One dark set and one reference scan open the mosaic; the reference is refreshed every
``reference_every`` tiles.  Each tile is a phase-stepping set at its stage position; every
event carries the tile index (``tile``) and the stage position.  All tile positions are
checked against the stage travel, and the dose against the budget, before anything moves.
"""

from __future__ import annotations

import functools

import bluesky.preprocessors as bpp
from ophyd import Signal

from ..dose import planned_dose_mgy
from ..instrument import Instrument
from .drift import phase_drift, probe_fringe_phase
from .safety import close_shutter
from .settings import check, check_stage_position, finite, stepping_settings, whole
from .stubs import STREAMS, DoseTally, dark_set, prepare_source, start_metadata, stepping_set


def tile_field_mm(instrument: Instrument) -> tuple[float, float]:
    """(height, width) of one tile at the sample plane, mm."""
    setup = instrument.config.setup
    det = setup.detector
    rows, cols = (det.region[2], det.region[3]) if det.region else (det.rows, det.columns)
    pixel_mm = det.pixel_um / 1000.0 / setup.geometry.magnification
    return rows * pixel_mm, cols * pixel_mm


def tile_positions(rows: int, columns: int, step_mm: tuple[float, float],
                   origin_mm: tuple[float, float] = (0.0, 0.0), snake: bool = False) -> list[dict]:
    """Stage positions of a rows x columns grid centred on ``origin_mm``, row by row
    (alternate rows reversed with ``snake``): dicts with tile, row, column, x_mm, y_mm."""
    tiles = []
    for row in range(rows):
        order = range(columns - 1, -1, -1) if snake and row % 2 else range(columns)
        for column in order:
            tiles.append({"tile": len(tiles), "row": row, "column": column,
                          "x_mm": origin_mm[0] + (column - (columns - 1) / 2) * step_mm[1],
                          "y_mm": origin_mm[1] + (row - (rows - 1) / 2) * step_mm[0]})
    return tiles


def darkfield_mosaic(instrument: Instrument, *, rows: int = 4, columns: int = 4, overlap: float = 0.1,
                     origin_mm=None, snake: bool = True, reference_every: int | None = None,
                     max_phase_drift_rad: float | None = None,
                     steps=None, exposure_s=None, dark_frames=None, kv=None, ma=None,
                     reference_position_mm=None, sample=None, operator=None, md=None):
    """A rows x columns mosaic of phase-stepping tiles with ``overlap`` (fraction) between
    neighbours.  The reference is refreshed every ``reference_every`` tiles and, with
    ``max_phase_drift_rad``, whenever a quick open-beam probe after a tile finds the fringe
    phase moved further than that since the last reference.  Raises PlanArgumentError when
    called for anything out of range."""
    cfg = instrument.config.instrument
    settings = stepping_settings(instrument, steps=steps, exposure_s=exposure_s,
                                 dark_frames=dark_frames, kv=kv, ma=ma, sample=sample,
                                 operator=operator)
    whole(rows, "rows", 1)
    whole(columns, "columns", 1)
    check(finite(overlap) and 0 <= overlap < 0.5, f"overlap={overlap!r}: must be in [0, 0.5)")
    if reference_every is not None:
        whole(reference_every, "reference_every", 1)
    check(max_phase_drift_rad is None or (finite(max_phase_drift_rad) and 0 < max_phase_drift_rad < 3.2),
          f"max_phase_drift_rad={max_phase_drift_rad!r}: must be in (0, pi] rad")
    origin = check_stage_position(instrument, "origin_mm", origin_mm or cfg.stage.sample_position_mm)
    reference_position = check_stage_position(
        instrument, "reference_position_mm", reference_position_mm or cfg.stage.reference_position_mm)
    height, width = tile_field_mm(instrument)
    step = (height * (1 - overlap), width * (1 - overlap))
    tiles = tile_positions(rows, columns, step, origin, snake)
    for tile in tiles:
        check_stage_position(instrument, f"tile {tile['tile']} (row {tile['row']}, column "
                             f"{tile['column']})", (tile["x_mm"], tile["y_mm"]))
    per_tile = planned_dose_mgy(cfg.dose, settings.kv, settings.ma,
                                settings.steps * settings.exposure_s, settings.thickness_mm)
    exposures_per_point = (2 if overlap and columns > 1 else 1) * (2 if overlap and rows > 1 else 1)
    dose_mgy = per_tile * exposures_per_point
    check(dose_mgy <= cfg.dose.budget_mgy,
          f"planned mean glandular dose {dose_mgy:.1f} mGy (overlaps exposed {exposures_per_point}x) "
          f"exceeds the budget of {cfg.dose.budget_mgy:.1f} mGy")

    tile_index = Signal(name="tile", value=-1)
    start_md = start_metadata(instrument, settings, "darkfield_mosaic", dose_mgy)
    references = len(range(0, len(tiles), reference_every)) if reference_every else 1
    start_md.update({
        "mosaic": {"rows": rows, "columns": columns, "overlap": overlap, "snake": snake,
                   "step_mm": list(step), "origin_mm": list(origin), "tiles": tiles,
                   "reference_every": reference_every, "max_phase_drift_rad": max_phase_drift_rad},
        "total_frames": settings.dark_frames + (references + len(tiles)) * settings.steps
        + (3 * (references + len(tiles) - 1) if max_phase_drift_rad is not None else 0),
        **(md or {}),
    })

    tally = DoseTally(instrument, settings.thickness_mm)

    def reference(extra):
        yield from stepping_set(instrument, settings, STREAMS["reference"], reference_position, extra)
        if max_phase_drift_rad is not None:
            phase["reference"] = yield from probe_fringe_phase(instrument, settings, reference_position, extra)

    phase = {}

    def body():
        extra = (tile_index,)
        yield from prepare_source(instrument, settings)
        yield from dark_set(instrument, settings, extra)
        drifted = False
        for tile in tiles:
            if tile["tile"] == 0 or drifted or (reference_every and tile["tile"] % reference_every == 0):
                yield from reference(extra)
            yield from _set_tile(tile_index, tile["tile"])
            yield from stepping_set(instrument, settings, STREAMS["sample"],
                                    (tile["x_mm"], tile["y_mm"]), extra, tally)
            last = tile["tile"] == len(tiles) - 1
            if max_phase_drift_rad is not None and not last:
                now = yield from probe_fringe_phase(instrument, settings, reference_position, extra)
                drifted = abs(phase_drift(now, phase["reference"])) > max_phase_drift_rad

    plan = bpp.run_wrapper(bpp.finalize_wrapper(body(), tally.record), md=start_md)
    plan = bpp.stage_wrapper(plan, [instrument.detector])
    return bpp.finalize_wrapper(plan, functools.partial(close_shutter, instrument.tube))


def _set_tile(signal: Signal, index: int):
    import bluesky.plan_stubs as bps

    yield from bps.mv(signal, index)
