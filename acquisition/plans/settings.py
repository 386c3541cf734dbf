"""The checked settings of a phase-stepping acquisition: every argument validated before
anything moves or any X-ray is made; a wrong one raises :class:`PlanArgumentError`."""

from __future__ import annotations

import dataclasses
import getpass
import json
import math
import numbers
from dataclasses import dataclass

from ..config import sample_field_mm
from ..errors import TalbotLauError
from ..instrument import Instrument


class PlanArgumentError(TalbotLauError, ValueError):
    """A plan argument is out of range; raised before anything moves."""


STEPS = (3, 64)
"""Phase steps per period: 3 is the least a cosine fit needs; the paper uses 9, and more
than 64 only adds time and dose."""
MAX_DARK_FRAMES = 100
MIN_KV = 10.0
"""Lowest tube voltage a plan accepts: below it a Mo tube makes no useful X-rays (and the
simulator's spectrum model starts there)."""
MIN_THICKNESS_MM = 0.1
MAX_THICKNESS_MM = 150.0
"""Sample thickness range a plan accepts (mm).  A compressed breast is 20-80 mm and an
excised specimen or mastectomy less; 150 mm covers any breast.  A larger value is a unit
slip (um for mm), and since the dose model gives a thicker breast a lower mean glandular
dose, a wrong breast_thickness_mm would pass the dose budget wrongly.  Below 0.1 mm
nothing is a specimen.  Both thickness_mm and breast_thickness_mm are checked so."""


def phase_step_positions(start_um: float, period_um: float, steps: int) -> list[float]:
    """G2 positions (um) of ``steps`` equal steps over one period from ``start_um``
    (``steps`` is checked first: 3..64, nothing is built for a wrong one)."""
    whole(steps, "steps", *STEPS)
    return [start_um + k * period_um / steps for k in range(steps)]


@dataclass(frozen=True)
class SteppingSettings:
    """One phase-stepping set's parameters, checked against the instrument's limits."""

    steps: int
    exposure_s: float
    dark_frames: int
    kv: float
    ma: float
    period_um: float
    positions_um: list[float]
    sample: dict
    operator: str

    @property
    def thickness_mm(self) -> float | None:
        """Physical specimen thickness (mm), metadata only."""
        return self.sample.get("thickness_mm")

    @property
    def breast_thickness_mm(self) -> float | None:
        """Compressed breast thickness (mm) the dose is labelled for; None: the reference
        breast (dose.reference_thickness_mm, the paper's 4.5 cm)."""
        return self.sample.get("breast_thickness_mm")


def stepping_settings(instrument: Instrument, *, steps=None, exposure_s=None, dark_frames=None,
                      kv=None, ma=None, sample=None, operator=None) -> SteppingSettings:
    """Defaults from the configuration; raises PlanArgumentError for anything out of range."""
    cfg = instrument.config.instrument
    steps = cfg.scan.steps if steps is None else steps
    exposure_s = cfg.scan.exposure_s if exposure_s is None else exposure_s
    dark_frames = cfg.scan.dark_frames if dark_frames is None else dark_frames
    kv = cfg.tube.kv if kv is None else kv
    ma = cfg.tube.ma if ma is None else ma
    steps = whole(steps, "steps", *STEPS)
    dark_frames = whole(dark_frames, "dark_frames", 0, MAX_DARK_FRAMES)
    check(finite(exposure_s) and 0 < exposure_s <= cfg.scan.max_exposure_s,
          f"exposure_s={exposure_s!r}: must be in (0, {cfg.scan.max_exposure_s}] s")
    check(finite(kv) and MIN_KV <= kv <= cfg.tube.kv_max,
          f"kv={kv!r}: must be in [{MIN_KV:g}, {cfg.tube.kv_max}] kV")
    check(finite(ma) and 0 < ma <= cfg.tube.ma_max, f"ma={ma!r}: must be in (0, {cfg.tube.ma_max}] mA")
    period_um = cfg.gratings.g2_period_um
    positions = phase_step_positions(cfg.g2.start_um, period_um, steps)
    low, high = cfg.g2.limits_um
    check(low <= positions[0] and positions[-1] <= high,
          f"phase steps {positions[0]:.3f}..{positions[-1]:.3f} um exceed the G2 limits {low}..{high} um")
    sample = sample_metadata(sample)
    check(operator is None or (isinstance(operator, str) and 0 < len(operator.strip()) <= 200),
          f"operator={operator!r}: give a name (text)")
    return SteppingSettings(steps, float(exposure_s), dark_frames, float(kv), float(ma), period_um,
                            positions, sample, operator or getpass.getuser())


