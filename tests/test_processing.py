"""On-the-fly processing: the derived run of a projection measured on the twins."""

import copy
import dataclasses
import json

import h5py
import numpy as np
import pytest
from support import small_config, run_engine
from event_model import DocumentNames, schema_validators

from acquisition.demo import format_report, run_demo
from acquisition.processing.derived_collector import DerivedCollector
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing.live import darkfield_router
from acquisition.processing.analysis import NoBeamError, ProjectionFrames, check_beam
from acquisition.processing.offline import reconstruct_run
from acquisition.storage.run_recorder import run_recorder
from simulators.physics import Phantom, TissueSlab
from specimens import class_cluster


@pytest.mark.slow
def test_processor_classifies_a_cluster_and_publishes_valid_documents(RE, tmp_path):
    phantom = Phantom(slab=TissueSlab(), clusters=(class_cluster("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=96, cols=96), write_path=tmp_path / "raw",
                                      phantom=phantom)
    derived = []

    def publish(name, doc):
        schema_validators[DocumentNames[name]].validate(doc)
        derived.append((name, doc))

    collector = DerivedCollector()
    processor = darkfield_router(out_dir=tmp_path, publish=lambda n, d: (publish(n, d), collector(n, d)))
    RE.subscribe(processor)
    (raw_uid,) = RE(darkfield_projection(instrument, dark_frames=2))
    processor.wait()

    names = [name for name, _ in derived]
    assert names[0] == "start" and names[-1] == "stop"
    assert derived[0][1]["parent_uid"] == raw_uid
    assert derived[-1][1]["exit_status"] == "success"
    assert len(collector.clusters) == 1
    (cluster,) = collector.clusters
    assert cluster["texture"] == "coarse" and cluster["suspicious"]
    assert cluster["ratio"] >= 0.6

    (path,) = tmp_path.glob("derived_*.h5")
    with h5py.File(path, "r") as f:
        assert f["entry/process/run_record/identifier_run_uuid"].asstr()[()] == raw_uid
        assert f["entry/dark_field/data"].shape == (96, 96)
        assert list(f["entry/clusters/texture"].asstr()[()]) == ["coarse"]


@pytest.mark.slow
def test_processor_failure_is_reported_not_raised(RE, tmp_path, monkeypatch):
    import acquisition.processing.analysis as projection

    def broken(*args, **kwargs):
        raise ValueError("reference is all zero")

    monkeypatch.setattr(projection, "retrieve", broken)
    instrument = simulated_instrument(small_config(rows=48, cols=48), write_path=tmp_path / "raw")
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    RE.subscribe(processor)
    RE(darkfield_projection(instrument, dark_frames=1))  # the scan itself succeeds
    processor.wait()
    assert [s["exit_status"] for s in collector.stops] == ["fail"]
    assert "reference is all zero" in collector.stops[0]["reason"]


@pytest.mark.slow
def test_demo_scores_both_specimens_against_their_truth(tmp_path):
    """The demo measures the paraffin block and a 45 mm breast and scores every true
    cluster: each is matched or listed as missed, every detection is matched or listed as
    false, "N of M" counts true clusters, and the measured mu/eps follows the noise-free
    one (the physics of the specimen, not the class it was drawn as)."""
    config = small_config(rows=192, cols=416, time_scale=0.0)
    phantom = dataclasses.replace(config.simulation.phantom, clusters_per_class=1)
    config = dataclasses.replace(config, simulation=dataclasses.replace(config.simulation, phantom=phantom))
    report = run_demo(tmp_path, config, quiet=True)

    assert json.loads((tmp_path / "report.json").read_text()) == report
    blocks = report["specimens"]
    assert [s["sample"] for s in blocks] == ["demo-paraffin-block", "demo-breast"]
    for s in blocks:
        rows = s["clusters"]
        assert s["true_clusters"] == len(rows) >= 3
        assert s["class_correct"] == sum(r["measured_class"] == r["true_class"] for r in rows)
        assert s["detected"] == sum(r["detected"] for r in rows) == len(rows) - len(s["misses"])
        assert s["misses"] == [r["cluster"] for r in rows if not r["detected"]]
        for r in rows:
            assert r["true_class"] in {"ultra-fine", "fine", "pleomorphic", "coarse"}
            if r["detected"]:
                assert r["distance_mm"] <= report["gate_mm"]
                assert r["suspicious"] == (r["ratio"] > 0.33)
                assert r["ratio"] == pytest.approx(r["true_ratio"], rel=0.15), r
    assert sum(s["detected"] for s in blocks) >= sum(s["true_clusters"] for s in blocks) - 1
    text = format_report(report)
    for s in blocks:
        assert f"{s['class_correct']} of {s['true_clusters']} true clusters classified as the truth says" in text
    assert list((tmp_path / "raw").glob("*.h5"))


@pytest.mark.slow
def test_the_runengine_does_not_wait_for_the_processor(RE, tmp_path, monkeypatch):
    import threading

    import acquisition.processing.analysis as projection

    release = threading.Event()
    real = projection.classify_image

    def slow(*args, **kwargs):
        release.wait(10)  # processing takes "long"
        return real(*args, **kwargs)

    monkeypatch.setattr("acquisition.processing.live.classify_image", slow)
    instrument = simulated_instrument(small_config(rows=48, cols=48), write_path=tmp_path / "raw")
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    RE.subscribe(processor)
    RE(darkfield_projection(instrument, dark_frames=1, steps=3, exposure_s=1.0))
    assert collector.stops == []  # the scan finished while processing still waits
    release.set()
    processor.wait()
    assert [s["exit_status"] for s in collector.stops] == ["success"]


@pytest.mark.slow
def test_each_mosaic_tile_is_processed_then_the_mosaic_is_stitched_and_classified(RE, tmp_path):
    from acquisition.plans import darkfield_mosaic

    phantom = Phantom(slab=TissueSlab(), clusters=(class_cluster("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw",
                                      phantom=phantom)
    starts = []
    collector = DerivedCollector()

    def publish(name, doc):
        collector(name, doc)
        if name == "start":
            starts.append(doc)

    processor = darkfield_router(out_dir=tmp_path, publish=publish)
    RE.subscribe(processor)
    RE(darkfield_mosaic(instrument, rows=1, columns=2, overlap=0.0, steps=3, dark_frames=1,
                            exposure_s=1.0, reference_every=1))
    processor.wait()
    assert [s["tile"]["tile"] for s in starts[:2]] == [0, 1]
    assert starts[2]["plan_name"] == "darkfield_mosaic_stitch" and starts[2]["tiles"] == [0, 1]
    assert [s["exit_status"] for s in collector.stops] == ["success"] * 3
    assert sorted(p.name[-9:] for p in tmp_path.glob("derived_*_tile*.h5")) == ["tile00.h5", "tile01.h5"]
    (stitched,) = tmp_path.glob(f"derived_{starts[2]['parent_uid'][:8]}.h5")
    with h5py.File(stitched, "r") as f:
        assert f["entry/dark_field/data"].shape == (64, 128)  # two 64 x 64 tiles, no overlap
    # the cluster seen in the stitched mosaic is classified once more, as coarse
    assert [c["texture"] for c in collector.clusters][-1] == "coarse"


def _projection_documents(tmp_path, **plan):
    """A projection on the twins (64 x 64), run with only a collector: its documents."""
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw")
    documents = []
    with run_engine() as engine:
        engine.subscribe(lambda name, doc: documents.append((name, copy.deepcopy(doc))))
        engine(darkfield_projection(instrument, **{"steps": 3, "dark_frames": 2, "exposure_s": 1.0,
                                                   "reference_exposure_s": 1.0, **plan}))
        return documents


def _process(documents, out):
    """Feed documents to a processor (and a run recorder) as a RunEngine would."""
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=out, publish=collector)
    recorder = run_recorder(out)
    for name, doc in documents:
        processor(name, doc)
        recorder(name, doc)
    processor.wait()
    return collector


def _streams(documents):
    return {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}


@pytest.mark.slow
def test_a_frame_file_removed_mid_run_fails_the_derived_run_not_the_scan(RE, tmp_path):
    instrument = simulated_instrument(small_config(rows=48, cols=48), write_path=tmp_path / "raw")
    streams, removed = {}, []

    def remove_frames(name, doc):  # subscribed before the processor: it sees the file gone
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        if name == "event" and streams[doc["descriptor"]] == "primary" and not removed:
            (path,) = (tmp_path / "raw").glob("*.h5")
            path.unlink()  # the twin keeps writing to its open (now nameless) file
            removed.append(path)

    collector = DerivedCollector()
    RE.subscribe(remove_frames)
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    RE.subscribe(processor)
    stops = []
    RE.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    RE(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0))
    processor.wait()
    assert [s["exit_status"] for s in stops] == ["success"]  # the scan went on
    assert [s["exit_status"] for s in collector.stops] == ["fail"]
    assert "FrameReadError" in collector.stops[0]["reason"]
    assert removed[0].name in collector.stops[0]["reason"] and "no such file" in collector.stops[0]["reason"]
    assert not list(tmp_path.glob("derived_*.h5"))


def test_a_reference_taken_with_the_shutter_closed_is_refused_naming_set_and_frame(tmp_path):
    documents = _projection_documents(tmp_path)
    streams = _streams(documents)
    reference = [doc for name, doc in documents if name == "event" and streams[doc["descriptor"]] == "reference"]
    reference[1]["data"]["tube_shutter"] = 0  # as the event of a frame after an interlock trip
    collector = _process(documents, tmp_path / "out")
    (stop,) = collector.stops
    assert stop["exit_status"] == "fail"
    assert "NoBeamError" in stop["reason"] and "reference set of tile 0, step 2 of 3" in stop["reason"]
    assert "shutter was closed" in stop["reason"] and ".h5 point" in stop["reason"]
    # offline reconstruction of the run record applies the same rule
    (record,) = (tmp_path / "out").glob("run_*.nxs")
    with pytest.raises(NoBeamError, match="reference set of tile 0, step 2 of 3"):
        reconstruct_run(record, tmp_path / "offline")


def test_a_repeated_set_replaces_the_frames_taken_with_the_shutter_closed(tmp_path):
    """A resumed plan repeats an interrupted set: the processor waits for the repeat."""
    documents = _projection_documents(tmp_path)
    streams = _streams(documents)
    names = [(i, doc) for i, (name, doc) in enumerate(documents)
             if name == "event" and streams[doc["descriptor"]] == "primary"]
    # the sample set, first with its last frame taken as the interlock opened, then again
    first, last = names[0][0], names[-1][0]
    interrupted = copy.deepcopy(documents[first:last + 1])
    for name, doc in interrupted:
        if name == "event" and streams.get(doc["descriptor"]) == "primary" and doc is interrupted[-1][1]:
            doc["data"]["tube_shutter"] = 0
    collector = _process(documents[:first] + interrupted + documents[first:], tmp_path / "out")
    assert [s["exit_status"] for s in collector.stops] == ["success"]


def test_frames_at_the_dark_level_are_refused_even_with_the_shutter_reading_open(tmp_path):
    documents = _projection_documents(tmp_path)
    (path,) = (tmp_path / "raw").glob("*.h5")
    with h5py.File(path, "r+") as f:  # darks 0-1, reference 2-4, sample 5-7
        frames = f["entry/data/data"]
        frames[6] = frames[0]  # sample step 2: a dark frame (beam off, shutter said open)
    collector = _process(documents, tmp_path / "one")
    (stop,) = collector.stops
    assert stop["exit_status"] == "fail"
    assert "no beam in the sample set of tile 0, step 2 of 3" in stop["reason"]
    assert f"{path.name} point 6" in stop["reason"] and "% of the set's open-beam level" in stop["reason"]

    with h5py.File(path, "r+") as f:  # the whole reference set dark
        frames = f["entry/data/data"]
        for point in (2, 3, 4):
            frames[point] = frames[point % 2]
    collector = _process(documents, tmp_path / "all")
    (stop,) = collector.stops
    assert "no beam in the reference set of tile 0" in stop["reason"] and "above the dark level" in stop["reason"]


def test_check_beam_accepts_stepping_modulation_and_refuses_lag(tmp_path):
    rng = np.random.default_rng(0)
    dark = [100 + rng.normal(0, 3, (32, 32)) for _ in range(2)]
    levels = [100 + 20000 * (1 + 0.6 * np.cos(2 * np.pi * k / 5)) for k in range(5)]  # visibility 0.6
    stepping = {k: (0.96 * k, level + rng.normal(0, 50, (32, 32))) for k, level in enumerate(levels)}
    frames = ProjectionFrames(dark, stepping, dict(stepping))
    check_beam(frames)
    lag = dict(stepping)
    lag[3] = (lag[3][0], 100 + 0.05 * (levels[2] - 100) + rng.normal(0, 3, (32, 32)))  # 5 % lag
    with pytest.raises(NoBeamError, match="sample set of tile 0, step 4 of 5"):
        check_beam(ProjectionFrames(dark, stepping, lag))
