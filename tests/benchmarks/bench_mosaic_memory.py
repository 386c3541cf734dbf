"""Benchmark: the live processor's memory over a 16-tile full-frame mosaic (issue 16).

Run: PYTHONPATH=. python tests/benchmarks/bench_mosaic_memory.py
(from the repository, so the working tree is imported.)  Prints side by side, in one run:
- the memory the processor keeps after 16 tiles of 1536 x 1920: the way before issue 16
  (each tile's whole Retrieval, the reference fitted for every tile) against now (float32
  T, V and dphi per tile, the reference fitted once: ``acquisition.processing.analysis``);
- the time of the 16 tiles' retrievals, reference fitted per tile against once;
- the peak while the mosaic (5683 x 7104 pixels) is stitched, and while it is then
  classified and written, above what was kept;
- the classification's steps (``calcified_mask``, ``label_clusters``, ``analyse_clusters``):
  each one's peak above the memory at its call and its time, worked on in bands of rows
  (the default) against the whole mosaic as one band (``band_rows`` = its height).
Memory is numpy's as traced by ``tracemalloc`` (numpy reports its buffers to it).

The tiles are synthesised from one engine frame set: one full-frame projection is
measured on the twins (the physics engine, time_scale 0), and its documents are replayed
to the processor as a 4 x 4 mosaic (10 % overlap, one reference set for all tiles, as the
mosaic plan takes it without ``reference_every``): the darks and the reference once, the
sample set 16 times with ``tile`` = 0..15.  Every tile is thus a real retrieval of real
frames (noise, hot pixels, the phantom), the same in every tile; the stitch sees 16
identical tiles at the 16 stage positions of the plan (``tile_positions``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from bluesky import RunEngine

from acquisition.config import load_config
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection, tile_positions
from acquisition.plans.settings import tile_field_mm
from acquisition.processing import analysis as projection
from acquisition.processing.analysis import ReferenceFits
from acquisition.processing.live import ProjectionProcessor

ROWS = COLUMNS = 4
OVERLAP = 0.1
GB = 1e9


def full_frame_instrument(raw: Path):
    config = load_config()
    detector = dataclasses.replace(config.setup.detector, region=None)
    config = dataclasses.replace(config, setup=dataclasses.replace(config.setup, detector=detector),
                                 simulation=dataclasses.replace(config.simulation, time_scale=0.0))
    return simulated_instrument(config, write_path=raw)


def mosaic_documents(instrument) -> list[tuple[str, dict]]:
    """One full-frame projection's documents, replayed as a 4 x 4 mosaic (module docstring)."""
    documents = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: documents.append((name, copy.deepcopy(doc))))
    engine(darkfield_projection(instrument, sample={"id": "bench-mosaic"}))
    start = documents[0][1]
    height, width = tile_field_mm(instrument)
    start["mosaic"] = {"rows": ROWS, "columns": COLUMNS, "overlap": OVERLAP, "snake": True,
                       "tiles": tile_positions(ROWS, COLUMNS, (height * (1 - OVERLAP), width * (1 - OVERLAP)),
                                               snake=True)}
    primary = {doc["uid"] for name, doc in documents if name == "descriptor" and doc["name"] == "primary"}
    sample = [doc for name, doc in documents if name == "event" and doc["descriptor"] in primary]
    before = [(n, d) for n, d in documents if n != "stop" and not (n == "event" and d["descriptor"] in primary)]
    replayed = []
    for tile in start["mosaic"]["tiles"]:
        for event in sample:
            event = copy.deepcopy(event)
            event["data"]["tile"] = tile["tile"]
            replayed.append(("event", event))
    return before + replayed + [documents[-1]]


class WholeRetrievals(ProjectionProcessor):
    """The processor as it was before issue 16: every tile's whole Retrieval kept for the
    stitch and its reference fitted again for every tile."""

    def start(self, doc):
        super().start(doc)
        self.references = ReferenceFits(keep=0)
        self.retrievals = {}
        retrieve = self.references.retrieve

        def keep(frames, loader, period_um):
            self.retrievals[frames.tile] = retrieval = retrieve(frames, loader, period_um)
            return retrieval

        self.references.retrieve = keep


def run_tiles(cls, documents, out: Path):
    """Feed ``documents`` to a processor of class ``cls``; run its 16 tile jobs.  Returns
    (processor, the jobs left (stitch ...), bytes kept, seconds in ``retrieve``)."""
    jobs = []
    processor = cls(out, lambda name, doc: None, jobs.append)
    for name, doc in documents:
        processor(name, doc)
    tile_jobs = [j for j in jobs if isinstance(j, functools.partial) and j.func == processor._tile_and_publish]
    seconds = []
    retrieve = processor.references.retrieve

    def timed(*args):
        started = time.perf_counter()
        try:
            return retrieve(*args)
        finally:
            seconds.append(time.perf_counter() - started)

    processor.references.retrieve = timed
    before = tracemalloc.get_traced_memory()[0]
    for job in tile_jobs:
        job()
    kept = tracemalloc.get_traced_memory()[0] - before
    return processor, [j for j in jobs if j not in tile_jobs], kept, seconds


CLASSIFICATION_STEPS = ("calcified_mask", "label_clusters", "analyse_clusters")


def traced(function, record: dict, name: str):
    """``function``, recording in ``record[name]`` its peak above the memory at its call
    (bytes), its time (s) and the memory at its call (bytes)."""
    def call(*args, **kwargs):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        result = function(*args, **kwargs)
        record[name] = (tracemalloc.get_traced_memory()[1] - base, time.perf_counter() - started, base)
        record.setdefault("results", {})[name] = result
        return result
    return call


