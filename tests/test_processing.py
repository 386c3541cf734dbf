"""On-the-fly processing: the derived run of a projection measured on the twins."""

import dataclasses
import json

import h5py
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators

from acquisition.demo import DerivedCollector, run_demo
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing import darkfield_router
from conftest import small_config
from simulators.physics import Phantom, TissueSlab, cluster_preset


def test_processor_classifies_a_cluster_and_publishes_valid_documents(tmp_path):
    phantom = Phantom(slab=TissueSlab(), clusters=(cluster_preset("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=96, cols=96), write_path=tmp_path / "raw",
                                      phantom=phantom)
    derived = []

    def publish(name, doc):
        schema_validators[DocumentNames[name]].validate(doc)
        derived.append((name, doc))

    collector = DerivedCollector()
    engine = RunEngine({})
    processor = darkfield_router(out_dir=tmp_path, publish=lambda n, d: (publish(n, d), collector(n, d)))
    engine.subscribe(processor)
    (raw_uid,) = engine(darkfield_projection(instrument, dark_frames=2))
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
        assert f.attrs["parent_uid"] == raw_uid
        assert f["entry/dark_field/data"].shape == (96, 96)
        assert list(f["entry/clusters/texture"].asstr()[()]) == ["coarse"]


def test_processor_failure_is_reported_not_raised(tmp_path, monkeypatch):
    import acquisition.projection as projection

    def broken(*args, **kwargs):
        raise ValueError("reference is all zero")

    monkeypatch.setattr(projection, "retrieve", broken)
    instrument = simulated_instrument(small_config(rows=48, cols=48), write_path=tmp_path / "raw")
    collector = DerivedCollector()
    engine = RunEngine({})
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    engine.subscribe(processor)
    engine(darkfield_projection(instrument, dark_frames=1))  # the scan itself succeeds
    processor.wait()
    assert [s["exit_status"] for s in collector.stops] == ["fail"]
    assert "reference is all zero" in collector.stops[0]["reason"]


def test_demo_classifies_clusters_as_the_truth_says(tmp_path):
    config = small_config(rows=192, cols=416, time_scale=0.0)
    phantom = dataclasses.replace(config.simulation.phantom, clusters_per_class=1)
    config = dataclasses.replace(config, simulation=dataclasses.replace(config.simulation, phantom=phantom))
    rows = run_demo(tmp_path, config, quiet=True)

    report = json.loads((tmp_path / "report.json").read_text())
    assert report == rows
    assert {r["true_texture"] for r in rows} == {"ultra-fine", "fine", "pleomorphic", "coarse"}
    assert len(rows) == 4
    for row in rows:
        assert set(row) >= {"cluster", "true_texture", "ratio", "texture", "suspicious"}
        assert row["texture"] == row["true_texture"], row
        assert row["suspicious"] == (row["ratio"] > 0.33)
    assert list((tmp_path / "raw").glob("*.h5"))


def test_the_runengine_does_not_wait_for_the_processor(tmp_path, monkeypatch):
    import threading

    import acquisition.projection as projection

    release = threading.Event()
    real = projection.analyse_projection

    def slow(*args, **kwargs):
        release.wait(10)  # processing takes "long"
        return real(*args, **kwargs)

    monkeypatch.setattr("acquisition.processing.analyse_projection", slow)
    instrument = simulated_instrument(small_config(rows=48, cols=48), write_path=tmp_path / "raw")
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    engine = RunEngine({})
    engine.subscribe(processor)
    engine(darkfield_projection(instrument, dark_frames=1, steps=3, exposure_s=1.0))
    assert collector.stops == []  # the scan finished while processing still waits
    release.set()
    processor.wait()
    assert [s["exit_status"] for s in collector.stops] == ["success"]


def test_each_mosaic_tile_is_processed_then_the_mosaic_is_stitched_and_classified(tmp_path):
    from acquisition.plans import darkfield_mosaic

    phantom = Phantom(slab=TissueSlab(), clusters=(cluster_preset("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw",
                                      phantom=phantom)
    starts = []
    collector = DerivedCollector()

    def publish(name, doc):
        collector(name, doc)
        if name == "start":
            starts.append(doc)

    processor = darkfield_router(out_dir=tmp_path, publish=publish)
    engine = RunEngine({})
    engine.subscribe(processor)
    engine(darkfield_mosaic(instrument, rows=1, columns=2, overlap=0.0, steps=3, dark_frames=1,
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
