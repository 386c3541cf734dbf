"""One dark-field projection: darks, a reference scan and a sample scan.

Dark frames (shutter closed), a reference phase-stepping scan (sample out of the beam)
and a sample phase-stepping scan, 9 steps x 9 s by default (Scherer et al. 2016,
Discussion and Methods).  Every argument is checked when the plan is made, before
anything moves or any X-ray is made; the shutter is closed on every way out.
"""

from __future__ import annotations

from ..instrument import Instrument
from .settings import (check_dose_budget, check_metadata, check_reference_clear, check_stage_position,
                       stepping_settings)
from .stubs import (STREAMS, DoseTally, acquisition_wrapper, dark_set, start_metadata,
                    stepping_set)


def darkfield_projection(instrument: Instrument, *, steps=None, exposure_s=None, dark_frames=None,
                         kv=None, ma=None, sample_position_mm=None, reference_position_mm=None,
                         sample=None, operator=None, md=None):
    """One dark-field projection: darks, reference scan, sample scan.

    Defaults come from the configuration (``scan``, ``tube`` and ``stage`` sections).
    ``sample`` is an id or a dict with at least ``id`` (``thickness_mm`` scales the dose).
    Raises :class:`PlanArgumentError` when called (not when run) for any argument out of
    range, so nothing has moved yet.
    """
    cfg = instrument.config.instrument
    settings = stepping_settings(instrument, steps=steps, exposure_s=exposure_s,
                                 dark_frames=dark_frames, kv=kv, ma=ma, sample=sample,
                                 operator=operator)
    sample_position = check_stage_position(
        instrument, "sample_position_mm",
        cfg.stage.sample_position_mm if sample_position_mm is None else sample_position_mm)
    reference_position = check_stage_position(
        instrument, "reference_position_mm",
        cfg.stage.reference_position_mm if reference_position_mm is None else reference_position_mm)
    check_reference_clear(instrument, reference_position, [sample_position])
    md = check_metadata(md)
    dose_mgy = check_dose_budget(instrument, settings)

    start_md = start_metadata(instrument, settings, "darkfield_projection", dose_mgy)
    start_md["plan_args"] = {
        "steps": settings.steps, "exposure_s": settings.exposure_s,
        "dark_frames": settings.dark_frames, "kv": settings.kv, "ma": settings.ma,
        "sample_position_mm": list(sample_position), "reference_position_mm": list(reference_position)}
    start_md["total_frames"] = settings.dark_frames + 2 * settings.steps
    start_md.update(md or {})

    tally = DoseTally(instrument, settings.thickness_mm, settings.exposure_s)

    def body():
        yield from dark_set(instrument, settings)
        yield from stepping_set(instrument, settings, STREAMS["reference"], reference_position)
        yield from stepping_set(instrument, settings, STREAMS["sample"], sample_position)

    return acquisition_wrapper(instrument, settings, body(), start_md, tally)
