"""A mosaic of dark-field tiles over the sample stage (paper: 16 tiles for a mastectomy).

One dark set and one reference scan open the mosaic; the reference is refreshed every
``reference_every`` tiles.  The reference takes its own exposure (``reference_exposure_s``,
default the configuration's 9 s; with dark frames of its own, stream ``reference_dark``,
when it differs from the tiles'): it costs the patient no dose.  Each tile is a phase-stepping set at its stage position; every
event carries the tile index (``tile``) and the stage position.  All tile positions are
checked against the stage travel, and the dose against the budget, before anything moves.
"""

from __future__ import annotations

import bluesky.plan_stubs as bps
from ophyd import Signal

from ..instrument import Instrument
from .drift import phase_drift, probe_fringe_phase
from .settings import (
    check,
    check_dose_budget,
    check_metadata,
    check_reference_clear,
    check_stage_position,
    finite,
    reference_settings,
    stepping_settings,
    tile_field_mm,
    whole,
)
from .stubs import (
    LAG_FLUSH_FRAMES,
    STREAMS,
    DoseTally,
    acquisition_wrapper,
    dark_set,
    ensure_exposure,
    lag_flush,
    start_metadata,
    stepping_set,
)

MAX_TILES_PER_SIDE = 10
"""Most tiles in a mosaic row or column (16 tiles cover a mastectomy specimen)."""


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
                     reference_position_mm=None, sample=None, operator=None, md=None,
                     reference_exposure_s=None):
    """A rows x columns mosaic of phase-stepping tiles with ``overlap`` (fraction) between
    neighbours.  The reference is refreshed every ``reference_every`` tiles and, with
    ``max_phase_drift_rad``, whenever a quick open-beam probe after a tile finds the fringe
    phase moved further than that since the last reference.  ``reference_exposure_s``: the
    reference's (and the probes') exposure per step (s, default ``scan.exposure_s``).
    Raises PlanArgumentError when called for anything out of range."""
    cfg = instrument.config.instrument
    settings = stepping_settings(instrument, steps=steps, exposure_s=exposure_s,
                                 dark_frames=dark_frames, kv=kv, ma=ma, sample=sample,
                                 operator=operator)
    rows = whole(rows, "rows", 1, MAX_TILES_PER_SIDE)
    columns = whole(columns, "columns", 1, MAX_TILES_PER_SIDE)
    check(finite(overlap) and 0 <= overlap < 0.5, f"overlap={overlap!r}: must be in [0, 0.5)")
    check(isinstance(snake, bool), f"snake={snake!r}: must be True or False")
    if reference_every is not None:
        reference_every = whole(reference_every, "reference_every", 1, MAX_TILES_PER_SIDE**2)
    md = check_metadata(md)
    check(max_phase_drift_rad is None or (finite(max_phase_drift_rad) and 0 < max_phase_drift_rad < 3.2),
          f"max_phase_drift_rad={max_phase_drift_rad!r}: must be in (0, pi] rad")
    origin = check_stage_position(instrument, "origin_mm",
                                  cfg.stage.sample_position_mm if origin_mm is None else origin_mm)
    reference_position = check_stage_position(
        instrument, "reference_position_mm",
        cfg.stage.reference_position_mm if reference_position_mm is None else reference_position_mm)
    height, width = tile_field_mm(instrument)
    step = (height * (1 - overlap), width * (1 - overlap))
    tiles = tile_positions(rows, columns, step, origin, snake)
    for tile in tiles:
        check_stage_position(instrument, f"tile {tile['tile']} (row {tile['row']}, column "
                             f"{tile['column']})", (tile["x_mm"], tile["y_mm"]))
    check_reference_clear(instrument, reference_position, [(t["x_mm"], t["y_mm"]) for t in tiles])
    dose_mgy = check_dose_budget(instrument, settings, rows=rows, columns=columns, overlap=overlap)
    ref_settings = reference_settings(instrument, settings, reference_exposure_s)
    low_dose = ref_settings.exposure_s != settings.exposure_s

    tile_index = Signal(name="tile", value=-1)
    start_md = start_metadata(instrument, settings, "darkfield_mosaic", dose_mgy,
                              reference_exposure_s=ref_settings.exposure_s)
    references = len(range(0, len(tiles), reference_every)) if reference_every else 1
    start_md.update({
        "mosaic": {"rows": rows, "columns": columns, "overlap": overlap, "snake": snake,
                   "step_mm": list(step), "origin_mm": list(origin), "tiles": tiles,
                   "reference_every": reference_every, "max_phase_drift_rad": max_phase_drift_rad},
        "total_frames": settings.dark_frames * (2 if low_dose else 1)
        + (references + len(tiles)) * settings.steps
        + (LAG_FLUSH_FRAMES * (1 + len(tiles)) if low_dose else 0)
        + (3 * (references + len(tiles) - 1) if max_phase_drift_rad is not None else 0),
        **(md or {}),
    })

    tally = DoseTally(instrument, settings.breast_thickness_mm, settings.exposure_s)

    def reference(extra):
        yield from stepping_set(instrument, ref_settings, STREAMS["reference"], reference_position, extra)
        if max_phase_drift_rad is not None:
            phase["reference"] = yield from probe_fringe_phase(instrument, ref_settings,
                                                               reference_position, extra)

    phase = {}

    def body():
        extra = (tile_index,)
        if low_dose:  # the lag of a longer exposure before the short darks
            yield from lag_flush(instrument, settings, extra)
        yield from dark_set(instrument, settings, extra)
        if low_dose:
            yield from dark_set(instrument, ref_settings, extra, stream=STREAMS["reference_dark"])
        drifted = False
        for tile in tiles:
            yield from bps.mv(tile_index, tile["tile"])  # a reference is labelled with the tile it serves
            if tile["tile"] == 0 or drifted or (reference_every and tile["tile"] % reference_every == 0):
                yield from reference(extra)
            if low_dose:  # after a reference or a probe at the longer exposure
                yield from lag_flush(instrument, settings, extra)
            yield from stepping_set(instrument, settings, STREAMS["sample"],
                                    (tile["x_mm"], tile["y_mm"]), extra)
            last = tile["tile"] == len(tiles) - 1
            if max_phase_drift_rad is not None and not last:
                yield from ensure_exposure(instrument, ref_settings)
                now = yield from probe_fringe_phase(instrument, ref_settings, reference_position, extra)
                drifted = abs(phase_drift(now, phase["reference"])) > max_phase_drift_rad

    return acquisition_wrapper(instrument, settings, body(), start_md, tally)
