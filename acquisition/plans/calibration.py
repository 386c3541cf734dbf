"""The tissue calibration: measure bead clusters of known size behind tissue steps, and
compute the ``c(Ts)`` correction file from the run's derived clusters.

Why (issue 14; docs/reconstruction.md, "Tissue calibration"): in this model mu/eps of a
cluster falls as the tissue around it hardens the beam, about 20 % from the 10 mm
paraffin block of Scherer et al. 2016 (Table 1) to 45 mm of breast, beyond the paper's
+-10 % (Fig. 1).  :func:`tissue_calibration` images a calibration phantom (bead clusters
of known radius in every band of a breast step wedge; for the twin
``simulators.physics.calibration_phantom``) with the existing projection or mosaic plan;
:func:`compute_tissue_calibration` assigns each derived cluster to its band and bead by
its position, takes Ts and the measured (uncorrected) mu/eps from the processor, forms
``c = R_reference / R(Ts)`` per bead (``reconstruction.correction_points``), fits it
(``reconstruction.fit_tissue_correction``) and writes the calibration file
(``acquisition.storage.tissue_calibration_file``).
"""

from __future__ import annotations

import math

import numpy as np

from ..instrument import Instrument
from .mosaic import darkfield_mosaic
from .projection import darkfield_projection
from .settings import PlanArgumentError, check, check_metadata, finite, tile_field_mm

REFERENCE_TS = 0.760
"""Transmission of the 10 mm paraffin block Table 1's biopsies were measured in, at the
embedded configuration's beam (40 kVp, HVL 0.8 mm Al): the reference where c = 1.
Computed once from the physics engine,
``simulators.physics.calibration_phantom.block_transmission(config.setup)`` = 0.7596
(tests/test_tissue_calibration.py keeps it honest); a lab measures it on its own block."""
CALIBRATION_STEPS = 24
"""Phase steps of the calibration run (9 s each by default: 216 s, 2.7x the counts of the
9 x 9 s protocol without saturating the thinnest step).  At 9 steps the dark-field noise
behind 45-60 mm of tissue (T 0.12-0.19) biases the beads' mu/eps upwards by up to 10 %,
and c(Ts) comes out about 3 % low there (docs/reconstruction.md)."""
MARGIN_MM = 1.0
"""Clearance (mm) kept between the phantom's outline and the field's edge."""
GATE_MM = 1.5
"""A derived cluster belongs to a bead cluster if its centroid lies within this (mm) of
the bead cluster's nominal centre (clusters elsewhere, e.g. at step edges, are ignored)."""
PHANTOM_KEYS = ("bead_radii_um", "band_centres_mm", "bead_rows_mm", "roi_mm", "tissue")


def check_phantom(phantom) -> dict:
    """The calibration phantom's description (``CalibrationPhantomSpec.describe()`` of the
    twin, or a lab's own with the same keys), checked; PlanArgumentError names the field."""
    check(isinstance(phantom, dict), f"phantom={phantom!r:.80}: give the phantom's description "
          "(a dict, e.g. simulators.physics.calibration_phantom.CalibrationPhantomSpec().describe())")
    for key in PHANTOM_KEYS:
        check(key in phantom, f"phantom: missing field {key!r} (needs {', '.join(PHANTOM_KEYS)})")
    steps = phantom["tissue"].get("steps_mm") if isinstance(phantom["tissue"], dict) else None
    check(isinstance(steps, (list, tuple)) and len(steps) >= 2,
          f"phantom.tissue.steps_mm={steps!r}: give two or more tissue steps (mm)")
    for name, values in (("bead_radii_um", phantom["bead_radii_um"]),
                         ("band_centres_mm", phantom["band_centres_mm"]),
                         ("bead_rows_mm", phantom["bead_rows_mm"]), ("tissue.steps_mm", steps)):
        check(isinstance(values, (list, tuple)) and len(values) >= 1 and all(finite(v) for v in values),
              f"phantom.{name}={values!r:.80}: give a list of finite numbers")
    check(len(phantom["band_centres_mm"]) == len(steps),
          f"phantom.band_centres_mm: {len(phantom['band_centres_mm'])} bands for {len(steps)} steps")
    check(len(phantom["bead_rows_mm"]) == len(phantom["bead_radii_um"]),
          f"phantom.bead_rows_mm: {len(phantom['bead_rows_mm'])} rows for "
          f"{len(phantom['bead_radii_um'])} bead radii")
    roi = phantom["roi_mm"]
    check(isinstance(roi, (list, tuple)) and len(roi) == 2 and all(finite(v) and v > 0 for v in roi),
          f"phantom.roi_mm={roi!r:.80}: give (height, width) in mm of the region the beads span")
    return dict(phantom)