def one_band_steps(mosaic) -> dict:
    """The classification steps of ``mosaic`` with the whole mosaic as one band (as
    :func:`traced` records them)."""
    record = {}
    rows = mosaic.transmission.shape[0]
    mask = traced(functools.partial(projection.calcified_mask, band_rows=rows), record, "calcified_mask")(
        mosaic.transmission, mosaic.dark_field)
    labels = traced(functools.partial(projection.label_clusters, band_rows=rows), record, "label_clusters")(mask)
    traced(projection.analyse_clusters, record, "analyse_clusters")(
        mosaic.transmission, mosaic.dark_field, labels, mask=mask)
    return record


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-mosaic-"))
    try:
        started = time.perf_counter()
        documents = mosaic_documents(full_frame_instrument(work / "raw"))
        print(f"engine frame set (1536 x 1920, full frame) measured in {time.perf_counter() - started:.1f} s")
        tracemalloc.start()
        old, _, old_kept, old_s = run_tiles(WholeRetrievals, documents, work / "old")
        shutil.rmtree(work / "old", ignore_errors=True)
        old_fits = old.references.fitted
        del old
        new, rest, new_kept, new_s = run_tiles(ProjectionProcessor, documents, work / "new")
        new_fits, reused = new.references.fitted, new.references.reused
        tile_bytes = sum(a.nbytes for t in new.tiles.values()
                         for a in (t.transmission, t.dark_field, t.differential_phase))

        phases = {}
        real_stitch = projection.stitch

        def stitch(*args, **kwargs):  # the stitch's own peak; then classification + write
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            mosaic = real_stitch(*args, **kwargs)
            phases["stitch"] = (tracemalloc.get_traced_memory()[1] - base, time.perf_counter() - t0,
                                mosaic.absorption.shape)
            tracemalloc.reset_peak()
            phases["after"] = (base, time.perf_counter())
            phases["mosaic"] = mosaic
            return mosaic

        steps = {}
        real_steps = {name: getattr(projection, name) for name in CLASSIFICATION_STEPS}
        projection.stitch = stitch
        for name in CLASSIFICATION_STEPS:
            setattr(projection, name, traced(real_steps[name], steps, name))
        try:
            rest[0]()  # _stitch_and_publish: stitch, classify, write the mosaic's derived file
        finally:
            projection.stitch = real_stitch
            for name, step in real_steps.items():
                setattr(projection, name, step)
        base, t0 = phases["after"]
        classify_peak, classify_s = tracemalloc.get_traced_memory()[1] - base, time.perf_counter() - t0
        whole = one_band_steps(phases["mosaic"])
        tracemalloc.stop()
        stitch_peak, stitch_s, shape = phases["stitch"]

        print(f"16 tiles of 1536 x 1920, {ROWS} x {COLUMNS}, {OVERLAP:.0%} overlap; mosaic {shape[0]} x {shape[1]}")
        print(f"{'':<52}{'before':>10}{'now':>10}")
        print(f"{'memory kept by the processor after 16 tiles (GB)':<52}{old_kept / GB:>10.2f}{new_kept / GB:>10.2f}")
        print(f"{'  of which float32 T, V, dphi (GB)':<52}{'':>10}{tile_bytes / GB:>10.2f}")
        print(f"{'reference sets fitted':<52}{old_fits:>10d}{new_fits:>10d}")
        print(f"{'retrieval time of 16 tiles (s)':<52}{sum(old_s):>10.1f}{sum(new_s):>10.1f}")
        print(f"{'  first tile / mean of the other 15 (s)':<52}"
              f"{f'{old_s[0]:.2f}/{sum(old_s[1:]) / 15:.2f}':>10}{f'{new_s[0]:.2f}/{sum(new_s[1:]) / 15:.2f}':>10}")
        print(f"{'reference fit + its frames read, per tile (s)':<52}"
              f"{(sum(old_s) - sum(new_s)) / (16 - new_fits):>10.2f}{'once':>10}")
        print(f"tiles that reused the fit: {reused}")
        print(f"stitch: {stitch_s:.1f} s, peak {stitch_peak / GB:.2f} GB above the kept tiles")
        print(f"classification + derived file of the mosaic: {classify_s:.1f} s, "
              f"peak {classify_peak / GB:.2f} GB above the kept tiles")
        print(f"{'classification step: peak above its call (GB) / time (s)':<58}{'one band':>12}{'bands':>12}")
        for name in CLASSIFICATION_STEPS:
            (old_peak, old_t, _), (new_peak, new_t, _) = whole[name], steps[name]
            print(f"{'  ' + name:<58}{f'{old_peak / GB:.2f} / {old_t:.1f}':>12}{f'{new_peak / GB:.2f} / {new_t:.1f}':>12}")
        same = [name for name in CLASSIFICATION_STEPS[:2]
                if np.array_equal(whole["results"][name], steps["results"][name])]
        print(f"bands give the one band's result (mask, labels): {same == list(CLASSIFICATION_STEPS[:2])}")
        print(f"held at calcified_mask's call, above the kept tiles (the stitched mosaic): "
              f"{(steps['calcified_mask'][2] - base) / GB:.2f} GB, of which its images "
              f"{sum(a.nbytes for a in vars(phases['mosaic']).values() if hasattr(a, 'nbytes')) / GB:.2f} GB")
        print(f"target: under 0.8 GB kept -> {'met' if new_kept < 0.8 * GB else 'NOT met'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
