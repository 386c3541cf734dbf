"""A bounded mosaic: each reference set fitted once, only float32 T, V and dphi kept per tile."""

import copy
import dataclasses
import functools

import h5py
import numpy as np
import pytest
from support import small_config, run_engine

from acquisition.processing.derived_collector import DerivedCollector
from acquisition.storage.frames import FRAME_DATASET, FrameLoader
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_mosaic
from acquisition.processing.live import ProjectionProcessor
from acquisition.processing.analysis import (
    ReferenceFits,
    analyse_mosaic,
    analyse_tiles,
    retrieve_projection,
)
from reconstruction import SteppingFit

IMAGES = ("transmission", "dark_field", "differential_phase", "absorption", "scattering")


def mosaic_documents(tmp_path, **plan):
    """A 2 x 2 mosaic on the twins (48 x 64 tiles), reference refreshed before tile 2."""
    instrument = simulated_instrument(small_config(rows=48, cols=64), write_path=tmp_path / "raw")
    documents = []
    with run_engine() as engine:
        engine.subscribe(lambda name, doc: documents.append((name, copy.deepcopy(doc))))
        engine(darkfield_mosaic(instrument, **{"rows": 2, "columns": 2, "overlap": 0.2, "steps": 3,
                                               "dark_frames": 2, "exposure_s": 1.0, "reference_exposure_s": 1.0,
                                               "reference_every": 2, **plan}))
        return documents


def processor_jobs(documents, out):
    """A processor fed ``documents``, its jobs held back: (processor, [(tile, frames)], jobs)."""
    jobs = []
    processor = ProjectionProcessor(out, DerivedCollector(), jobs.append)
    for name, doc in documents:
        processor(name, doc)
    sets = [job.args for job in jobs if isinstance(job, functools.partial)
            and job.func == processor._tile_and_publish]
    return processor, sets, jobs


def saturate_one_reference_pixel(frames, pixel=(5, 7)):
    """Set ``pixel`` of the first reference frame of ``frames`` to the panel's full scale."""
    ref = frames.reference[0][1]
    with h5py.File(ref.file, "r+") as f:
        data = f[FRAME_DATASET]
        data[(ref.point, *pixel)] = np.iinfo(data.dtype).max


@pytest.mark.parametrize("plan, noise_gain", [({}, None), ({"reference_exposure_s": 2.0}, None),
                                               ({}, 3.0)],
                         ids=["same-exposure", "low-dose", "noise-model"])
@pytest.mark.slow
def test_a_reference_set_is_fitted_once_and_gives_the_numbers_of_fitting_every_tile(
        tmp_path, plan, noise_gain):
    _, sets, _ = processor_jobs(mosaic_documents(tmp_path, **plan), tmp_path)
    assert [tile for tile, _ in sets] == [0, 1, 2, 3]
    sets = [(tile, dataclasses.replace(frames, noise_gain=noise_gain)) for tile, frames in sets]
    # tiles 0 and 1 share a reference, tiles 2 and 3 the refreshed one
    assert sets[0][1].reference == sets[1][1].reference != sets[2][1].reference == sets[3][1].reference
    saturate_one_reference_pixel(sets[0][1])
    fits = ReferenceFits()
    period = 4.2  # um: any period, the same for both paths
    with FrameLoader() as loader:
        for tile, frames in sets:
            reused = fits.retrieve(frames, loader, period)
            fitted = retrieve_projection(frames.load(loader), period)
            for name in IMAGES:
                assert np.array_equal(getattr(reused, name), getattr(fitted, name), equal_nan=True), (tile, name)
            for name in ("a0", "a1", "phi"):
                assert np.array_equal(getattr(reused.sample_fit, name), getattr(fitted.sample_fit, name),
                                      equal_nan=True)
            assert np.isnan(reused.transmission[5, 7]) == (tile < 2)  # the saturated reference pixel
    assert (fits.fitted, fits.reused) == (2, 2)
    assert fits.nbytes > 0
    fits.clear()
    assert fits.nbytes == 0


@pytest.mark.slow
def test_reference_sets_without_identity_or_reuse_are_fitted_every_time(tmp_path):
    _, sets, _ = processor_jobs(mosaic_documents(tmp_path), tmp_path)
    with FrameLoader() as loader:
        loaded = [(tile, frames.load(loader)) for tile, frames in sets]
        arrays = ReferenceFits()  # frames given as arrays: no identity
        never = ReferenceFits(keep=0)
        for (_, frames), (_, unread) in zip(loaded, sets):
            arrays.retrieve(frames, loader, 4.2)
            never.retrieve(unread, loader, 4.2)
    assert (arrays.fitted, arrays.reused) == (never.fitted, never.reused) == (4, 0)
    assert ReferenceFits.key(dataclasses.replace(sets[0][1], reference_fit=SteppingFit(1, 1, 0)), 4.2) is None
    with pytest.raises(ValueError, match="keep=-1"):
        ReferenceFits(keep=-1)


@pytest.mark.slow
def test_the_processor_keeps_float32_t_v_dphi_per_tile_and_stitches_as_from_whole_retrievals(tmp_path):
    documents = mosaic_documents(tmp_path)
    processor, sets, jobs = processor_jobs(documents, tmp_path)
    tile_jobs = [job for job in jobs if isinstance(job, functools.partial)]
    assert len(tile_jobs) == 4 and jobs[-2] == processor._stitch_and_publish
    for job in tile_jobs:
        job()
    assert (processor.references.fitted, processor.references.reused) == (2, 2)
    shape = (48, 64)
    assert sorted(processor.tiles) == [0, 1, 2, 3]
    for tile in processor.tiles.values():
        images = (tile.transmission, tile.dark_field, tile.differential_phase)
        assert all(image.dtype == np.float32 and image.shape == shape for image in images)
    start = documents[0][1]
    kept = analyse_tiles(processor.tiles, start["detector_pixel"]["sample_pixel_mm"])
    with FrameLoader() as loader:  # the way before: every tile's whole retrieval kept
        whole = {tile: retrieve_projection(frames.load(loader), start["phase_stepping"]["period_um"])
                 for tile, frames in sets}
    before = analyse_mosaic(whole, start["mosaic"], start["detector_pixel"]["sample_pixel_mm"])
    for name in IMAGES:
        assert np.array_equal(getattr(kept.retrieval, name), getattr(before.retrieval, name), equal_nan=True)
    assert kept.retrieval.offsets_px == before.retrieval.offsets_px
    assert np.array_equal(kept.labels, before.labels)
    for job in jobs[len(tile_jobs):]:  # the stitch, then the fits let go
        job()
    assert processor.tiles == {} and processor.references.nbytes == 0
    stops = processor._publish.stops
    assert [s["exit_status"] for s in stops] == ["success"] * 5
    assert len(list(tmp_path.glob("derived_*.h5"))) == 5