def field_origin_mm(setup) -> tuple[float, float]:
    """(x, y) mm at the sample plane of the first (binned) pixel's centre with the stage at
    (0, 0), for ``setup`` (the configuration's physics setup): a pixel (row, col) of a
    projection at stage s sees x = x0 + col*p - s_x (p the sample pixel, mm)."""
    det, magnification = setup.detector, setup.geometry.magnification
    row0, col0, _, _ = det.region or (0, 0, det.rows, det.columns)
    pitch = det.pixel_um / 1000.0
    x = (col0 + det.binning / 2 - det.columns / 2) * pitch / magnification
    y = (row0 + det.binning / 2 - det.rows / 2) * pitch / magnification
    return float(x), float(y)


def calibration_layout(instrument: Instrument, phantom: dict, overlap: float = 0.1) -> tuple[int, int]:
    """(rows, columns) of tiles that image the phantom's ``roi_mm`` with ``MARGIN_MM``
    around it: (1, 1) is one projection."""
    height, width = tile_field_mm(instrument)
    need = [size + 2 * MARGIN_MM for size in phantom["roi_mm"]]
    return tuple(1 if size <= field else math.ceil((size - field) / (field * (1 - overlap))) + 1
                 for size, field in zip(need, (height, width)))


def tissue_calibration(instrument: Instrument, *, phantom: dict, reference_ts: float = REFERENCE_TS,
                       sample_position_mm=None, overlap: float = 0.1, steps=CALIBRATION_STEPS,
                       md=None, **acquisition):
    """Image the tissue calibration phantom: one projection if its bead clusters with their
    rings (``roi_mm``) fit the field (with ``MARGIN_MM``), else the smallest mosaic that
    covers them.

    ``phantom``: its description (:func:`check_phantom`); ``reference_ts``: the reference
    tissue's transmission (default :data:`REFERENCE_TS`, the twin's 10 mm paraffin block);
    ``steps``: phase steps (default :data:`CALIBRATION_STEPS`); ``acquisition``: exposure_s,
    kv, ma, operator, ... as :func:`darkfield_projection`.  The
    start document's ``tissue_calibration_run`` says what it is.  Raises
    :class:`PlanArgumentError` when called for anything out of range.
    """
    phantom = check_phantom(phantom)
    check(finite(reference_ts) and 0 < reference_ts < 1,
          f"reference_ts={reference_ts!r}: must be a transmission in (0, 1)")
    md = check_metadata(md)
    check("sample" not in acquisition, "sample: the calibration run names its own sample (the phantom)")
    cfg = instrument.config.instrument
    position = cfg.stage.sample_position_mm if sample_position_mm is None else sample_position_mm
    check(finite(overlap) and 0 <= overlap < 0.5, f"overlap={overlap!r}: must be in [0, 0.5)")
    rows, columns = calibration_layout(instrument, phantom, overlap)
    sample = {"id": "tissue-calibration-phantom", "thickness_mm": float(max(phantom["tissue"]["steps_mm"])),
              "description": "bead clusters of known radius on a breast-tissue step wedge "
                             "(tissue calibration, issue 14)"}
    run = {"phantom": phantom, "reference_ts": float(reference_ts),
           "field_origin_mm": list(field_origin_mm(instrument.config.setup)), "gate_mm": GATE_MM}
    md = {**md, "tissue_calibration_run": run}
    if rows == columns == 1:
        return darkfield_projection(instrument, sample_position_mm=position, sample=sample, md=md,
                                    steps=steps, **acquisition)
    return darkfield_mosaic(instrument, rows=rows, columns=columns, overlap=overlap,
                            origin_mm=position, sample=sample, md=md, steps=steps, **acquisition)


def image_origin_mm(start: dict) -> tuple[float, float]:
    """(x, y) mm of the derived image's first pixel in phantom coordinates, from the
    calibration run's start document (a projection, or a stitched mosaic)."""
    x0, y0 = start["tissue_calibration_run"]["field_origin_mm"]
    mosaic = start.get("mosaic")
    if mosaic:
        sx = max(t["x_mm"] for t in mosaic["tiles"])
        sy = max(t["y_mm"] for t in mosaic["tiles"])
    else:
        sx, sy = start["plan_args"]["sample_position_mm"]
    return x0 - sx, y0 - sy


