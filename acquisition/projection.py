"""From one projection's frames to its derived images and clusters: shared by the live
processor and the offline ``talbot-lau reconstruct`` (one code path, two callers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reconstruction import ClusterAnalysis, Retrieval, analyse_clusters, retrieve, segment_clusters


@dataclass
class ProjectionFrames:
    """The frames of one projection: darks, and (G2 position um, frame) per stepping set."""

    darks: list[np.ndarray]
    reference: dict[int, tuple[float, np.ndarray]]
    sample: dict[int, tuple[float, np.ndarray]]

    @staticmethod
    def stack(frames: dict[int, tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """(G2 positions, frames) in step order."""
        order = sorted(frames)
        return np.array([frames[k][0] for k in order]), np.stack([frames[k][1] for k in order])


@dataclass
class ProjectionResult:
    retrieval: Retrieval
    labels: np.ndarray
    clusters: list[ClusterAnalysis]


def analyse_projection(frames: ProjectionFrames, period_um: float) -> ProjectionResult:
    """Retrieve T, V, dphi with the measured G2 positions, then segment and classify."""
    dark = np.mean(frames.darks, axis=0) if frames.darks else None
    ref_x, ref = ProjectionFrames.stack(frames.reference)
    smp_x, smp = ProjectionFrames.stack(frames.sample)
    result = retrieve(smp, ref, dark, steps=smp_x, reference_steps=ref_x, period=period_um)
    labels = segment_clusters(result.transmission, result.dark_field)
    clusters = analyse_clusters(result.transmission, result.dark_field, labels)
    return ProjectionResult(result, labels, clusters)
