"""The tissue calibration file: a versioned JSON record of one ``c(Ts)`` calibration.

Written by :func:`acquisition.plans.calibration.compute_tissue_calibration` from a
calibration run, named in ``configs/instrument.yaml`` (``processing.tissue_calibration``)
and applied by the processor (``reconstruction.correct_clusters``).  Keys::

    schema            "talbot-lau/tissue-calibration"
    version           SCHEMA_VERSION (an integer; a file of another version is refused)
    id                a name for the calibration, recorded with every derived run
    created           ISO 8601 time (UTC)
    instrument        kv (kV), ma (mA), filtration [[material, mm], ...], hvl_mm_al (mm Al)
    reference_phantom bead_radii_um, material, tissue {embedding, glandularity, steps_mm}, ...
    source_run_uid    the uid of the calibration run the points were measured in
    reference         {ts: Ts of the reference tissue (0-1), tissue: what it is}
    points            [{ts, factor, ...}, ...]  the measured c = R_reference / R(Ts)
    fit               {method, knots_ts, knots_factor}
    sha256            of the canonical JSON (sorted keys, no spaces) of all the other keys

A file that cannot be read, is not JSON, lacks a key, has a wrong value, another version
or a sha256 that does not match raises one :class:`CalibrationFileError` naming the file
and the field.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from reconstruction.tissue_correction import TissueCorrection

from ..errors import TalbotLauError

SCHEMA = "talbot-lau/tissue-calibration"
SCHEMA_VERSION = 1
FIT_METHOD = "monotone PCHIP of ln c against ln Ts, flat outside the knots"
MAX_FILE_BYTES = 1 << 22
"""A calibration file is a few kB; anything above 4 MiB is not one."""


class CalibrationFileError(TalbotLauError, ValueError):
    """A tissue calibration file is missing, broken or of another version; names file and field."""


@dataclass(frozen=True)
class TissueCalibration:
    """One tissue calibration: the correction and what it was measured with (see module)."""

    id: str
    correction: TissueCorrection
    instrument: dict
    reference_phantom: dict
    source_run_uid: str
    reference_tissue: str = "10 mm paraffin block (Table 1)"
    points: list[dict] = field(default_factory=list)
    """One dict per calibration cluster: at least ``ts`` and ``factor``."""
    created: str = ""
    version: int = SCHEMA_VERSION
    sha256: str = ""

    def record(self, path: str | Path | None = None) -> dict:
        """What a derived run records of it: id, version, sha256 (and the file name)."""
        out = {"id": self.id, "version": self.version, "sha256": self.sha256}
        if path is not None:
            out["file"] = Path(path).name
        return out


NO_CALIBRATION = {"id": "none", "version": None, "sha256": None}
"""What a derived run records when no tissue calibration was applied."""


def calibration_record(calibration: TissueCalibration | None, path=None) -> dict:
    """The record of ``calibration`` for a derived run, or :data:`NO_CALIBRATION`."""
    return dict(NO_CALIBRATION) if calibration is None else calibration.record(path)


def _content(calibration: TissueCalibration) -> dict:
    corr = calibration.correction
    return {
        "schema": SCHEMA, "version": calibration.version, "id": calibration.id,
        "created": calibration.created, "instrument": calibration.instrument,
        "reference_phantom": calibration.reference_phantom,
        "source_run_uid": calibration.source_run_uid,
        "reference": {"ts": corr.reference_ts, "tissue": calibration.reference_tissue},
        "points": calibration.points or [{"ts": t, "factor": c} for t, c in
                                         zip(corr.points_ts, corr.points_factor)],
        "fit": {"method": FIT_METHOD, "knots_ts": list(corr.knots_ts),
                "knots_factor": list(corr.knots_factor)},
    }


def _digest(content: dict) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def write_tissue_calibration(calibration: TissueCalibration, path: str | Path) -> TissueCalibration:
    """Write ``calibration`` to ``path`` (JSON, with ``created`` now if empty, and its
    sha256); returns it as written (with ``created`` and ``sha256`` filled in)."""
    created = calibration.created or datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds")
    calibration = dataclasses.replace(calibration, created=created, sha256="")
    content = _content(calibration)
    digest = _digest(content)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**content, "sha256": digest}, indent=1, allow_nan=False) + "\n")
    return dataclasses.replace(calibration, sha256=digest)


def read_tissue_calibration(path: str | Path) -> TissueCalibration:
    """Read and check a calibration file; raises :class:`CalibrationFileError` naming the
    file and the field of the first problem."""
    path = Path(path)

    def fail(name: str, message: str):
        raise CalibrationFileError(f"{path}: {name}: {message}")

    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise CalibrationFileError(f"{path}: cannot read the tissue calibration file "
                                   f"({err.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        fail("file", f"larger than {MAX_FILE_BYTES >> 20} MiB, not a tissue calibration")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CalibrationFileError(f"{path}: not a JSON tissue calibration file: {err}") from None
    if not isinstance(data, dict):
        fail("top level", f"expected a JSON object, got {type(data).__name__}")

    def get(name: str, kind, where: dict = data, prefix: str = ""):
        if name not in where:
            fail(prefix + name, "missing")
        value = where[name]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(prefix + name, f"expected a finite number, got {value!r}")
            return float(value)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            fail(prefix + name, f"expected a whole number, got {value!r}")
        if kind is not int and not isinstance(value, kind):
            fail(prefix + name, f"expected {kind.__name__}, got {type(value).__name__} {value!r:.60}")
        return value

    if data.get("schema") != SCHEMA:
        fail("schema", f"expected {SCHEMA!r}, got {data.get('schema')!r}")
    version = get("version", int)
    if version != SCHEMA_VERSION:
        fail("version", f"version {version} is not the supported version {SCHEMA_VERSION}: "
             "recalibrate, or use the software that wrote it")
    digest = get("sha256", str)
    content = {key: value for key, value in data.items() if key != "sha256"}
    reference = get("reference", dict)
    fit = get("fit", dict)

    def numbers(name: str) -> tuple[float, ...]:
        values = get(name, list, fit, "fit.")
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(f"fit.{name}[{i}]", f"expected a finite number, got {value!r}")
        return tuple(float(v) for v in values)

    knots_ts, knots_c = numbers("knots_ts"), numbers("knots_factor")
    points = get("points", list)
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            fail(f"points[{i}]", f"expected an object, got {point!r:.60}")
        for key in ("ts", "factor"):
            get(key, float, point, f"points[{i}].")
    try:
        actual = _digest(content)
    except ValueError as err:
        fail("file", f"not plain JSON ({err})")
    if actual != digest:
        fail("sha256", "does not match the content: the file was changed after it was written")
    try:
        correction = TissueCorrection(
            get("ts", float, reference, "reference."), tuple(knots_ts), tuple(knots_c),
            tuple(float(p["ts"]) for p in points), tuple(float(p["factor"]) for p in points))
    except ValueError as err:
        fail("fit", str(err))
    return TissueCalibration(
        id=get("id", str), correction=correction, instrument=get("instrument", dict),
        reference_phantom=get("reference_phantom", dict), source_run_uid=get("source_run_uid", str),
        reference_tissue=str(reference.get("tissue", "")), points=points,
        created=get("created", str), version=version, sha256=digest)


def configured_calibration(config) -> TissueCalibration | None:
    """The calibration ``config`` names (``processing.tissue_calibration``), or None.

    ``config``: a loaded :class:`acquisition.config.Config` (whose loading already checked
    the file; a file changed since raises :class:`CalibrationFileError`)."""
    path = config.instrument.processing.tissue_calibration
    return None if path is None else read_tissue_calibration(path)


def tissue_correction(config) -> TissueCorrection | None:
    """The configured ``c(Ts)`` for ``acquisition.processing.analysis.classify_image(result,
    correction=...)``: the one way the live processor, ``talbot-lau reconstruct`` and
    ``talbot-lau study`` get it; None when the configuration names no calibration."""
    calibration = configured_calibration(config)
    return None if calibration is None else calibration.correction