def calibration_points(start: dict, clusters) -> list[dict]:
    """The calibration clusters among a run's derived ones, each with its band and bead.

    ``clusters``: dicts (or objects) with ``centroid_row``/``centroid_col`` (pixels) or
    ``centroid_px``, ``Ts`` and the measured mu/eps ``uncorrected_ratio`` (else ``ratio``
    over ``tissue_factor``).  A cluster is kept when its centroid is within ``gate_mm`` of
    a bead cluster's nominal centre; one per bead cluster (the nearest)."""
    run = start["tissue_calibration_run"]
    phantom = run["phantom"]
    pixel = start["detector_pixel"]["sample_pixel_mm"]
    x0, y0 = image_origin_mm(start)
    steps = phantom["tissue"]["steps_mm"]
    best: dict[tuple[int, int], dict] = {}
    for cluster in clusters:
        def get(key, default=None, cluster=cluster):
            return cluster.get(key, default) if isinstance(cluster, dict) else getattr(cluster, key, default)

        row, col = (get("centroid_row"), get("centroid_col")) if get("centroid_px") is None \
            else get("centroid_px")
        x, y = x0 + col * pixel, y0 + row * pixel
        band = int(np.argmin(np.abs(np.asarray(phantom["band_centres_mm"]) - x)))
        bead = int(np.argmin(np.abs(np.asarray(phantom["bead_rows_mm"]) - y)))
        distance = math.hypot(x - phantom["band_centres_mm"][band], y - phantom["bead_rows_mm"][bead])
        ratio = get("uncorrected_ratio")
        if ratio is None:
            ratio = get("ratio") / get("tissue_factor", 1.0)
        if distance > run["gate_mm"] or not (finite(get("Ts")) and finite(ratio) and ratio > 0):
            continue
        point = {"ts": float(get("Ts")), "ratio": float(ratio), "step_mm": float(steps[band]),
                 "bead_radius_um": float(phantom["bead_radii_um"][bead]), "x_mm": round(x, 3),
                 "y_mm": round(y, 3), "distance_mm": round(distance, 3)}
        if (band, bead) not in best or distance < best[(band, bead)]["distance_mm"]:
            best[(band, bead)] = point
    return [best[key] for key in sorted(best)]


def compute_tissue_calibration(start: dict, clusters, *, calibration_id: str, instrument: dict,
                               path=None):
    """The tissue calibration of a calibration run (its start document and its derived,
    uncorrected clusters: :func:`calibration_points`); written to ``path`` if given.

    ``instrument``: what it was measured with (kv, ma, filtration, hvl_mm_al).  Raises
    ValueError if a bead is missing at the reference transmission's neighbours or fewer
    than two steps were found."""
    from reconstruction import correction_points, fit_tissue_correction

    from ..storage.tissue_calibration_file import (
        TissueCalibration,
        write_tissue_calibration,
    )

    run = start.get("tissue_calibration_run") or {}
    if "phantom" not in run:
        raise ValueError("start document: not a tissue calibration run (no tissue_calibration_run)")
    points = calibration_points(start, clusters)
    if len(points) < 2:
        raise ValueError(f"only {len(points)} calibration clusters found in the run's derived clusters")
    reference_ts = run["reference_ts"]
    ts = [p["ts"] for p in points]
    factors = correction_points(ts, [p["ratio"] for p in points],
                                [p["bead_radius_um"] for p in points], reference_ts)
    correction = fit_tissue_correction(ts, factors, reference_ts)
    for point, factor in zip(points, correction.points_factor):
        point["factor"] = factor
    calibration = TissueCalibration(
        id=calibration_id, correction=correction, instrument=instrument,
        reference_phantom=run["phantom"], source_run_uid=start.get("uid", ""), points=points)
    return calibration if path is None else write_tissue_calibration(calibration, path)


__all__ = ["CALIBRATION_STEPS", "REFERENCE_TS", "PlanArgumentError", "calibration_layout",
           "calibration_points", "check_phantom",
           "compute_tissue_calibration", "field_origin_mm", "image_origin_mm", "tissue_calibration"]
