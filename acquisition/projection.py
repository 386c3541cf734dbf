"""From one projection's frames to its derived images and clusters: shared by the live
processor and the offline ``talbot-lau reconstruct`` (one code path, two callers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reconstruction import (ClusterAnalysis, Retrieval, Tile, analyse_clusters, calcified_mask,
                            label_clusters, retrieve, stitch)


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


class SetAssembler:
    """Sorts frames into dark, reference and sample sets as they come (live or from a
    record) and hands out each tile's complete set with the latest reference.

    A reference set that starts again (step 0 after a complete set) replaces the old one;
    a repeated sample set replaces its frames; the phase probes and other streams are
    ignored.  A projection is a mosaic of one tile (tile 0).
    """

    def __init__(self, positions_um, dark_frames: int, streams: dict):
        self.positions_um = np.asarray(positions_um, float)
        self.steps = len(self.positions_um)
        self.dark_frames = dark_frames
        self.streams = streams
        self.darks: list[np.ndarray] = []
        self.reference: dict[int, tuple[float, np.ndarray]] = {}
        self.tiles: dict[int, dict[int, tuple[float, np.ndarray]]] = {}
        self.done: set[int] = set()

    def add(self, stream: str, g2_um: float, frame: np.ndarray, tile: int = 0) -> list:
        """Add one frame; returns the (tile, ProjectionFrames) that became complete."""
        if stream == self.streams["dark"]:
            self.darks = (self.darks + [frame])[-max(self.dark_frames, 1):]
            return []
        if stream not in (self.streams["reference"], self.streams["sample"]):
            return []
        step = int(np.argmin(np.abs(self.positions_um - g2_um)))
        if stream == self.streams["reference"]:
            if step == 0 and len(self.reference) == self.steps:
                self.reference = {}
            self.reference[step] = (g2_um, frame)
            return []
        self.tiles.setdefault(tile, {})[step] = (g2_um, frame)
        return self.complete()

    def complete(self) -> list:
        """Every complete tile not handed out yet, each with a snapshot of its frames."""
        if len(self.reference) != self.steps:
            return []
        ready = []
        for tile, frames in self.tiles.items():
            if tile not in self.done and len(frames) == self.steps:
                self.done.add(tile)
                ready.append((tile, ProjectionFrames(list(self.darks), dict(self.reference), dict(frames))))
        return ready


@dataclass
class ProjectionResult:
    retrieval: Retrieval
    """A Retrieval or a stitched Mosaic (both have T, V, dphi, mu, eps)."""
    labels: np.ndarray
    clusters: list[ClusterAnalysis]


def retrieve_projection(frames: ProjectionFrames, period_um: float) -> Retrieval:
    """T, V and dphi of one set, with the measured G2 positions and the mean dark."""
    dark = np.mean(frames.darks, axis=0) if frames.darks else None
    ref_x, ref = ProjectionFrames.stack(frames.reference)
    smp_x, smp = ProjectionFrames.stack(frames.sample)
    return retrieve(smp, ref, dark, steps=smp_x, reference_steps=ref_x, period=period_um)


def classify_image(result) -> ProjectionResult:
    """Segment and classify the clusters of a retrieved projection or a stitched mosaic."""
    mask = calcified_mask(result.transmission, result.dark_field)
    labels = label_clusters(mask)
    clusters = analyse_clusters(result.transmission, result.dark_field, labels, mask=mask)
    return ProjectionResult(result, labels, clusters)


def analyse_projection(frames: ProjectionFrames, period_um: float) -> ProjectionResult:
    """Retrieve T, V, dphi with the measured G2 positions, then segment and classify."""
    return classify_image(retrieve_projection(frames, period_um))


def analyse_mosaic(retrievals: dict[int, Retrieval], mosaic: dict, sample_pixel_mm: float) -> ProjectionResult:
    """Stitch retrieved tiles (tile index -> retrieval) at the stage positions of the start
    document's ``mosaic["tiles"]`` (x_mm, y_mm), then segment and classify the mosaic."""
    stage = {t["tile"]: (t["x_mm"], t["y_mm"]) for t in mosaic["tiles"]}
    tiles = [Tile(r.transmission, r.dark_field, r.differential_phase, stage[k])
             for k, r in sorted(retrievals.items())]
    return classify_image(stitch(tiles, sample_pixel_mm))
