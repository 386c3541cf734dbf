"""``talbot-lau study``: accuracy of the mu/eps classification against dose, as one command.

For each tissue (a :func:`simulators.physics.specimen`, e.g. ``breast45``, ``paraffin10``)
and each dose (mean glandular dose, mGy, labelled as the paper does: 72 mGy for 9 steps x
9 s at 40 kVp / 70 mA, Scherer et al. 2016, Methods "Dose") one *task* simulates the
protocol a lab runs, with the physics engine's ``simulate_frame`` and distinct seeds:
dark frames, a reference stepping scan at the configured exposure per step (it costs the
patient no dose), and the sample scan at the exposure per step that gives the dose.  The
frames go through the live processor's own functions (``ProjectionFrames`` ->
``retrieve_projection`` -> ``classify_image``), the detections are paired with the true
clusters inside a distance gate (:mod:`acquisition.truth_matching`) and every true
cluster's measured mu/eps (R) is compared with its noise-free R (``sample_signals`` of
the same specimen, the true cluster's calcified pixels, the same classification).

The tasks run on a process pool (``workers``, default the cores) or, given a
``scheduler`` address, on a dask.distributed cluster (the same task function, through
``Client.get_executor()``).  Every task is a pure function of its arguments and the seed.
The summary per tissue and dose (:func:`summarise`) and the files (report.json,
report.md, PNG plots: :mod:`acquisition.study_report`) come after.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config, load_config
from .errors import TalbotLauError
from .truth_matching import (
    DEFAULT_GATE_MM,
    Detection,
    pixel_centres_mm,
    score_detections,
)

DEFAULT_DOSES_MGY = (72.0, 36.0, 18.0, 9.0, 4.5, 2.5)
DEFAULT_TISSUES = ("breast45", "paraffin10")
DEFAULT_CLUSTERS = 40
MARGIN_MM = 4.0
"""Tissue (mm at the sample) read out around the outermost grains: room for the tissue
ring of every cluster and for the local background of the segmentation."""
SUSPICIOUS_CLASSES = ("pleomorphic", "coarse")
"""True classes counted as suspicious of malignancy: above the paper's cut-off mu/eps = 0.33
(Table 1; Results, Fig. 5C)."""
MALIGNANT_FRACTION = {"ultra-fine": 0.12, "fine": 0.37, "pleomorphic": 0.68, "coarse": 0.69}
"""Fraction of the paper's biopsied clusters of each class that were malignant (Scherer et
al. 2016, Results, "Microtexture of microcalcifications as a potential indicator")."""


class StudyArgumentError(TalbotLauError, ValueError):
    """A study argument is wrong; the message starts with the option's name."""


@dataclass(frozen=True)
class StudyTask:
    """One tissue at one dose: everything a worker needs (picklable)."""

    tissue: str
    dose_mgy: float
    clusters: int
    seed: int
    tissue_index: int
    dose_index: int
    config: Config
    gate_mm: float = DEFAULT_GATE_MM


# -- arguments ----------------------------------------------------------------------------


