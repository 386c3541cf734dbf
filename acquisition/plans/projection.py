"""One dark-field projection: darks, a reference scan and a sample scan.

Dark frames (shutter closed), a reference phase-stepping scan (sample out of the beam)
and a sample phase-stepping scan, 9 steps x 9 s by default (Scherer et al. 2016,
Discussion and Methods).  Every argument is checked when the plan is made, before
anything moves or any X-ray is made; the shutter is closed on every way out.

Low-dose protocol: the reference takes its own exposure (``reference_exposure_s``,
default the configuration's 9 s) whatever the sample's, with dark frames of its own
(stream ``reference_dark``) when the two differ; or a stored reference fit
(``reference=PATH``, :mod:`acquisition.storage.reference_fit`) replaces the reference scan.  The
reference costs the patient no dose: the planned and the delivered dose count the sample
frames only.
"""

from __future__ import annotations

from pathlib import Path

from ..instrument import Instrument
from ..storage.reference_fit import (
    ReferenceFitError,
    read_reference_fit,
    reference_mismatch,
)
from .settings import (
    PlanArgumentError,
    check_dose_budget,
    check_metadata,
    check_reference_clear,
    check_stage_position,
    reference_settings,
    stepping_settings,
)
from .stubs import (
    LAG_FLUSH_FRAMES,
    STREAMS,
    DoseTally,
    acquisition_wrapper,
    dark_set,
    lag_flush,
    start_metadata,
    stepping_set,
)


def darkfield_projection(instrument: Instrument, *, steps=None, exposure_s=None, dark_frames=None,
                         kv=None, ma=None, sample_position_mm=None, reference_position_mm=None,
                         sample=None, operator=None, md=None, reference_exposure_s=None,
                         reference=None):
    """One dark-field projection: darks, reference scan, sample scan.

    Defaults come from the configuration (``scan``, ``tube`` and ``stage`` sections).
    ``sample`` is an id or a dict with at least ``id`` (``breast_thickness_mm`` labels the
    dose; without it, the paper's reference breast of 4.5 cm).
    ``reference_exposure_s``: the reference's exposure per step (s, default
    ``scan.exposure_s``); ``reference``: the path of a stored reference fit used instead
    of a reference scan (refused unless it matches the instrument and is younger than
    ``scan.reference_max_age_h``).  Raises :class:`PlanArgumentError` when called (not when
    run) for any argument out of range, so nothing has moved yet.
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
    stored = None
    if reference is not None:
        if reference_exposure_s is not None:
            raise PlanArgumentError("reference_exposure_s and reference: give one (a stored "
                                    "reference fit has its own exposure)")
        stored = checked_reference_fit(instrument, reference, settings)
        ref_settings = reference_settings(instrument, settings, stored.exposure_s)
    else:
        ref_settings = reference_settings(instrument, settings, reference_exposure_s)
    dose_mgy = check_dose_budget(instrument, settings)  # the reference costs no dose
    low_dose = ref_settings.exposure_s != settings.exposure_s
    own_darks = stored is None and low_dose
    flushes = (1 + (stored is None)) if low_dose else 0

    start_md = start_metadata(instrument, settings, "darkfield_projection", dose_mgy,
                              reference_exposure_s=ref_settings.exposure_s)
    if stored is not None:
        start_md["phase_stepping"]["reference_fit"] = stored.metadata(reference)
    start_md["plan_args"] = {
        "steps": settings.steps, "exposure_s": settings.exposure_s,
        "reference_exposure_s": ref_settings.exposure_s,
        "reference": None if stored is None else str(Path(reference).resolve()),
        "dark_frames": settings.dark_frames, "kv": settings.kv, "ma": settings.ma,
        "sample_position_mm": list(sample_position), "reference_position_mm": list(reference_position)}
    start_md["total_frames"] = (settings.dark_frames * (2 if own_darks else 1)
                                + settings.steps * (1 if stored else 2) + LAG_FLUSH_FRAMES * flushes)
    start_md.update(md or {})

    tally = DoseTally(instrument, settings.breast_thickness_mm, settings.exposure_s)

    def body():
        if low_dose:  # the lag of a longer exposure before the short darks and sample frames
            yield from lag_flush(instrument, settings)
        yield from dark_set(instrument, settings)
        if own_darks:
            yield from dark_set(instrument, ref_settings, stream=STREAMS["reference_dark"])
        if stored is None:
            yield from stepping_set(instrument, ref_settings, STREAMS["reference"], reference_position)
            if low_dose:
                yield from lag_flush(instrument, settings)
        yield from stepping_set(instrument, settings, STREAMS["sample"], sample_position)

    return acquisition_wrapper(instrument, settings, body(), start_md, tally)


def checked_reference_fit(instrument: Instrument, path, settings):
    """The stored reference fit at ``path`` if it matches the instrument and the plan's
    tube settings and is young enough; PlanArgumentError naming what does not."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise PlanArgumentError(f"reference={path!r}: give the path of a stored reference fit (.h5)")
    try:
        stored = read_reference_fit(path)
    except ReferenceFitError as err:
        raise PlanArgumentError(str(err)) from None
    cfg = instrument.config
    det = cfg.setup.detector
    problem = reference_mismatch(stored, region=det.region, binning=det.binning, kv=settings.kv,
                                 ma=settings.ma, period_um=settings.period_um,
                                 max_age_h=cfg.instrument.scan.reference_max_age_h)
    if problem:
        raise PlanArgumentError(f"reference={str(path)!r}: the stored reference fit does not fit: {problem}")
    return stored
