"""G2 alignment: step G2 over whole periods in the open beam and report the fringes.

The plan takes the stage to the reference position (no sample), opens the shutter and
steps G2 over ``periods`` periods; :func:`alignment_report` fits the stepping curve of
every pixel (reconstruction.fit_stepping) and reports the visibility over the field and
the working point: the G2 position where the field's mean fringe phase is zero, from
which a phase-stepping scan should start.  :func:`use_working_point` makes the plans that
follow start G2 there (no YAML edit, no restart), and :func:`working_point_metadata` puts it
into their start documents.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import bluesky.plan_stubs as bps
import numpy as np

from reconstruction import fit_stepping

from ..instrument import Instrument
from .checks import HEARTBEAT_MARGIN_S, checked_frame
from .safety import close_shutter, open_shutter
from .settings import (
    check,
    check_reference_clear,
    check_stage_position,
    finite,
    stepping_settings,
    whole,
)
from .stubs import acquisition_wrapper

MAX_PERIODS = 10
"""Most G2 periods an alignment scan covers (the piezo travels 20 um, about 4 periods)."""


def g2_alignment(instrument: Instrument, *, steps: int = 16, periods: int = 2, exposure_s=None,
                 kv=None, ma=None, reference_position_mm=None, operator=None):
    """Scan G2 over ``periods`` periods in ``steps`` steps in the open beam (stream primary)."""
    cfg = instrument.config.instrument
    periods = whole(periods, "periods", 1, MAX_PERIODS)
    settings = stepping_settings(instrument, steps=steps, exposure_s=exposure_s, dark_frames=0,
                                 kv=kv, ma=ma, sample="open beam", operator=operator)
    period = settings.period_um
    positions = [cfg.g2.start_um + k * periods * period / steps for k in range(steps)]
    low, high = cfg.g2.limits_um
    check(low <= positions[0] and positions[-1] <= high,
          f"G2 positions {positions[0]:.2f}..{positions[-1]:.2f} um exceed the G2 limits {low}..{high} um")
    reference = check_stage_position(
        instrument, "reference_position_mm",
        cfg.stage.reference_position_mm if reference_position_mm is None else reference_position_mm)
    check_reference_clear(instrument, reference, [cfg.stage.sample_position_mm])
    tube, stage = instrument.tube, instrument.stage
    md = {"plan_name": "g2_alignment", "operator": settings.operator, "period_um": period,
          "positions_um": positions, "exposure_s": settings.exposure_s,
          "detectors": [instrument.detector.name], "motors": [instrument.g2.name],
          "total_frames": steps}

    def body():
        yield from bps.mv(stage.x, reference[0], stage.y, reference[1])
        yield from open_shutter(tube, settings.exposure_s + HEARTBEAT_MARGIN_S)
        for x_um in positions:
            yield from bps.mv(instrument.g2, x_um)
            yield from checked_frame(instrument, settings, "primary", beam=True)
        yield from close_shutter(tube)

    return acquisition_wrapper(instrument, settings, body(), md)


def alignment_report(frames: np.ndarray, positions_um, period_um: float, dark=None) -> dict:
    """Visibility over the field and the working point from a G2 scan's frames."""
    stack = np.asarray(frames, dtype=np.float64)
    if dark is not None:
        stack = stack - dark
    fit = fit_stepping(stack, positions_um, period_um)
    visibility = fit.visibility[np.isfinite(fit.visibility)]
    mean_phase = float(np.angle(np.nanmean(np.exp(1j * fit.phi))))
    working_point = float((-mean_phase / (2 * np.pi) * period_um) % period_um)
    return {
        "visibility_median": float(np.median(visibility)),
        "visibility_p05": float(np.percentile(visibility, 5)),
        "visibility_p95": float(np.percentile(visibility, 95)),
        "mean_intensity": float(np.nanmean(fit.a0)),
        "fringe_phase_rad": mean_phase,
        "working_point_um": working_point,
        "visibility_map": fit.visibility,
    }


def use_working_point(instrument: Instrument, report_or_um) -> float:
    """Make every later plan start G2 at the working point: ``report_or_um`` is
    :func:`alignment_report`'s result (its ``working_point_um``) or a position in um.

    ``instrument.config`` (frozen) is replaced by a copy whose ``g2.start_um`` is the working
    point, after checking that the configured phase steps from there stay inside the G2
    limits (PlanArgumentError otherwise, and nothing changes).  Nothing moves and no file is
    edited: a new session starts from the YAML again.  ``instrument.working_point`` keeps
    the value, the start it replaced and where it came from; with
    :func:`working_point_metadata` as the RunEngine's ``md_normalizer`` (the session has it)
    later start documents carry ``working_point_um``.  Returns the new start (um)."""
    if isinstance(report_or_um, Mapping):
        check("working_point_um" in report_or_um,
              "use_working_point: give alignment_report(...)'s result or a G2 position in um")
        value, source = report_or_um["working_point_um"], "alignment_report"
    else:
        value, source = report_or_um, "given"
    check(finite(value), f"working point {value!r}: give a G2 position in um (a finite number)")
    value = float(value)
    config = instrument.config
    cfg = config.instrument
    period, steps = cfg.gratings.g2_period_um, cfg.scan.steps
    last = value + period * (steps - 1) / steps
    low, high = cfg.g2.limits_um
    check(low <= value and last <= high,
          f"working point {value:.3f} um: its {steps} phase steps {value:.3f}..{last:.3f} um "
          f"leave the G2 limits {low:g}..{high:g} um")
    previous = cfg.g2.start_um
    g2 = dataclasses.replace(cfg.g2, start_um=value)
    instrument.config = dataclasses.replace(config, instrument=dataclasses.replace(cfg, g2=g2))
    instrument.working_point = {"working_point_um": value, "replaced_start_um": previous,
                                "source": source, "time": time.time()}
    return value


def working_point_metadata(instrument: Instrument):
    """A RunEngine ``md_normalizer`` that adds ``working_point_um`` (the G2 start set by
    :func:`use_working_point`) to the start document of every run, once one was set:
    ``RE.md_normalizer = working_point_metadata(instrument)``."""

    def normalize(md):
        md = dict(md)
        point = getattr(instrument, "working_point", None)
        if point is not None:
            md.setdefault("working_point_um", point["working_point_um"])
        return md

    return normalize
