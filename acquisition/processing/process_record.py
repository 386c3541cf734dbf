"""The processing record of a derived file: every step from raw frames to classified
clusters, with every parameter as the code uses them (read from the functions' defaults
and the modules' constants, never copied), for the NXprocess that
``acquisition.storage.derived_store.write_derived`` writes."""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import numpy as np

from reconstruction import (
    SUSPICIOUS_RATIO,
    TABLE_1,
    TEXTURES,
    microtexture,
    normalisation,
    segmentation,
    stitching,
)

from ..storage.derived_store import (
    derived_name,
    relative_path,
    tile_stage_mm,
    write_derived,
)
from ..storage.nexus import iso8601
from .analysis import BEAM_FRACTION, NOISE_FACTOR

PAPER = "Scherer et al., Sci Rep 6:36991 (2016)"


def write_derived_file(path: Path, analysis, parent_uid: str, *, run_record, tissue_calibration: dict,
                       start: dict, **context) -> Path:
    """Write the derived file of ``analysis`` (a ``ProjectionResult``) with its processing
    record; a file that fails half-way is removed (no truncated derived file is left).
    ``context``: ``frames``, ``tile`` or ``tiles``, as :func:`write_derived` takes them."""
    steps = process_steps(start, path, tissue_calibration, retrieval=analysis.retrieval, **context)
    try:
        return write_derived(path, analysis.retrieval, analysis.labels, analysis.clusters, parent_uid,
                             run_record=run_record, tissue_calibration=tissue_calibration,
                             start=start, process_steps=steps, **context)
    except Exception:
        with contextlib.suppress(OSError):
            Path(path).unlink(missing_ok=True)
        raise


def process_steps(start: dict | None, path: Path, calibration: dict | None, *, frames=None,
                  tile: int | None = None, tiles: list[int] | None = None,
                  retrieval=None) -> list[tuple[str, dict]]:
    """(name, parameters) of each step that made the derived file ``path``: retrieval (and
    stitching), segmentation, normalisation, classification, tissue correction (and the
    tile).  ``start``: the raw run's start document; ``calibration``: the tissue
    calibration's record (id, version, sha256; None: none); ``frames``, ``tile``, ``tiles``,
    ``retrieval``: as ``write_derived`` gets them."""
    calibration = calibration or {"id": "none"}
    steps = []
    stitched = retrieval is not None and hasattr(retrieval, "offsets_px")
    if start is not None:
        steps.append(("retrieval", _retrieval_parameters(start, frames, path, stitched)))
    if stitched and start is not None:
        steps.append(("stitching", _stitch_parameters(start, tiles, retrieval)))
    steps += [("segmentation", _segmentation_parameters()),
              ("normalisation", _normalisation_parameters()),
              ("classification", _classification_parameters()),
              ("tissue_correction", {
                  "function": "reconstruction.correct_clusters",
                  "description": "the cluster's mu/eps ratio multiplied by the calibration's c(Ts) "
                                 "at its surrounding tissue's transmission Ts (none: c = 1)",
                  "id": str(calibration.get("id") or "none"),
                  "version": -1 if calibration.get("version") is None else int(calibration["version"]),
                  "sha256": str(calibration.get("sha256") or "")})]
    if tile is not None and start is not None:
        spec = next(t for t in start["mosaic"]["tiles"] if t["tile"] == tile)
        x_mm, y_mm = tile_stage_mm(start, tile)
        steps.append(("tile", {"index": tile, "row": spec.get("row"), "column": spec.get("column"),
                               "stage_x_mm": x_mm, "stage_y_mm": y_mm}))
    return steps


def _defaults(function, *names: str) -> dict:
    """The default values of ``function``'s keyword arguments ``names``, as the code uses them."""
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in names}


