"""The run record and the derived files are NeXus that nexusformat and silx understand."""

import json
import shutil
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import silx.io
from nexusformat.nexus import nxload
from silx.io.nxdata import get_default

from acquisition.demo import DerivedCollector
from acquisition.storage.derived_store import IMAGES, write_derived
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing.live import darkfield_router
from acquisition.storage.run_record_reader import read_run_record
from acquisition.storage.run_recorder import run_recorder
from support import small_config, run_engine
from simulators.physics import Phantom, TissueSlab, cluster_preset

SHAPE = (96, 96)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One projection of a coarse cluster, recorded and processed into ``<tmp>/run``."""
    out = tmp_path_factory.mktemp("nexus") / "run"
    phantom = Phantom(TissueSlab(), (cluster_preset("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(*SHAPE), write_path=out / "raw", phantom=phantom)
    documents, collector = [], DerivedCollector()
    with run_engine() as engine:
        engine.subscribe(lambda name, doc: documents.append((name, doc)))
        engine.subscribe(run_recorder(out))
        processor = darkfield_router(out_dir=out, publish=collector)
        engine.subscribe(processor)
        (uid,) = engine(darkfield_projection(instrument, dark_frames=2, sample={"id": "nx-1", "thickness_mm": 45}))
        processor.wait()
        assert [s["exit_status"] for s in collector.stops] == ["success"]
        (derived,) = out.glob("derived_*.h5")
        return SimpleNamespace(out=out, uid=uid, record=out / f"run_{uid[:8]}.nxs", derived=derived,
                               documents=documents, clusters=collector.clusters)


def nx_class(f, path):
    return f[path].attrs["NX_class"]


@pytest.mark.slow
def test_run_record_is_a_nexus_entry_of_the_instrument(measured):
    start = next(doc for name, doc in measured.documents if name == "start")
    with h5py.File(measured.record, "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "entry"
        assert f.attrs["file_name"] == measured.record.name  # no path: the folder may move
        classes = {"entry": "NXentry", "entry/instrument": "NXinstrument", "entry/sample": "NXsample",
                   "entry/instrument/source": "NXsource", "entry/instrument/detector": "NXdetector",
                   "entry/instrument/interferometer": "NXcollection",
                   "entry/instrument/interferometer/G0": "NXgrating",
                   "entry/instrument/interferometer/G1": "NXgrating",
                   "entry/instrument/interferometer/G2": "NXgrating",
                   "entry/instrument/g2": "NXpositioner", "entry/instrument/filter_0": "NXfilter",
                   "entry/instrument/detector/region": "NXdetector_module", "entry/data": "NXdata",
                   "entry/start_document": "NXnote", "entry/derived": "NXnote"}
        assert {path: nx_class(f, path) for path in classes} == classes
        entry = f["entry"]
        assert entry["definition"].asstr()[()] == "NXtomo"
        assert entry["entry_identifier_uuid"].asstr()[()] == measured.uid
        assert "experiment_identifier" not in entry  # the proposal's, not the run's
        assert datetime.fromisoformat(entry["start_time"].asstr()[()]).timestamp() == pytest.approx(start["time"])
        assert entry["sample/sample_id"].asstr()[()] == "nx-1"
        thickness = entry["sample/thickness"]
        assert thickness.dtype.kind == "f" and thickness[()] == 45.0 and thickness.attrs["units"] == "mm"
        assert json.loads(entry["start_document/data"][()])["uid"] == measured.uid
        # every number of the instrument carries its unit, and the values are the start document's
        quantities = {"interferometer/G1/period": ("um", start["gratings"]["g1_period_um"]),
                      "interferometer/G2/period": ("um", start["gratings"]["g2_period_um"]),
                      "interferometer/G2/depth": ("um", start["gratings"]["g2_gold_um"]),
                      "interferometer/G1/transformations/z": ("mm", start["geometry"]["sample_g1_mm"]),
                      "interferometer/G0/transformations/z": ("mm", start["geometry"]["source_g0_mm"]
                                                              - start["geometry"]["source_sample_mm"]),
                      "source/distance": ("mm", -start["geometry"]["source_sample_mm"]),
                      "source/transformations/z": ("mm", -start["geometry"]["source_sample_mm"]),
                      "interferometer/design_energy": ("keV", start["gratings"]["design_energy_kev"]),
                      "interferometer/g1_phase_shift": ("rad", np.pi * start["gratings"]["g1_phase_shift_pi"]),
                      "detector/x_pixel_size": ("um", start["detector_pixel"]["pixel_um"]),
                      "detector/readout/sample_pixel_size": ("mm", start["detector_pixel"]["sample_pixel_mm"]),
                      "filter_0/thickness": ("mm", start["source"]["filtration"][0][1])}
        for path, (units, value) in quantities.items():
            field = entry["instrument"][path]
            assert (field.attrs["units"], field[()]) == (units, pytest.approx(value)), path
        instrument = entry["instrument"]
        for n in range(3):  # each grating is placed along the beam through its transformation
            grating = instrument[f"interferometer/G{n}"]
            assert grating["depends_on"].asstr()[()] == grating["transformations/z"].name
            assert list(grating["transformations/z"].attrs["vector"]) == [0, 0, 1]
        assert instrument["source/anode_material"].asstr()[()] == start["source"]["target"] == "Mo"
        assert [instrument[f"filter_{i}/description"].asstr()[()] for i in range(3)] == \
            [material for material, _ in start["source"]["filtration"]]
        region = instrument["detector/region"]
        assert list(region["data_origin"][()]) + list(region["data_size"][()]) == start["detector_pixel"]["region"]
        unitless = {name for group in ("source", "interferometer", "interferometer/G0", "interferometer/G1",
                                       "interferometer/G2", "detector", "detector/readout", "detector/frames", "g2")
                    for name, field in entry["instrument"][group].items()
                    if isinstance(field, h5py.Dataset) and field.dtype.kind == "f" and "units" not in field.attrs}
        assert unitless <= {"duty_cycle", "magnification"}  # the dimensionless numbers


@pytest.mark.slow
def test_every_frame_has_its_key_positions_time_and_beam_from_its_event(measured):
    descriptors = {doc["uid"]: doc["name"] for name, doc in measured.documents if name == "descriptor"}
    events = [doc for name, doc in measured.documents
              if name == "event" and descriptors[doc["descriptor"]] != "dose"]
    start = next(doc for name, doc in measured.documents if name == "start")
    with h5py.File(measured.record, "r") as f:
        entry = f["entry"]
        keys = {"dark": 2, "reference": 1, "primary": 0}
        assert list(entry["data/image_key"][()]) == [keys[descriptors[e["descriptor"]]] for e in events]
        assert list(entry["sample/rotation_angle"][()]) == [0.0] * len(events)
        assert entry["sample/rotation_angle"].attrs["units"] == "deg"
        per_frame = {"instrument/g2/value": "g2", "instrument/g2/target_value": "g2_user_setpoint",
                     "sample/x_translation": "stage_x", "sample/y_translation": "stage_y",
                     "instrument/source/voltage": "tube_kv", "instrument/source/current": "tube_ma"}
        for path, key in per_frame.items():
            np.testing.assert_allclose(entry[path][()], [e["data"][key] for e in events], err_msg=path)
        times = entry["instrument/detector/stop_time"]
        np.testing.assert_allclose(times[()], [e["time"] - start["time"] for e in events])
        assert datetime.fromisoformat(times.attrs["start"]).timestamp() == pytest.approx(start["time"])
        exposure = start["phase_stepping"]["exposure_s"]
        np.testing.assert_allclose(entry["instrument/detector/count_time"][()], exposure)
        # the NXdata's fields are the detector's and the sample's, linked
        for name, target in (("data", "instrument/detector/data"), ("image_key", "instrument/detector/image_key"),
                             ("rotation_angle", "sample/rotation_angle")):
            assert entry["data"][name].id == entry[target].id
            assert entry["data"][name].attrs["target"] == "/entry/" + target


@pytest.mark.slow
def test_dose_is_the_dose_stream(measured):
    descriptors = {doc["uid"] for name, doc in measured.documents
                   if name == "descriptor" and doc["name"] == "dose"}
    stream = [value for name, doc in measured.documents
              if name == "event" and doc["descriptor"] in descriptors for value in doc["data"].values()]
    start = next(doc for name, doc in measured.documents if name == "start")
    with h5py.File(measured.record, "r") as f:
        delivered, planned = f["entry/sample/dose/delivered"], f["entry/sample/dose/planned"]
        assert delivered.attrs["units"] == planned.attrs["units"] == "mGy"
        assert delivered[()] > 0
        assert delivered[()] == pytest.approx(sum(stream))
        assert planned[()] == pytest.approx(start["planned_dose_mgy"])


@pytest.mark.slow
def test_the_frames_are_one_stack_that_resolves_after_the_folder_moves(measured, tmp_path, monkeypatch):
    record = read_run_record(measured.record)
    (raw_file,) = set(record.frames["file"])
    with h5py.File(raw_file, "r") as raw:
        frames = raw["entry/data/data"][()][record.frames["point"]]
    assert frames.shape == (len(record.frames), *SHAPE)
    moved = tmp_path / "moved"
    shutil.copytree(measured.out, moved)
    monkeypatch.chdir(tmp_path)  # paths are relative to the record, not to the working directory
    with h5py.File(moved / measured.record.name, "r") as f:
        stack = f["entry/instrument/detector/data"]
        assert stack.is_virtual
        assert {source.file_name for source in stack.virtual_sources()} == {"raw/" + Path(raw_file).name}
        np.testing.assert_array_equal(stack[()], frames)
        np.testing.assert_array_equal(f["entry/data/data"][()], frames)
        # the frame table says which frame of which file each event was, relative to the record
        table = f["entry/instrument/detector/frames"]
        assert table["g2_um"].attrs["units"] == "um"
        assert set(table["file"].asstr()[()]) == {"raw/" + Path(raw_file).name}
        assert list(table["point"][()]) == list(range(len(record.frames)))
    rows = read_run_record(Path("moved") / measured.record.name).frames
    assert {str(Path(f).resolve()) for f in rows["file"]} == {str((moved / "raw" / Path(raw_file).name).resolve())}


@pytest.mark.slow
def test_derived_file_is_nexus_with_one_nxdata_per_image_and_a_cluster_table(measured):
    with h5py.File(measured.derived, "r") as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "dark_field"
        for name in (*IMAGES, "labels"):
            group = f["entry"][name]
            assert group.attrs["NX_class"] == "NXdata" and group.attrs["signal"] == "data"
            assert group["data"].shape == SHAPE
        assert f["entry/differential_phase/data"].attrs["units"] == "rad"
        table = f["entry/clusters"]
        assert table.attrs["NX_class"] == "NXcollection"
        assert all(column.ndim == 1 and column.dtype.names is None for column in table.values())
        assert list(table["texture"].asstr()[()]) == [c["texture"] for c in measured.clusters] == ["coarse"]
        np.testing.assert_allclose(table["ratio"][()], [c["ratio"] for c in measured.clusters])
        assert list(table["suspicious"][()]) == [True]
        labels = f["entry/labels/data"][()]
        (label,) = table["label"][()]
        assert (labels == label).sum() >= table["n_pixels"][0] > 0
        # back to the raw frames through the run record (written in the same directory)
        assert f["entry/raw/data"].shape[1:] == SHAPE


@pytest.mark.slow
def test_nexusformat_and_silx_open_both_files(measured):
    record, derived = nxload(str(measured.record)), nxload(str(measured.derived))
    for tree in (record.tree, derived.tree):
        assert "NXentry" in tree and "NXdata" in tree
    assert "NXdetector" in record.tree and "NXsource" in record.tree
    assert derived.entry.dark_field.nxsignal.shape == SHAPE
    assert derived.plottable_data.nxpath == "/entry/dark_field"
    assert record.plottable_data.nxsignal.shape[1:] == SHAPE
    for path, shape in ((measured.record, SHAPE), (measured.derived, SHAPE)):
        with silx.io.open(str(path)) as f:
            default = get_default(f)
            assert default is not None and default.is_valid, path
            assert default.signal.shape[-2:] == shape


def test_derived_file_without_clusters_links_a_record_elsewhere(tmp_path):
    images = {name: np.ones(SHAPE) for name in IMAGES}
    record = tmp_path / "records" / "run_abcdef12.nxs"
    path = write_derived(tmp_path / "derived" / "derived_abcdef12.h5", SimpleNamespace(**images),
                         np.zeros(SHAPE, int), [], "abcdef12-uid", run_record=record)
    with h5py.File(path, "r") as f:
        assert all(len(column) == 0 for column in f["entry/clusters"].values())
        link = f["entry"].get("raw", getlink=True)
        assert (link.filename, link.path) == ("../records/run_abcdef12.nxs", "/entry/data")
    assert nxload(str(path)).entry.labels.nxsignal.shape == SHAPE


def test_a_record_from_before_nexus_is_still_read(tmp_path):
    path = tmp_path / "run_old.h5"
    rows = np.array([("primary", 0.5, 1.0, 2.0, "/data/raw.h5", 3, 0)],
                    dtype=[("stream", h5py.string_dtype()), ("g2_um", "f8"), ("stage_x_mm", "f8"),
                           ("stage_y_mm", "f8"), ("file", h5py.string_dtype()), ("point", "i8"),
                           ("tile", "i8")])
    with h5py.File(path, "w") as f:
        f.attrs["start"] = json.dumps({"uid": "old", "phase_stepping": {}})
        f.attrs["stop"] = json.dumps({"exit_status": "success"})
        f["frames"] = rows
    record = read_run_record(path)
    assert record.start["uid"] == "old" and int(record.frames["point"][0]) == 3


def test_a_record_of_the_earlier_nexus_layout_reads_its_frames_after_a_move(tmp_path):
    """Absolute paths in the frame table and one ``raw_NNN`` link per file (before NXtomo):
    once the folder moved, the files are found through the links."""
    old = tmp_path / "old"
    (old / "raw").mkdir(parents=True)
    for name in ("a.h5", "b.h5"):
        with h5py.File(old / "raw" / name, "w") as f:
            f["entry/data/data"] = np.zeros((2, 4, 4), np.uint16)
    with h5py.File(old / "run_0ld.nxs", "w") as f:
        f["entry/start_document/data"] = json.dumps({"uid": "0ld", "phase_stepping": {}})
        f["entry/stop_document/data"] = json.dumps({"exit_status": "success"})
        table = f.create_group("entry/instrument/detector/frames")
        table["stream"] = ["dark", "primary", "primary"]
        table["file"] = [str(old / "raw" / n) for n in ("a.h5", "b.h5", "b.h5")]
        table["point"] = [0, 0, 1]
        for index, name in enumerate(("a.h5", "b.h5")):
            f["entry/instrument/detector"][f"raw_{index:03d}"] = h5py.ExternalLink(f"raw/{name}", "/entry/data/data")
    assert list(read_run_record(old / "run_0ld.nxs").frames["file"]) == [str(old / "raw" / n) for n in ("a.h5", "b.h5", "b.h5")]
    moved = tmp_path / "moved"
    old.rename(moved)
    frames = read_run_record(moved / "run_0ld.nxs").frames
    assert list(frames["file"]) == [str(moved / "raw" / n) for n in ("a.h5", "b.h5", "b.h5")]
    assert list(frames["shutter"]) == [-1, -1, -1]
