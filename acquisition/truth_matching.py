"""Pair measured clusters with the simulator's true clusters inside a distance gate.

Each detection is paired with at most one true cluster and each true cluster with at most
one detection, by the assignment that minimises the summed distance (the Hungarian method,
``scipy.optimize.linear_sum_assignment``) among the pairs closer than the gate.  A
detection left without a true cluster is a *false cluster*; a true cluster left without a
detection is a *miss*.  Positions are in mm at the sample plane.

The default gate, 2.0 mm: the simulated clusters spread their grains over discs of
1.5 mm radius, so a detection that caught only part of a cluster still has its
centroid inside the cluster; clusters sit 9 mm apart, so a gate below half of that can
never pair a detection with the neighbour of its cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_GATE_MM = 2.0
"""Largest distance (mm at the sample) between a detection and the true cluster it is
paired with."""


@dataclass(frozen=True)
class Matching:
    """The outcome of :func:`match_truth`.

    ``pairs``: (truth index, detection index, distance mm) for every matched pair, in truth
    order; ``misses``: indices of true clusters without a detection; ``false``: indices of
    detections without a true cluster."""

    pairs: tuple[tuple[int, int, float], ...]
    misses: tuple[int, ...]
    false: tuple[int, ...]
    gate_mm: float

    def detection_of(self, truth: int) -> int | None:
        """The detection paired with true cluster ``truth``, or None (a miss)."""
        return next((d for t, d, _ in self.pairs if t == truth), None)


def _positions(points, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} must be a list of (x, y) positions in mm, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite positions")
    return array


def match_truth(truth_mm, detections_mm, gate_mm: float = DEFAULT_GATE_MM) -> Matching:
    """Pair detections with true clusters closer than ``gate_mm`` (mm).

    Parameters
    ----------
    truth_mm, detections_mm : array_like
        (n, 2) positions (mm at the sample) of the true clusters and of the detections.
    gate_mm : float
        Largest distance of a pair (mm), > 0.
    """
    gate = float(gate_mm)
    if not np.isfinite(gate) or gate <= 0:
        raise ValueError(f"gate_mm must be a positive distance in mm, got {gate_mm}")
    truth = _positions(truth_mm, "truth_mm")
    found = _positions(detections_mm, "detections_mm")
    distance = np.hypot(truth[:, None, 0] - found[None, :, 0], truth[:, None, 1] - found[None, :, 1])
    pairs = []
    if distance.size:
        # pairs beyond the gate cost more than any set of pairs inside it could
        cost = np.where(distance <= gate, distance, gate * (1 + truth.shape[0] + found.shape[0]))
        rows, cols = linear_sum_assignment(cost)
        pairs = [(int(t), int(d), float(distance[t, d])) for t, d in zip(rows, cols)
                 if distance[t, d] <= gate]
    matched_truth = {t for t, _, _ in pairs}
    matched_found = {d for _, d, _ in pairs}
    return Matching(
        pairs=tuple(sorted(pairs)),
        misses=tuple(i for i in range(truth.shape[0]) if i not in matched_truth),
        false=tuple(i for i in range(found.shape[0]) if i not in matched_found),
        gate_mm=gate,
    )


# -- scoring one projection against the phantom's truth (the study and the demo) ----------


@dataclass(frozen=True)
class Detection:
    """A measured cluster as the scoring needs it: centroid (row, col) in pixels of the
    frame, mu/eps, Table 1 class, suspicious flag and calcified pixels."""

    centroid_px: tuple[float, float]
    ratio: float
    texture: str
    suspicious: bool
    n_pixels: int

    @classmethod
    def from_row(cls, row: dict) -> Detection:
        """From a ``clusters`` event's data (the live processor's rows)."""
        return cls((float(row["centroid_row"]), float(row["centroid_col"])), float(row["ratio"]),
                   row["texture"], bool(row["suspicious"]), int(row["n_pixels"]))

    @classmethod
    def from_analysis(cls, cluster) -> Detection:
        """From a :class:`reconstruction.ClusterAnalysis`."""
        return cls(tuple(map(float, cluster.centroid_px)), float(cluster.ratio), cluster.texture,
                   bool(cluster.suspicious), int(cluster.n_pixels))


def pixel_centres_mm(setup, stage_mm) -> tuple[np.ndarray, np.ndarray]:
    """Sample-plane coordinates (mm) of the centres of a frame's (binned) pixels: (y, x)."""
    from simulators.physics.scene import pixel_grid

    y_det, x_det = pixel_grid(setup)
    b = setup.detector.binning
    y_det = y_det[:y_det.size // b * b].reshape(-1, b).mean(axis=1)
    x_det = x_det[:x_det.size // b * b].reshape(-1, b).mean(axis=1)
    magnification = setup.geometry.magnification
    return y_det / magnification - stage_mm[1], x_det / magnification - stage_mm[0]


def to_sample_mm(centres, row: float, col: float) -> tuple[float, float]:
    """(x, y) mm at the sample of a fractional pixel position (row, col); ``centres`` from
    :func:`pixel_centres_mm`."""
    y, x = centres
    return float(np.interp(col, np.arange(x.size), x)), float(np.interp(row, np.arange(y.size), y))


def score_detections(setup, phantom, stage_mm, detections, noise_free: dict,
                     gate_mm: float = DEFAULT_GATE_MM) -> tuple[list[dict], list[dict]]:
    """Every true cluster of ``phantom`` with its match among ``detections`` (a list of
    :class:`Detection`), and the false clusters: (truth rows, false rows).

    A true cluster is in the field when the engine's truth labels hold it; its position is
    the centroid of its labelled pixels (mm at the sample), so a cluster cut by the field's
    edge is matched where it is seen.  ``noise_free``: cluster index -> {"ratio",
    "texture"}, what a noise-free measurement gives (``acquisition.study.true_ratios``).
    Truth rows of clusters outside the field have ``x_mm`` None."""
    from scipy import ndimage

    from simulators.physics import truth_labels

    centres = pixel_centres_mm(setup, stage_mm)
    labels = truth_labels(setup, phantom, stage_mm)
    present = [i for i in range(len(phantom.clusters)) if (labels == i + 1).any()]
    truth_px = ndimage.center_of_mass(labels > 0, labels, [i + 1 for i in present]) if present else []
    truth_mm = [to_sample_mm(centres, *p) for p in truth_px]
    found_mm = [to_sample_mm(centres, *d.centroid_px) for d in detections]
    matching = match_truth(truth_mm, found_mm, gate_mm)
    truth_rows = []
    for index, cluster in enumerate(phantom.clusters):
        row = {"cluster": cluster.name, "true_class": cluster.texture, "chemistry": cluster.chemistry,
               "x_mm": None, "y_mm": None, "true_ratio": noise_free.get(index, {}).get("ratio"),
               "true_ratio_class": noise_free.get(index, {}).get("texture"),
               "detected": False, "ratio": None, "measured_class": None, "suspicious": False,
               "distance_mm": None, "pixels": None}
        if index in present:
            slot = present.index(index)
            row["x_mm"], row["y_mm"] = (round(v, 3) for v in truth_mm[slot])
            detection = matching.detection_of(slot)
            if detection is not None:
                found = detections[detection]
                distance = next(d for t, f, d in matching.pairs if t == slot)
                row.update(detected=True, ratio=found.ratio, measured_class=found.texture,
                           suspicious=found.suspicious, distance_mm=round(distance, 3),
                           pixels=found.n_pixels)
        truth_rows.append(row)
    false_rows = [{"x_mm": round(found_mm[i][0], 3), "y_mm": round(found_mm[i][1], 3),
                   "ratio": detections[i].ratio, "measured_class": detections[i].texture,
                   "pixels": detections[i].n_pixels} for i in matching.false]
    return truth_rows, false_rows
