"""From one projection's frames to its derived images and clusters: shared by the live
processor and the offline ``talbot-lau reconstruct`` (one code path, two callers).

Frames may be given as arrays or as :class:`acquisition.storage.frames.FrameRef` s, read by
:meth:`ProjectionFrames.load`.  Before any retrieval :func:`check_beam` makes sure every
reference and sample frame saw the beam (and no dark frame did); a set that did not is
refused with :class:`NoBeamError`, whose message names the set and the frame:

1. the frame's event says the shutter was closed (``<tube>_shutter`` = 0; the live
   processor and the run record keep that reading with each frame), or
2. the frame's mean above the dark level (the mean of the dark frames) is below
   ``BEAM_FRACTION`` (25 %) of its set's open-beam level, the median of those excesses
   over the set's frames.  Phase stepping moves a frame's mean by at most the
   visibility (+-30 % here), a closed shutter leaves the dark level plus the panel's lag
   (about 1 % of the previous frame), so 25 % separates them with margin either way; or
3. the set's open-beam level is below ``NOISE_FACTOR`` (10) times the dark frames' pixel
   noise (1.4826 x the median absolute deviation, blind to hot pixels): the whole set was
   dark.  Without dark frames the dark level is taken as 0 and check 3 is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reconstruction import (
    ClusterAnalysis,
    Retrieval,
    SteppingFit,
    Tile,
    TissueCorrection,
    analyse_clusters,
    calcified_mask,
    correct_clusters,
    fit_stepping,
    label_clusters,
    retrieve,
    stitch,
)

from ..errors import TalbotLauError
from ..storage.frames import FrameRef

BEAM_FRACTION = 0.25
"""A reference or sample frame saw the beam if its mean above the dark level is at least
this fraction of its set's open-beam level (the median over the set)."""
NOISE_FACTOR = 10.0
"""A set's open-beam level must be at least this many dark-frame pixel noise sigmas."""


class NoBeamError(TalbotLauError, ValueError):
    """A reference or sample frame did not see the beam (or a dark frame did)."""