def reference_settings(instrument: Instrument, settings: SteppingSettings,
                       reference_exposure_s=None) -> SteppingSettings:
    """The reference scan's settings: ``settings`` with the reference's own exposure per
    step (s), default the configuration's ``scan.exposure_s`` (9 s) even when the sample's
    is shorter; checked like ``exposure_s``.  The reference costs the patient no dose."""
    scan = instrument.config.instrument.scan
    exposure = scan.exposure_s if reference_exposure_s is None else reference_exposure_s
    check(finite(exposure) and 0 < exposure <= scan.max_exposure_s,
          f"reference_exposure_s={reference_exposure_s!r}: must be in (0, {scan.max_exposure_s}] s")
    return dataclasses.replace(settings, exposure_s=float(exposure))


def sample_metadata(sample) -> dict:
    """A sample id, or a dict with an 'id' (and optionally 'thickness_mm', the specimen, and
    'breast_thickness_mm', the breast the dose is labelled for, each in [0.1, 150] mm)
    whose values are plain JSON (they go into the start document)."""
    if sample is None:
        return {"id": "unnamed"}
    if isinstance(sample, str) and sample.strip():
        return {"id": sample}
    if isinstance(sample, dict) and isinstance(sample.get("id"), str) and sample["id"].strip():
        metadata = dict(sample)
        for key in ("thickness_mm", "breast_thickness_mm"):
            thickness = sample.get(key)
            check(thickness is None or (finite(thickness) and MIN_THICKNESS_MM <= thickness <= MAX_THICKNESS_MM),
                  f"sample {key}={thickness!r}: must be in [{MIN_THICKNESS_MM:g}, {MAX_THICKNESS_MM:g}] mm")
            if thickness is not None:
                metadata[key] = float(thickness)
        check(_plain_json(metadata), f"sample={sample!r}: values must be text, numbers, "
              "true/false or lists/dicts of them (they go into the start document)")
        return metadata
    raise PlanArgumentError(f"sample={sample!r}: give an id or a dict with an 'id' (non-empty text)")


def check_metadata(md) -> dict:
    """Extra start-document metadata: None or a dict with text keys."""
    check(md is None or (isinstance(md, dict) and all(isinstance(k, str) for k in md)),
          f"md={md!r}: give a dict with text keys (or None)")
    return dict(md or {})