def parse_list(text: str | Sequence, option: str) -> list[str]:
    """``"a,b"`` (or a sequence) as a list of stripped items; empty items refused."""
    items = [str(s).strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if not items or any(not s for s in items):
        raise StudyArgumentError(f"{option}: give a comma-separated list without empty items, got {text!r}")
    return items


def check_arguments(doses, tissues, clusters, seed, workers, config: Config) -> tuple[list[float], list[str]]:
    """The doses (mGy) and tissue names, checked; raises :class:`StudyArgumentError`
    naming the option of the first wrong argument before any work is done."""
    values = []
    for item in parse_list(doses, "--doses"):
        try:
            value = float(item)
        except ValueError:
            raise StudyArgumentError(f"--doses: {item!r} is not a number of mGy") from None
        if not math.isfinite(value) or value <= 0:
            raise StudyArgumentError(f"--doses: every dose must be a positive number of mGy, got {item}")
        values.append(value)
    if len(set(values)) != len(values):
        raise StudyArgumentError(f"--doses: a dose is given twice ({doses})")
    scan, dose_cfg = config.instrument.scan, config.instrument.dose
    if max(values) > dose_cfg.budget_mgy:
        raise StudyArgumentError(f"--doses: {max(values):g} mGy is above the configured dose "
                                 f"budget of {dose_cfg.budget_mgy:g} mGy per projection")
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or clusters < 1:
        raise StudyArgumentError(f"--clusters must be a positive whole number, got {clusters!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StudyArgumentError(f"--seed must be a whole number >= 0, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise StudyArgumentError(f"--workers must be a positive whole number, got {workers!r}")
    names = parse_list(tissues, "--tissue")
    if len(set(names)) != len(names):
        raise StudyArgumentError(f"--tissue: a tissue is given twice ({tissues})")
    for name in names:
        try:
            phantom = _specimen(name, int(clusters), int(seed))
        except ValueError as err:
            raise StudyArgumentError(f"--tissue: {err}") from None
        try:
            check_field(config.setup, phantom, tuple(config.instrument.stage.sample_position_mm))
        except ValueError as err:
            raise StudyArgumentError(f"--clusters: {clusters} clusters of {name}: {err}") from None
        longest = max(values) / scan.steps / _dose_rate(config, _breast_thickness_mm(phantom))
        if longest > scan.max_exposure_s:
            raise StudyArgumentError(
                f"--doses: {max(values):g} mGy needs {longest:.1f} s per step for {name}, more than "
                f"the configured scan.max_exposure_s = {scan.max_exposure_s:g} s")
    return values, names


def check_field(setup, phantom, stage_mm) -> None:
    """A ValueError unless every grain of ``phantom`` lies inside the gratings' field (where
    there are fringes) and on the panel."""
    from simulators.physics.interferometer import field_of_view_mm

    magnification = setup.geometry.magnification
    height, width = field_of_view_mm(setup.geometry, setup.gratings)
    det = setup.detector
    half_x = min(width, det.columns * det.pixel_um / 1000.0) / 2 / magnification
    half_y = min(height, det.rows * det.pixel_um / 1000.0) / 2 / magnification
    grains = [g for c in phantom.clusters for g in c.grains]
    reach_x = max((abs(g.x_mm + stage_mm[0]) + g.radius_um / 1000.0 for g in grains), default=0.0)
    reach_y = max((abs(g.y_mm + stage_mm[1]) + g.radius_um / 1000.0 for g in grains), default=0.0)
    if reach_x > half_x or reach_y > half_y:
        raise ValueError(f"the grains reach +-{reach_x:.1f} mm x +-{reach_y:.1f} mm at the sample, beyond "
                         f"the field with fringes on the panel, +-{half_x:.1f} mm x +-{half_y:.1f} mm")


# -- one task -----------------------------------------------------------------------------


def _specimen(name: str, clusters: int, seed: int):
    from simulators.physics import specimen

    return _cached_specimen(specimen, name, clusters, seed)


@functools.lru_cache(maxsize=4)
def _cached_specimen(factory, name: str, clusters: int, seed: int):
    return factory(name, clusters=clusters, seed=seed)


def _breast_thickness_mm(phantom) -> float | None:
    """The compressed breast thickness (mm) that labels the dose; None (the paper's
    reference breast) for a paraffin block or a phantom."""
    slab = phantom.slab
    return float(slab.thickness_mm) if slab is not None and slab.embedding == "native" else None


def _dose_rate(config: Config, breast_thickness_mm: float | None) -> float:
    """Mean glandular dose rate (mGy/s) at the configured tube settings."""
    from .dose import dose_rate_mgy_per_s

    tube = config.instrument.tube
    return dose_rate_mgy_per_s(config.instrument.dose, tube.kv, tube.ma, breast_thickness_mm)


def covering_region(setup, phantom, stage_mm, margin_mm: float = MARGIN_MM) -> tuple[int, int, int, int]:
    """The smallest detector region (first row, first column, rows, columns; whole binning
    blocks) that reads out every grain of ``phantom`` plus ``margin_mm`` (mm at the sample,
    less at the panel's edge); a ValueError if a grain lies off the panel."""
    det, magnification = setup.detector, setup.geometry.magnification
    grains = [g for c in phantom.clusters for g in c.grains]
    if not grains:
        raise ValueError("the specimen has no clusters")
    pitch = det.pixel_um / 1000.0

    def index(sample_mm, stage, size):  # fractional pixel index of a sample position
        return (sample_mm + stage) * magnification / pitch + size / 2 - 0.5

    def span(low_mm, high_mm, stage, size, axis):
        low, high = index(low_mm, stage, size), index(high_mm, stage, size)
        if low < 0 or high > size - 1:
            raise ValueError(f"the specimen's grains reach {low_mm:.1f} to {high_mm:.1f} mm along {axis} "
                             f"at the sample, beyond the panel's {size} pixels")
        pad = margin_mm * magnification / pitch
        return max(0, math.floor(low - pad)), min(size, math.ceil(high + pad) + 1)

    c0, c1 = span(min(g.x_mm - g.radius_um / 1000.0 for g in grains),
                  max(g.x_mm + g.radius_um / 1000.0 for g in grains), stage_mm[0], det.columns, "x")
    r0, r1 = span(min(g.y_mm - g.radius_um / 1000.0 for g in grains),
                  max(g.y_mm + g.radius_um / 1000.0 for g in grains), stage_mm[1], det.rows, "y")
    b = det.binning
    rows, cols = -(-(r1 - r0) // b) * b, -(-(c1 - c0) // b) * b
    return min(r0, det.rows - rows), min(c0, det.columns - cols), rows, cols


def imaged_area_cm2(setup, phantom, stage_mm) -> float:
    """Area (cm^2 at the sample) of the specimen inside the read-out region and the
    gratings' field: where false clusters can appear."""
    from simulators.physics.interferometer import field_of_view_mm

    y, x = pixel_centres_mm(setup, stage_mm)
    inside = np.ones((y.size, x.size), dtype=bool)
    if phantom.slab is not None:
        inside &= (np.abs(y)[:, None] <= phantom.slab.height_mm / 2) & (np.abs(x)[None, :] <= phantom.slab.width_mm / 2)
    height, width = field_of_view_mm(setup.geometry, setup.gratings)
    magnification = setup.geometry.magnification
    inside &= (np.abs(y + stage_mm[1])[:, None] * magnification <= height / 2)
    inside &= (np.abs(x + stage_mm[0])[None, :] * magnification <= width / 2)
    pixel_mm = setup.detector.pixel_um * setup.detector.binning / 1000.0 / magnification
    return float(inside.sum() * pixel_mm**2 / 100.0)


def task_setup(task: StudyTask, phantom):
    """The configured setup with the detector region that covers the specimen."""
    config = task.config
    stage = tuple(config.instrument.stage.sample_position_mm)
    setup = config.setup
    region = covering_region(setup, phantom, stage)
    return dataclasses.replace(setup, detector=dataclasses.replace(setup.detector, region=region))


def simulate_projection(setup, phantom, config: Config, exposure_s: float, seeds):
    """The frames a lab takes: darks, a reference scan (no sample, at the configured
    exposure per step), a sample scan at ``exposure_s`` per step, in that order (the
    panel's lag and the recorded clock carry over), as :class:`ProjectionFrames`; ``seeds``
    gives each frame's noise seed (2 x dark_frames + 2 x steps + LAG_FLUSH_FRAMES of them)."""
    from simulators.physics import TubeState, simulate_frame

    from .plans.stubs import LAG_FLUSH_FRAMES
    from .processing.analysis import ProjectionFrames

    scan, tube_cfg = config.instrument.scan, config.instrument.tube
    stage = tuple(config.instrument.stage.sample_position_mm)
    beam = TubeState(kv=tube_cfg.kv, ma=tube_cfg.ma)
    closed = dataclasses.replace(beam, shutter_open=False)
    period = config.setup.gratings.g2_period_um
    positions = config.instrument.g2.start_um + np.arange(scan.steps) * period / scan.steps
    reference_exposure_s = scan.exposure_s
    seeds = iter(seeds)
    clock, previous = 0.0, None

    def take(specimen, tube, g2_um, seconds):
        nonlocal clock, previous
        frame = simulate_frame(setup, specimen, g2_um=float(g2_um), stage_mm=stage, tube=tube,
                               exposure_s=seconds, seed=int(next(seeds)), time_s=clock,
                               previous_frame=previous)
        clock, previous = clock + seconds, frame
        return frame

    # as darkfield_projection: darks at the sample's exposure, darks at the reference's
    # (when it differs: dark current grows with exposure), the reference scan, the lag flush
    # of the plan's low-dose protocol (the long reference frames' lag read out), the sample scan
    low_dose = reference_exposure_s != exposure_s
    darks = [take(None, closed, positions[0], exposure_s) for _ in range(scan.dark_frames)]
    reference_darks = ([take(None, closed, positions[0], reference_exposure_s) for _ in range(scan.dark_frames)]
                       if low_dose else [])
    reference = {k: (float(x), take(None, beam, x, reference_exposure_s)) for k, x in enumerate(positions)}
    for _ in range(LAG_FLUSH_FRAMES if low_dose else 0):
        take(None, closed, positions[0], exposure_s)
    sample = {k: (float(x), take(phantom, beam, x, exposure_s)) for k, x in enumerate(positions)}
    return ProjectionFrames(darks, reference, sample, reference_darks=reference_darks,
                            exposure_s=exposure_s, reference_exposure_s=reference_exposure_s)


def true_ratios(setup, phantom, config: Config, correction=None, stage_mm=None) -> dict[int, dict]:
    """Noise-free R of every true cluster (index -> ratio, texture): the engine's
    ``sample_signals`` over the cluster's calcified pixels (``truth_labels``), classified
    with the same functions (and tissue correction) as a measured cluster."""
    from reconstruction import analyse_clusters, correct_clusters
    from simulators.physics import TubeState, sample_signals, truth_labels

    stage = tuple(config.instrument.stage.sample_position_mm if stage_mm is None else stage_mm)
    tube = TubeState(kv=config.instrument.tube.kv, ma=config.instrument.tube.ma)
    signals = sample_signals(setup, phantom, stage, tube)
    labels = truth_labels(setup, phantom, stage)
    clusters = correct_clusters(
        analyse_clusters(signals.transmission, signals.dark_field, labels, mask=labels > 0), correction)
    return {c.label - 1: {"ratio": c.ratio, "texture": c.texture} for c in clusters}


def run_task(task: StudyTask) -> dict:
    """Simulate, retrieve, classify and match one tissue at one dose (a pure function of
    ``task``): the true clusters with their match, and the false clusters."""
    from .plans.stubs import LAG_FLUSH_FRAMES
    from .processing.analysis import classify_image, retrieve_projection
    from .storage.tissue_calibration_file import tissue_correction

    started = time.perf_counter()
    config = task.config
    phantom = _specimen(task.tissue, task.clusters, task.seed)
    setup = task_setup(task, phantom)
    stage = tuple(config.instrument.stage.sample_position_mm)
    steps = config.instrument.scan.steps
    exposure_s = task.dose_mgy / steps / _dose_rate(config, _breast_thickness_mm(phantom))
    # the noise seeds follow from the seed, the tissue and the dose, not their place in the
    # lists: a tissue at a dose gives the same frames in any study
    sequence = np.random.SeedSequence([task.seed, zlib.crc32(task.tissue.encode()),
                                       round(task.dose_mgy * 1e6)])
    seeds = sequence.generate_state(2 * config.instrument.scan.dark_frames + 2 * steps + LAG_FLUSH_FRAMES,
                                     np.uint32)
    frames = simulate_projection(setup, phantom, config, exposure_s, seeds)
    correction = tissue_correction(config)  # as the processor: the configured calibration
    result = classify_image(retrieve_projection(frames, config.setup.gratings.g2_period_um), correction)

    noise_free = true_ratios(setup, phantom, config, correction)
    truth_rows, false_rows = score_detections(setup, phantom, stage,
                                              [Detection.from_analysis(c) for c in result.clusters],
                                              noise_free, task.gate_mm)
    return {"tissue": task.tissue, "dose_mgy": task.dose_mgy, "tissue_index": task.tissue_index,
            "dose_index": task.dose_index, "exposure_s": exposure_s,
            "reference_exposure_s": frames.reference_exposure_s, "region": list(setup.detector.region),
            "area_cm2": imaged_area_cm2(setup, phantom, stage), "truth": truth_rows,
            "false": false_rows, "seconds": time.perf_counter() - started}


# -- the summary --------------------------------------------------------------------------


def _fraction(count: float, total: int) -> float | None:
    return None if total == 0 else float(count) / total


def malignancy_rates(classes, flagged) -> dict:
    """Expected sensitivity and specificity for *malignancy* of flagging the clusters
    ``flagged`` (booleans) when a cluster of true class c is malignant with the paper's
    probability ``MALIGNANT_FRACTION[c]``."""
    p = np.array([MALIGNANT_FRACTION[c] for c in classes])
    flagged = np.asarray(flagged, dtype=bool)
    malignant, benign = p.sum(), (1 - p).sum()
    return {"sensitivity": float(p[flagged].sum() / malignant) if malignant else None,
            "specificity": float((1 - p)[~flagged].sum() / benign) if benign else None}


def summarise(task_result: dict) -> dict:
    """One report row from a task's result: detection, classification, diagnosis."""
    from reconstruction.roc import roc_curve

    everything = task_result["truth"]
    n_all = len(everything)
    found_all = sum(t["detected"] for t in everything)
    # a realised cluster in none of Table 1's classes (a descriptor gap) has no true class
    # to get right: it counts for detection only
    truth = [t for t in everything if t["true_class"] in MALIGNANT_FRACTION]
    n = len(truth)
    detected = [t for t in truth if t["detected"]]
    correct = sum(t["measured_class"] == t["true_class"] for t in detected)
    suspicious = np.array([t["true_class"] in SUSPICIOUS_CLASSES for t in truth])
    flagged = np.array([t["detected"] and t["suspicious"] for t in truth])
    ratios = [t["ratio"] for t in detected]
    auc = None
    if suspicious.any() and not suspicious.all():
        floor = (min(ratios) if ratios else 0.0) - 1.0  # misses rank below every detection
        scores = [t["ratio"] if t["detected"] else floor for t in truth]
        auc = roc_curve(scores, suspicious).auc
    per_class = {}
    for texture in MALIGNANT_FRACTION:
        members = [t for t in truth if t["true_class"] == texture]
        if not members:
            continue
        measured = np.array([t["ratio"] for t in members if t["detected"]], dtype=float)
        pairs = np.array([(t["ratio"], t["true_ratio"]) for t in members
                          if t["detected"] and t["true_ratio"] is not None], dtype=float).reshape(-1, 2)
        true = np.array([t["true_ratio"] for t in members if t["true_ratio"] is not None], dtype=float)
        per_class[texture] = {
            "clusters": len(members), "detected": int(measured.size),
            "mean": float(measured.mean()) if measured.size else None,
            "sd": float(measured.std(ddof=1)) if measured.size > 1 else None,
            "true_mean": float(true.mean()) if true.size else None,
            "bias": float((pairs[:, 0] - pairs[:, 1]).mean()) if pairs.size else None,
        }
    by_chemistry = {}
    for chemistry in sorted({t["chemistry"] for t in truth}):
        members = [t for t in truth if t["chemistry"] == chemistry]
        by_chemistry[chemistry] = {
            "clusters": len(members),
            "class_correct": _fraction(sum(t["measured_class"] == t["true_class"] for t in members),
                                       len(members)),
            "noise_free_class_correct": _fraction(
                sum(t["true_ratio_class"] == t["true_class"] for t in members), len(members))}
    classes = [t["true_class"] for t in truth]
    perfect = malignancy_rates(classes, suspicious)
    measured = malignancy_rates(classes, flagged)
    noise_free = [t for t in truth if t["true_ratio_class"] is not None]
    return {
        "tissue": task_result["tissue"],
        "dose_mgy": task_result["dose_mgy"],
        "clusters": n_all,
        "detected": _fraction(found_all, n_all),
        "class_correct": _fraction(correct, n),
        "false_per_cm2": len(task_result["false"]) / task_result["area_cm2"],
        "sensitivity": _fraction(int((flagged & suspicious).sum()), int(suspicious.sum())),
        "specificity": _fraction(int((~flagged & ~suspicious).sum()), int((~suspicious).sum())),
        "auc": auc,
        "misses": n_all - found_all,
        "without_class": n_all - n,
        "false_clusters": len(task_result["false"]),
        "area_cm2": task_result["area_cm2"],
        "exposure_s_per_step": task_result["exposure_s"],
        "reference_exposure_s_per_step": task_result["reference_exposure_s"],
        "noise_free_class_correct": _fraction(
            sum(t["true_ratio_class"] == t["true_class"] for t in noise_free), n),
        "r_per_class": per_class,
        "by_chemistry": by_chemistry,
        "malignancy_ceiling": perfect,
        "malignancy_measured": measured,
        "region": task_result["region"],
        "seconds": task_result["seconds"],
    }


# -- running ------------------------------------------------------------------------------


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_tasks(tasks: list[StudyTask], *, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True) -> list[dict]:
    """:func:`run_task` over ``tasks`` on a process pool of ``workers`` (1: in this
    process) or on the dask.distributed scheduler at ``scheduler``; results in task order."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="study", unit="task", disable=not progress)
    results = {}
    try:
        if scheduler is None and (workers or default_workers()) == 1:
            for task in tasks:
                results[(task.tissue_index, task.dose_index)] = run_task(task)
                bar.update()
        else:
            with _executor(workers, scheduler) as executor:
                futures = [executor.submit(run_task, task) for task in tasks]
                for future in concurrent.futures.as_completed(futures):
                    result = future.result()
                    results[(result["tissue_index"], result["dose_index"])] = result
                    bar.update()
    finally:
        bar.close()
    return [results[(t.tissue_index, t.dose_index)] for t in tasks]


class _executor:
    """A process pool, or a dask.distributed cluster's executor (with its client)."""

    def __init__(self, workers: int | None, scheduler: str | None):
        self.client = None
        if scheduler is None:
            # spawned, not forked: a fork of a process with running threads (a session's
            # Channel Access clients, a test run's IOCs) can inherit a held lock and hang
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers or default_workers(), mp_context=multiprocessing.get_context("spawn"))
        else:
            try:
                from distributed import Client
            except ImportError as err:
                raise ImportError("--scheduler needs dask.distributed: pip install 'talbot-lau[study]'") from err
            self.client = Client(scheduler)
            self.executor = self.client.get_executor()

    def __enter__(self):
        return self.executor

    def __exit__(self, *exc):
        self.executor.shutdown(wait=True)
        if self.client is not None:
            self.client.close()


def run_study(out_dir: str | Path, *, doses=DEFAULT_DOSES_MGY, tissues=DEFAULT_TISSUES,
              clusters: int = DEFAULT_CLUSTERS, seed: int = 1, workers: int | None = None,
              scheduler: str | None = None, gate_mm: float = DEFAULT_GATE_MM,
              config: Config | None = None, progress: bool = True) -> dict:
    """Run the study and write report.json, report.md and the plots into ``out_dir``;
    returns the report (the content of report.json)."""
    from .storage.tissue_calibration_file import (
        calibration_record,
        configured_calibration,
    )
    from .study_report import write_report

    config = config or load_config()
    dose_values, names = check_arguments(doses, tissues, clusters, seed, workers, config)
    if not math.isfinite(gate_mm) or gate_mm <= 0:
        raise StudyArgumentError(f"--gate-mm must be a positive distance in mm, got {gate_mm}")
    started = time.perf_counter()
    tasks = [StudyTask(name, dose, int(clusters), int(seed), i, j, config, float(gate_mm))
             for i, name in enumerate(names) for j, dose in enumerate(dose_values)]
    results = run_tasks(tasks, workers=workers, scheduler=scheduler, progress=progress)
    report = {
        "parameters": {"doses_mgy": dose_values, "tissues": names, "clusters": int(clusters),
                       "seed": int(seed), "gate_mm": float(gate_mm),
                       "workers": None if scheduler else (workers or default_workers()),
                       "scheduler": scheduler, "config_digest": config.digest,
                       "steps": config.instrument.scan.steps,
                       "dark_frames": config.instrument.scan.dark_frames,
                       "kv": config.instrument.tube.kv, "ma": config.instrument.tube.ma,
                       "reference_exposure_s": config.instrument.scan.exposure_s,
                       "tissue_calibration": calibration_record(configured_calibration(config))},
        "versions": _versions(),
        "wall_seconds": time.perf_counter() - started,
        "rows": [summarise(r) for r in results],
        "clusters": [{"tissue": r["tissue"], "dose_mgy": r["dose_mgy"], **t}
                     for r in results for t in r["truth"]],
        "false_clusters": [{"tissue": r["tissue"], "dose_mgy": r["dose_mgy"], **f}
                           for r in results for f in r["false"]],
    }
    write_report(report, Path(out_dir))
    return report


def _versions() -> dict:
    from importlib import metadata

    from .storage.nexus import software_version

    versions = {"talbot-lau": software_version()}
    for package in ("numpy", "scipy", "spekpy", "xraydb"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