@dataclass
class ProjectionFrames:
    """The frames of one projection: darks, and (G2 position um, frame) per stepping set.

    A frame is an array or a FrameRef (see :meth:`load`).  ``shutter`` holds each frame's
    shutter reading, keyed ``("dark", index)``, ``("reference_dark", index)``,
    ``("reference", step)``, ``("sample", step)`` (True open, False closed, None unknown);
    ``origin`` names the file and point a frame was read from, for messages.

    Low-dose protocol: ``exposure_s`` and ``reference_exposure_s`` are the sample's and the
    reference's exposure per step (s; None: equal).  ``darks`` are at the sample's exposure,
    ``reference_darks`` at the reference's (empty: ``darks`` serve both).
    ``reference_fit`` replaces the reference frames: a dark-subtracted
    :class:`SteppingFit` at ``reference_exposure_s``, or the path of a stored fit
    (``acquisition.storage.reference_fit``, read by :meth:`load`).  ``noise_gain`` (variance per
    ADU of signal) and ``read_noise`` (ADU rms) of the panel, if known, are handed to
    :func:`reconstruction.retrieve`: its Rice amplitudes remove the low-count bias of V."""

    darks: list[Any]
    reference: dict[int, tuple[float, Any]]
    sample: dict[int, tuple[float, Any]]
    tile: int = 0
    shutter: dict[tuple[str, int], bool | None] = field(default_factory=dict)
    origin: dict[tuple[str, int], str] = field(default_factory=dict)
    reference_darks: list[Any] = field(default_factory=list)
    exposure_s: float | None = None
    reference_exposure_s: float | None = None
    reference_fit: Any = None
    noise_gain: float | None = None
    read_noise: float = 0.0

    @property
    def reference_scale(self) -> float:
        """Sample over reference exposure: the factor on the reference's a0 and a1."""
        if self.exposure_s is None or self.reference_exposure_s is None:
            return 1.0
        return float(self.exposure_s) / float(self.reference_exposure_s)

    @staticmethod
    def stack(frames: dict[int, tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """(G2 positions, frames) in step order."""
        order = sorted(frames)
        return np.array([frames[k][0] for k in order]), np.stack([frames[k][1] for k in order])

    def load(self, loader) -> ProjectionFrames:
        """The same frames with every FrameRef read by ``loader`` (a FrameLoader)."""
        origin = dict(self.origin)

        def read(key, frame):
            if not isinstance(frame, np.ndarray):
                origin.setdefault(key, str(frame))
            return loader(frame)

        darks = [read(("dark", i), frame) for i, frame in enumerate(self.darks)]
        reference_darks = [read(("reference_dark", i), f) for i, f in enumerate(self.reference_darks)]
        reference = {k: (x, read(("reference", k), f)) for k, (x, f) in self.reference.items()}
        sample = {k: (x, read(("sample", k), f)) for k, (x, f) in self.sample.items()}
        fit = self.reference_fit
        if fit is not None and not isinstance(fit, SteppingFit):
            from ..storage.reference_fit import read_reference_fit
            fit = read_reference_fit(fit).fit
        return ProjectionFrames(darks, reference, sample, self.tile, dict(self.shutter), origin,
                                reference_darks, self.exposure_s, self.reference_exposure_s, fit,
                                self.noise_gain, self.read_noise)

    def describe(self, kind: str, key: int) -> str:
        """E.g. ``reference set of tile 0, step 3 of 9 (G2 1.067 um, /raw/x.h5 point 7)``."""
        origin = self.origin.get((kind, key))
        if kind in ("dark", "reference_dark"):
            darks = self.darks if kind == "dark" else self.reference_darks
            text = f"{kind.replace('_', ' ')} frame {key + 1} of {len(darks)}"
            return f"{text} ({origin})" if origin else text
        frames = self.reference if kind == "reference" else self.sample
        details = [f"G2 {frames[key][0]:.3f} um"] + ([origin] if origin else [])
        return f"{kind} set of tile {self.tile}, step {key + 1} of {len(frames)} ({', '.join(details)})"


def check_beam(frames: ProjectionFrames, *, reference: bool = True) -> None:
    """Raise :class:`NoBeamError` if a reference or sample frame did not see the beam or a
    dark frame did (the rules of the module docstring); frames must be loaded.  Without
    ``reference`` the reference set and its darks are not checked (a fitted reference
    reused from an earlier tile, :class:`ReferenceFits`: they were checked then)."""
    skipped = () if reference else ("reference", "reference_dark")
    for (kind, key), is_open in sorted(frames.shutter.items()):
        if kind in skipped:
            continue
        if kind in ("dark", "reference_dark") and is_open is True:
            raise NoBeamError(f"{frames.describe(kind, key)}: taken with the shutter open")
        if kind not in ("dark", "reference_dark") and is_open is False:
            raise NoBeamError(f"no beam in the {frames.describe(kind, key)}: its event says the "
                              "shutter was closed")
    statistics = {}  # the reference and the sample usually share their darks: measured once
    for kind, stepping, dark_frames in (("reference", frames.reference, frames.reference_darks or frames.darks),
                                        ("sample", frames.sample, frames.darks)):
        if kind == "reference" and (not reference or not stepping and frames.reference_fit is not None):
            continue  # a reused or a stored reference fit: no reference frames
        if id(dark_frames) not in statistics:
            statistics[id(dark_frames)] = _dark_statistics(dark_frames)
        dark_level, noise = statistics[id(dark_frames)]
        steps = sorted(stepping)
        excess = np.array([float(np.mean(stepping[k][1], dtype=np.float64)) - dark_level for k in steps])
        level = float(np.median(excess))
        if noise is not None and level < NOISE_FACTOR * noise:
            worst = steps[int(np.argmin(excess))]
            raise NoBeamError(
                f"no beam in the {kind} set of tile {frames.tile}: its frames are only {level:.1f} ADU "
                f"above the dark level {dark_level:.1f} ADU (median; needs {NOISE_FACTOR:g} x the dark "
                f"noise = {NOISE_FACTOR * noise:.1f} ADU); darkest: {frames.describe(kind, worst)}")
        for k, value in zip(steps, excess):
            if value < BEAM_FRACTION * level:
                raise NoBeamError(
                    f"no beam in the {frames.describe(kind, k)}: its mean is {value:.1f} ADU above the "
                    f"dark level {dark_level:.1f} ADU, {100 * value / level:.1f} % of the set's "
                    f"open-beam level {level:.1f} ADU (needs {100 * BEAM_FRACTION:g} %)")


def _dark_statistics(darks) -> tuple[float, float | None]:
    """(mean level, pixel noise of the first frame) of dark frames (ADU); (0, None) if none."""
    if not darks:
        return 0.0, None
    darks = np.asarray(darks, np.float64)
    first = darks.reshape(len(darks), -1)[0]
    return float(darks.mean()), 1.4826 * float(np.median(np.abs(first - np.median(first))))


class SetAssembler:
    """Sorts frames into dark, reference and sample sets as they come (live or from a
    record) and hands out each tile's complete set with the latest reference.

    A reference set that starts again (step 0 after a complete set) replaces the old one;
    a repeated sample set replaces its frames; the phase probes and other streams are
    ignored.  A projection is a mosaic of one tile (tile 0).  A set with a frame whose
    shutter reading says closed is held back, as a resumed plan repeats it; :meth:`finish`
    (at the end of the run) hands out what is still held, for :func:`check_beam` to refuse.
    ``exposure_s``, ``reference_exposure_s`` and ``reference_fit`` are handed on with every
    set (see :class:`ProjectionFrames`); with ``reference_fit`` no reference set is awaited.
    """

    def __init__(self, positions_um, dark_frames: int, streams: dict, *, exposure_s=None,
                 reference_exposure_s=None, reference_fit=None):
        self.positions_um = np.asarray(positions_um, float)
        self.steps = len(self.positions_um)
        self.dark_frames = dark_frames
        self.streams = streams
        self.exposure_s = exposure_s
        self.reference_exposure_s = reference_exposure_s
        self.reference_fit = reference_fit
        self.darks: list[tuple[Any, bool | None]] = []
        self.reference_darks: list[tuple[Any, bool | None]] = []
        self.reference: dict[int, tuple[float, Any, bool | None]] = {}
        self.tiles: dict[int, dict[int, tuple[float, Any, bool | None]]] = {}
        self.done: set[int] = set()

    @classmethod
    def from_start(cls, stepping: dict) -> SetAssembler:
        """The assembler of a run from its start document's ``phase_stepping``."""
        stored = stepping.get("reference_fit")
        return cls(stepping["positions_um"], stepping["dark_frames"], stepping["streams"],
                   exposure_s=stepping.get("exposure_s"),
                   reference_exposure_s=stepping.get("reference_exposure_s"),
                   reference_fit=stored["path"] if stored else None)

    def add(self, stream: str, g2_um: float, frame, tile: int = 0, shutter: bool | None = None) -> list:
        """Add one frame (an array or a FrameRef) with its event's shutter reading; returns
        the (tile, ProjectionFrames) that became complete."""
        if stream == self.streams["dark"]:
            self.darks = (self.darks + [(frame, shutter)])[-max(self.dark_frames, 1):]
            return []
        if stream == self.streams.get("reference_dark"):
            self.reference_darks = (self.reference_darks + [(frame, shutter)])[-max(self.dark_frames, 1):]
            return []
        if stream not in (self.streams["reference"], self.streams["sample"]):
            return []
        step = int(np.argmin(np.abs(self.positions_um - g2_um)))
        if stream == self.streams["reference"]:
            if step == 0 and len(self.reference) == self.steps:
                self.reference = {}
            self.reference[step] = (g2_um, frame, shutter)
            return []
        self.tiles.setdefault(tile, {})[step] = (g2_um, frame, shutter)
        return self.complete()

    def complete(self, *, held: bool = False) -> list:
        """Every complete tile not handed out yet, each with a snapshot of its frames (with
        ``held``, also those with a frame taken with the shutter closed)."""
        if len(self.reference) != self.steps and self.reference_fit is None:
            return []
        closed = any(s is False for _, _, s in self.reference.values())
        ready = []
        for tile, frames in self.tiles.items():
            if tile in self.done or len(frames) != self.steps:
                continue
            if not held and (closed or any(s is False for _, _, s in frames.values())):
                continue
            self.done.add(tile)
            shutter = {("dark", i): s for i, (_, s) in enumerate(self.darks)}
            shutter.update({("reference_dark", i): s for i, (_, s) in enumerate(self.reference_darks)})
            shutter.update({("reference", k): s for k, (_, _, s) in self.reference.items()})
            shutter.update({("sample", k): s for k, (_, _, s) in frames.items()})
            reference = {} if self.reference_fit is not None else self.reference
            ready.append((tile, ProjectionFrames(
                [f for f, _ in self.darks], {k: (x, f) for k, (x, f, _) in reference.items()},
                {k: (x, f) for k, (x, f, _) in frames.items()}, tile, shutter,
                reference_darks=[f for f, _ in self.reference_darks], exposure_s=self.exposure_s,
                reference_exposure_s=self.reference_exposure_s, reference_fit=self.reference_fit)))
        return ready

    def finish(self) -> list:
        """At the end of the run: every complete tile not handed out yet, held ones too."""
        return self.complete(held=True)


@dataclass
class ProjectionResult:
    retrieval: Retrieval
    """A Retrieval or a stitched Mosaic (both have T, V, dphi, mu, eps)."""
    labels: np.ndarray
    clusters: list[ClusterAnalysis]


def reference_fit(frames: ProjectionFrames, period_um: float) -> SteppingFit:
    """The reference's stepping fit at its own exposure (ADU per ``reference_exposure_s``),
    dark-subtracted with the darks of that exposure; saturated pixels NaN.  A stored fit
    is returned as it is.  Frames must be loaded."""
    if frames.reference_fit is not None:
        if not isinstance(frames.reference_fit, SteppingFit):
            raise TypeError("reference_fit is not loaded: call ProjectionFrames.load first")
        return frames.reference_fit
    x, stack = ProjectionFrames.stack(frames.reference)
    fit = fit_stepping(stack, x, period_um)
    darks = frames.reference_darks or frames.darks
    a0 = fit.a0 - np.mean(darks, axis=0) if darks else fit.a0
    saturated = _saturated(stack)
    if saturated is not None:
        a0 = np.where(saturated, np.nan, a0)
    return SteppingFit(a0=a0, a1=fit.a1, phi=fit.phi)


def _saturated(frames) -> np.ndarray | None:
    """Pixels at the full scale of an unsigned-integer panel (65535 for 16 bit) in any of
    ``frames`` (a stack or a sequence of 2-D frames); None for float frames (not checked),
    as :func:`reconstruction.retrieve` does."""
    frames = list(frames)
    if not frames or not np.issubdtype(np.asarray(frames[0]).dtype, np.unsignedinteger):
        return None
    top = functools.reduce(np.maximum, frames)
    return top >= np.iinfo(top.dtype).max


def retrieve_projection(frames: ProjectionFrames, period_um: float,
                        fitted_reference: SteppingFit | None = None) -> Retrieval:
    """T, V and dphi of one set, with the measured G2 positions and the mean dark, once
    :func:`check_beam` accepts its frames (loaded arrays).

    A reference at another exposure than the sample's, or a stored reference fit, is
    fitted with the darks of its own exposure (:func:`reference_fit`) and its a0 and a1
    are scaled by ``exposure_s / reference_exposure_s`` before the retrieval: the one
    place, for the live processor and the offline reconstruction alike.
    ``fitted_reference``: the reference as an earlier tile's retrieval received it
    (:class:`ReferenceFits`); the reference frames are then neither checked nor fitted."""
    check_beam(frames, reference=fitted_reference is None)
    dark = np.mean(frames.darks, axis=0) if frames.darks else None
    smp_x, smp = ProjectionFrames.stack(frames.sample)
    scale = frames.reference_scale
    noise = {} if frames.noise_gain is None else {"noise_gain": frames.noise_gain,
                                                  "read_noise": frames.read_noise}
    if fitted_reference is not None:
        return retrieve(smp, fitted_reference, dark, steps=smp_x, period=period_um, **noise)
    if frames.reference_fit is None and scale == 1.0:
        ref_x, ref = ProjectionFrames.stack(frames.reference)
        return retrieve(smp, ref, dark, steps=smp_x, reference_steps=ref_x, period=period_um, **noise)
    fit = reference_fit(frames, period_um)
    scaled = SteppingFit(a0=np.asarray(fit.a0) * scale, a1=np.asarray(fit.a1) * scale, phi=fit.phi)
    return retrieve(smp, scaled, dark, steps=smp_x, period=period_um, **noise)


class ReferenceFits:
    """Each reference set fitted once, for every tile taken with it (a mosaic's tiles
    share the reference until ``reference_every`` or a phase drift refreshes it).

    A set is known by its frames' identity (:class:`acquisition.storage.frames.FrameRef`: file and
    point) with their G2 positions (um), the darks subtracted from it, the stored fit's
    path, the exposures (s), the noise model and the period (um): a refreshed reference or
    new darks give a new fit; frames given as arrays have no identity and are fitted every
    time.  Kept is the reference exactly as :func:`reconstruction.retrieve` received it
    (``Retrieval.reference_fit``: dark subtracted, scaled to the sample's exposure) with
    the pixels saturated in a raw reference marked a1 = NaN, which ``retrieve`` marks
    invalid as it does a saturated reference: a reused fit gives the same numbers, to the
    bit, as fitting again.  The ``keep`` latest fits are kept (a full frame's: 47 MB)."""

    def __init__(self, keep: int = 2):
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep={keep!r}: must be a whole number >= 0 (0: never reuse)")
        self.keep = keep
        self._fits: OrderedDict[tuple, SteppingFit] = OrderedDict()
        self.fitted = 0  # reference sets fitted
        self.reused = 0  # tiles that reused a fit

    @staticmethod
    def key(frames: ProjectionFrames, period_um: float) -> tuple | None:
        """The identity of ``frames``' reference set (unloaded frames), or None."""
        reference = tuple((k, float(x), f) for k, (x, f) in sorted(frames.reference.items()))
        refs = [f for *_, f in reference] + list(frames.darks) + list(frames.reference_darks)
        stored = frames.reference_fit
        if (not all(isinstance(f, FrameRef) for f in refs)
                or not (stored is None or isinstance(stored, (str, os.PathLike)))):
            return None
        return (float(period_um), reference, tuple(frames.darks), tuple(frames.reference_darks),
                None if stored is None else os.fspath(stored), frames.exposure_s,
                frames.reference_exposure_s, frames.noise_gain, frames.read_noise)

    def retrieve(self, frames: ProjectionFrames, loader, period_um: float) -> Retrieval:
        """:func:`retrieve_projection` of ``frames`` (FrameRefs or arrays, read by
        ``loader``); a known reference set's frames are not read again."""
        key = self.key(frames, period_um) if self.keep else None
        fitted = None if key is None else self._fits.get(key)
        if fitted is not None:
            self._fits.move_to_end(key)
            self.reused += 1
            sample_only = dataclasses.replace(frames, reference={}, reference_darks=[], reference_fit=None)
            return retrieve_projection(sample_only.load(loader), period_um, fitted)
        loaded = frames.load(loader)
        retrieval = retrieve_projection(loaded, period_um)
        self.fitted += 1
        if key is not None:
            self._fits[key] = _as_received(retrieval.reference_fit, loaded)
            while len(self._fits) > self.keep:
                self._fits.popitem(last=False)
        return retrieval

    def clear(self) -> None:
        self._fits.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept fits."""
        return sum(np.asarray(a).nbytes for fit in self._fits.values() for a in (fit.a0, fit.a1, fit.phi))


def _as_received(fit: SteppingFit, frames: ProjectionFrames) -> SteppingFit:
    """``Retrieval.reference_fit`` of loaded ``frames`` with the pixels that ``retrieve``
    found saturated in their raw reference (if it had one) set a1 = NaN."""
    raw = frames.reference_fit is None and frames.reference_scale == 1.0
    saturated = _saturated(f for _, f in frames.reference.values()) if raw else None
    if saturated is None or not saturated.any():
        return fit
    a1 = np.array(fit.a1, copy=True)
    a1[saturated] = np.nan
    return SteppingFit(a0=fit.a0, a1=a1, phi=fit.phi)


def classify_image(result, correction: TissueCorrection | None = None) -> ProjectionResult:
    """Segment and classify the clusters of a retrieved projection or a stitched mosaic.

    ``correction``: the tissue calibration's ``c(Ts)`` applied to every cluster's ratio
    (``reconstruction.correct_clusters``; the configured one is
    ``acquisition.storage.tissue_calibration_file.tissue_correction(config)``); None: none."""
    mask = calcified_mask(result.transmission, result.dark_field)
    labels = label_clusters(mask)
    clusters = analyse_clusters(result.transmission, result.dark_field, labels, mask=mask)
    return ProjectionResult(result, labels, correct_clusters(clusters, correction))


def analyse_projection(frames: ProjectionFrames, period_um: float,
                       correction: TissueCorrection | None = None) -> ProjectionResult:
    """Retrieve T, V, dphi with the measured G2 positions, then segment and classify."""
    return classify_image(retrieve_projection(frames, period_um), correction)


def mosaic_tile(retrieval: Retrieval, mosaic: dict, tile: int) -> Tile:
    """What the stitch needs of one retrieved tile: T, V and dphi as float32 (the
    retrieval's own arrays when they are float32, as from a 16-bit panel: no copy) at the
    tile's stage position (x_mm, y_mm) from the start document's ``mosaic["tiles"]``.
    A full 1536 x 1920 tile keeps 35 MB, against 142 MB for its whole Retrieval."""
    stage = [(t["x_mm"], t["y_mm"]) for t in mosaic["tiles"] if t["tile"] == tile]
    if not stage:
        raise ValueError(f"tile {tile!r} is not in the mosaic's tiles "
                         f"{[t['tile'] for t in mosaic['tiles']]}")
    return Tile(*(np.asarray(image, np.float32) for image in
                  (retrieval.transmission, retrieval.dark_field, retrieval.differential_phase)),
                stage[0])


def analyse_tiles(tiles: dict[int, Tile], sample_pixel_mm: float,
                  correction: TissueCorrection | None = None) -> ProjectionResult:
    """Stitch tiles (tile index -> :func:`mosaic_tile`) in tile order, then segment and
    classify the mosaic."""
    return classify_image(stitch([tiles[k] for k in sorted(tiles)], sample_pixel_mm), correction)


def analyse_mosaic(retrievals: dict[int, Retrieval], mosaic: dict, sample_pixel_mm: float,
                   correction: TissueCorrection | None = None) -> ProjectionResult:
    """Stitch retrieved tiles (tile index -> retrieval) at the stage positions of the start
    document's ``mosaic["tiles"]`` (x_mm, y_mm), then segment and classify the mosaic."""
    return analyse_tiles({k: mosaic_tile(r, mosaic, k) for k, r in retrievals.items()},
                         sample_pixel_mm, correction)