def _plain_json(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def tile_field_mm(instrument: Instrument) -> tuple[float, float]:
    """(height, width) of one tile, the detector's read-out field, at the sample plane, mm."""
    return sample_field_mm(instrument.config.setup)


def check_reference_clear(instrument: Instrument, reference_position_mm, sample_positions_mm) -> None:
    """Refuse a reference position whose field of view overlaps the field of any sample
    position: the reference scan must see no sample.  Positions are (x, y) stage mm; the
    field (height along y, width along x) is :func:`tile_field_mm`.  This is the least
    clearance: a specimen larger than the fields it is imaged in needs more."""
    height, width = tile_field_mm(instrument)
    rx, ry = reference_position_mm
    for sx, sy in sample_positions_mm:
        check(abs(rx - sx) >= width or abs(ry - sy) >= height,
              f"reference_position_mm=({rx:g}, {ry:g}) mm overlaps the field of the sample position "
              f"({sx:g}, {sy:g}) mm: the field of view is {height:.1f} x {width:.1f} mm "
              f"(height x width at the sample plane), so the reference must be at least "
              f"{width:.1f} mm away in x or {height:.1f} mm in y from every sample position")


def check_stage_position(instrument: Instrument, name: str, position) -> tuple[float, float]:
    """(x, y) mm inside the stage's travel, or PlanArgumentError."""
    stage = instrument.config.instrument.stage
    check(isinstance(position, (tuple, list)) and len(position) == 2 and all(finite(v) for v in position),
          f"{name}={position!r}: give (x, y) in mm")
    x, y = position
    (xlo, xhi), (ylo, yhi) = stage.x_limits_mm, stage.y_limits_mm
    check(xlo <= x <= xhi and ylo <= y <= yhi,
          f"{name}=({x:g}, {y:g}) mm is outside the stage limits x {xlo:g}..{xhi:g}, y {ylo:g}..{yhi:g} mm")
    return float(x), float(y)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise PlanArgumentError(message)


def finite(value) -> bool:
    """A real number (int, float, numpy scalar; not bool) that is finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except (OverflowError, TypeError, ValueError):  # an int too large for a float
        return False


def whole(value, name: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum], or PlanArgumentError (checked before any
    list of that length is built)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if maximum is None:
        check(ok and value >= minimum, f"{name}={value!r}: must be a whole number >= {minimum}")
    else:
        check(ok and minimum <= value <= maximum,
              f"{name}={value!r}: must be a whole number >= {minimum} and <= {maximum}")
    return int(value)


BUDGET_SOURCE = "dose.budget_mgy in the instrument configuration, embedded: configs/instrument.yaml"
"""Where the dose budget lives, for refusals."""


def exposures_per_point(rows: int, columns: int, overlap: float) -> int:
    """How many tiles of a rows x columns mosaic expose its most exposed point of tissue.

    With an overlap below one half a point lies in at most two tiles along each axis: an
    overlap strip between two tiles is exposed twice, a corner shared by four tiles four
    times (mean glandular dose counts per tissue, so the budget holds for that point)."""
    return (2 if overlap and columns > 1 else 1) * (2 if overlap and rows > 1 else 1)


def check_dose_budget(instrument: Instrument, settings: SteppingSettings, *,
                      rows: int = 1, columns: int = 1, overlap: float = 0.0) -> float:
    """The planned mean glandular dose (mGy) at the most exposed point of the sample, for a
    projection (the defaults) or a rows x columns mosaic; PlanArgumentError, saying which
    single setting would fit, when it exceeds ``dose.budget_mgy``."""
    from ..dose import (
        planned_dose_mgy,  # the dose model's import stays with the plans that need it
    )

    dose_cfg = instrument.config.instrument.dose

    def planned(steps=settings.steps, exposure_s=settings.exposure_s, ma=settings.ma,
                rows=rows, columns=columns, overlap=overlap) -> float:
        per_tile = planned_dose_mgy(dose_cfg, settings.kv, ma, steps * exposure_s, settings.breast_thickness_mm)
        return per_tile * exposures_per_point(rows, columns, overlap)

    dose = planned()
    if dose <= dose_cfg.budget_mgy:
        return dose
    times = exposures_per_point(rows, columns, overlap)
    counted = (f" at the most exposed point ({times} overlapping tiles x "
               f"{dose / times:.1f} mGy)" if times > 1 else "")
    fits = what_would_fit(planned, dose_cfg.budget_mgy, steps=settings.steps,
                          exposure_s=settings.exposure_s, ma=settings.ma,
                          rows=rows, columns=columns, overlap=overlap)
    advice = (f"; {', or '.join(fits)} would fit (each alone)" if fits else
              "; no single change of steps, exposure_s, ma or the mosaic's layout fits")
    raise PlanArgumentError(
        f"planned mean glandular dose {dose:.1f} mGy{counted} exceeds the budget of "
        f"{dose_cfg.budget_mgy:g} mGy ({BUDGET_SOURCE}){advice}")


def what_would_fit(planned, budget_mgy: float, *, steps: int, exposure_s: float, ma: float,
                   rows: int = 1, columns: int = 1, overlap: float = 0.0) -> list[str]:
    """The single changes that bring ``planned(**change)`` (mGy) within ``budget_mgy``, as
    text (``"exposure_s <= 6.2 s"``, ``"steps <= 6"``, ``"ma <= 48 mA"``, ``"overlap=0 ..."``).

    Each suggested value is the largest on a round grid (0.1 s, whole steps, whole mA) that
    ``planned`` itself accepts, so applying it passes; a value outside what a plan accepts
    (fewer than 3 steps, no exposure or current) is not suggested.  The tube voltage is
    not: it changes the spectrum and the contrast, not only the dose."""
    fits = []
    dose = planned()
    scale = budget_mgy / dose

    def largest(name, value, grid, lowest, unit=""):
        digits = max(0, -math.floor(math.log10(grid)))
        k = math.floor(value * scale / grid)
        while k * grid >= lowest and planned(**{name: round(k * grid, digits)}) > budget_mgy:
            k -= 1  # rounding: step down until the model itself accepts the value shown
        if k * grid >= lowest:
            fits.append(f"{name} <= {k * grid:.{digits}f}{unit}")

    largest("exposure_s", exposure_s, 0.1, 0.1, " s")
    largest("steps", steps, 1, STEPS[0])
    largest("ma", ma, 1, 1, " mA")
    if exposures_per_point(rows, columns, overlap) > 1:
        if planned(overlap=0.0) <= budget_mgy:
            fits.append(f"overlap=0 (each point in one tile: {planned(overlap=0.0):.1f} mGy)")
        if rows > 1 and columns > 1 and planned(rows=1) <= budget_mgy:
            fits.append(f"rows=1 (or columns=1; each point in at most two tiles: "
                        f"{planned(rows=1):.1f} mGy)")
    return fits