def _retrieval_parameters(start: dict, frames, path: Path, stitched: bool) -> dict:
    stepping = start["phase_stepping"]
    exposure, reference_exposure = stepping.get("exposure_s"), stepping.get("reference_exposure_s")
    stored = stepping.get("reference_fit")
    values = {
        "function": "reconstruction.retrieve (acquisition.processing.analysis.retrieve_projection)",
        "description": f"per-pixel least-squares fit of the first harmonic of the phase-stepping "
                       f"curves; T = a0s/a0r, V = (a1s/a0s)/(a1r/a0r), dphi = phi_s - phi_r "
                       f"({PAPER}, eq. 1){'; each tile retrieved with its own set' if stitched else ''}",
        "period_um": stepping.get("period_um"), "steps": stepping.get("steps"),
        "positions_um": stepping.get("positions_um"), "dark_frames": stepping.get("dark_frames"),
        "exposure_s": exposure, "reference_exposure_s": reference_exposure or exposure,
        "reference_scale": (float(exposure) / float(reference_exposure)
                            if exposure and reference_exposure else 1.0),
        "normalisation": "the mean dark frame subtracted from every step (the reference with the "
                         "darks of its own exposure when it has them); the reference's a0 and a1 "
                         "scaled by reference_scale; sample over reference (eq. 1)",
        "saturation": "pixels at the largest value of the raw (unsigned) type in any step are NaN",
        "beam_fraction": BEAM_FRACTION, "beam_noise_factor": NOISE_FACTOR,
    }
    if stored:
        values["reference"] = "stored reference fit (low-dose protocol)"
        values["reference_fit_file"] = relative_path(stored["path"], path)
        names = {"exposure_s": "exposure_s", "kv": "voltage_kv", "ma": "current_ma",
                 "source_uid": "source_uid"}  # one field each: "kv" and "ma" alone would both be "reference_fit"
        values.update({f"reference_fit_{names[k]}": v for k, v in stored.items() if k in names})
        if stored.get("time") is not None:
            values["reference_fit_time"] = iso8601(float(stored["time"]))
    else:
        values["reference"] = ("each tile's latest measured reference set" if stitched else
                               "the measured reference set (raw frames with image_key 1)")
    if frames is not None:
        values["sample_positions_um"] = [x for _, (x, _) in sorted(frames.sample.items())]
        if frames.reference:
            values["reference_positions_um"] = [x for _, (x, _) in sorted(frames.reference.items())]
        values["dark_frames_used"] = len(frames.darks)
        values["reference_dark_frames_used"] = len(frames.reference_darks)
        gain = getattr(frames, "noise_gain", None)
        values["noise_model"] = ("none: the plain fitted amplitudes" if gain is None else
                                 f"Rice amplitudes, gain {gain} ADU, read noise {frames.read_noise} ADU")
    return values


def _stitch_parameters(start: dict, tiles: list[int], mosaic) -> dict:
    stage = [tile_stage_mm(start, t) for t in tiles]
    specs = {t["tile"]: t for t in start["mosaic"]["tiles"]}
    return {"function": "reconstruction.stitch",
            "description": "tiles placed at -stage/pixel, refined by phase correlation of the "
                           "overlaps, feathered; mu and eps averaged, dphi a circular mean",
            "tiles": list(tiles),
            "tile_files": [derived_name(start["uid"], t) for t in tiles],
            "tile_rows": [int(specs[t].get("row", -1)) for t in tiles],
            "tile_columns": [int(specs[t].get("column", -1)) for t in tiles],
            "offsets_px": np.asarray(mosaic.offsets_px, np.int64).reshape(-1, 2),
            "stage_x_mm": [s[0] for s in stage], "stage_y_mm": [s[1] for s in stage],
            "sample_pixel_mm": float(start["detector_pixel"]["sample_pixel_mm"]),
            "min_peak": stitching.MIN_PEAK, "stage_prior_weight": stitching.STAGE_PRIOR_WEIGHT,
            **_defaults(stitching.stitch, "refine", "feather_px"),
            **_defaults(stitching.refine_offsets, "max_shift_px", "min_overlap_px")}


def _segmentation_parameters() -> dict:
    mask = _defaults(segmentation.calcified_mask, "k_sigma", "background_px", "mu_threshold",
                     "eps_threshold")
    return {"function": "reconstruction.calcified_mask, reconstruction.label_clusters",
            "description": f"a pixel is calcified when mu = -ln T or eps = -ln V exceeds the local "
                           f"tissue background by k_sigma robust noise sigmas (or by mu_threshold / "
                           f"eps_threshold when set); a closing of closing_px merges grains; regions "
                           f"with fewer than min_pixels calcified pixels are dropped ({PAPER}, Methods)",
            "k_sigma": mask["k_sigma"], "background_px": mask["background_px"],
            "mu_threshold": "none" if mask["mu_threshold"] is None else mask["mu_threshold"],
            "eps_threshold": "none" if mask["eps_threshold"] is None else mask["eps_threshold"],
            **{f"{k}_px" if k == "closing" else k: v for k, v in
               _defaults(segmentation.label_clusters, "min_pixels", "closing").items()}}


def _normalisation_parameters() -> dict:
    return {"function": "reconstruction.surrounding_tissue",
            "description": f"Tc = T/Ts, Vc = V/Vs with Ts, Vs the medians over a ring of tissue "
                           f"around the cluster ({PAPER}, eq. 2)",
            **_defaults(normalisation.surrounding_tissue, "ring_px", "gap_px"),
            "min_ring_pixels": normalisation.MIN_RING_PIXELS}


def _classification_parameters() -> dict:
    return {"function": "reconstruction.classify_microtexture",
            "description": f"ratio = least-squares slope of mu against eps over the cluster's "
                           f"calcified pixels; class by {PAPER}, Table 1 (a gap goes to the nearest "
                           f"class); suspicious above suspicious_ratio (Fig. 5C)",
            "textures": list(TEXTURES),
            "ratio_lower": [float(TABLE_1[t][0]) for t in TEXTURES],
            "ratio_upper": [float(TABLE_1[t][1]) for t in TEXTURES],
            "suspicious_ratio": SUSPICIOUS_RATIO, "tolerance": microtexture.TOLERANCE,
            "min_pixels": microtexture.MIN_PIXELS}


