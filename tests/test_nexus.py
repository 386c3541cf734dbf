"""The run record and the derived files are NeXus that nexusformat and silx understand."""

import json
import shutil
from datetime import datetime
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import silx.io
from bluesky import RunEngine
from nexusformat.nexus import nxload
from silx.io.nxdata import get_default

from acquisition.demo import DerivedCollector
from acquisition.derived_store import IMAGES, write_derived
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing import darkfield_router
from acquisition.run_record import read_run_record, run_recorder
from conftest import small_config
from simulators.physics import Phantom, TissueSlab, cluster_preset

SHAPE = (96, 96)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One projection of a coarse cluster, recorded and processed into ``<tmp>/run``."""
    out = tmp_path_factory.mktemp("nexus") / "run"
    phantom = Phantom(TissueSlab(), (cluster_preset("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(*SHAPE), write_path=out / "raw", phantom=phantom)
    documents, collector = [], DerivedCollector()
    engine = RunEngine({})
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


def test_run_record_is_a_nexus_entry_of_the_instrument(measured):
    start = next(doc for name, doc in measured.documents if name == "start")
    with h5py.File(measured.record, "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "entry"
        classes = {"entry": "NXentry", "entry/instrument": "NXinstrument", "entry/sample": "NXsample",
                   "entry/instrument/source": "NXsource", "entry/instrument/detector": "NXdetector",
                   "entry/instrument/G0": "NXgrating", "entry/instrument/G1": "NXgrating",
                   "entry/instrument/G2": "NXgrating", "entry/data": "NXdata",
                   "entry/start_document": "NXnote", "entry/derived": "NXnote"}
        assert {path: nx_class(f, path) for path in classes} == classes
        entry = f["entry"]
        assert entry["experiment_identifier"].asstr()[()] == measured.uid
        assert datetime.fromisoformat(entry["start_time"].asstr()[()]).timestamp() == pytest.approx(start["time"])
        assert entry["sample/sample_id"].asstr()[()] == "nx-1"
        assert json.loads(entry["start_document/data"][()])["uid"] == measured.uid
        # every number of the instrument carries its unit, and the values are the start document's
        quantities = {"source/voltage": ("kV", start["tube"]["kv"]),
                      "source/current": ("mA", start["tube"]["ma"]),
                      "G1/period": ("um", start["gratings"]["g1_period_um"]),
                      "G2/period": ("um", start["gratings"]["g2_period_um"]),
                      "G1/distance": ("mm", start["geometry"]["sample_g1_mm"]),
                      "source/distance": ("mm", -start["geometry"]["source_sample_mm"]),
                      "interferometer/design_energy": ("keV", start["gratings"]["design_energy_kev"]),
                      "detector/x_pixel_size": ("um", start["detector_pixel"]["pixel_um"]),
                      "detector/count_time": ("s", start["phase_stepping"]["exposure_s"])}
        for path, (units, value) in quantities.items():
            field = entry["instrument"][path]
            assert (field.attrs["units"], field[()]) == (units, pytest.approx(value)), path
        unitless = {name for group in ("source", "G0", "G1", "G2", "interferometer", "detector",
                                       "detector/frames")
                    for name, field in entry["instrument"][group].items()
                    if isinstance(field, h5py.Dataset) and field.dtype.kind == "f" and "units" not in field.attrs}
        assert unitless <= {"duty_cycle", "magnification"}  # the dimensionless numbers


def test_dose_is_the_dose_stream(measured):
    descriptors = {doc["uid"] for name, doc in measured.documents
                   if name == "descriptor" and doc["name"] == "dose"}
    stream = [value for name, doc in measured.documents
              if name == "event" and doc["descriptor"] in descriptors for value in doc["data"].values()]
    start = next(doc for name, doc in measured.documents if name == "start")
    with h5py.File(measured.record, "r") as f:
        delivered, planned = f["entry/sample/delivered_dose"], f["entry/sample/planned_dose"]
        assert delivered.attrs["units"] == planned.attrs["units"] == "mGy"
        assert delivered[()] > 0
        assert delivered[()] == pytest.approx(sum(stream))
        assert planned[()] == pytest.approx(start["planned_dose_mgy"])


def test_frame_links_resolve_to_the_raw_frames_even_after_the_folder_moves(measured, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(measured.out, moved)
    monkeypatch.chdir(tmp_path)  # links are relative to the record, not to the working directory
    record = read_run_record(measured.record)
    (raw_file,) = set(record.frames["file"])
    with h5py.File(raw_file, "r") as raw:
        frames = raw["entry/data/data"][()]
    assert frames.shape == (len(record.frames), *SHAPE)
    with h5py.File(moved / measured.record.name, "r") as f:
        link = f["entry/instrument/detector"].get("raw_000", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.path == "/entry/data/data"
        np.testing.assert_array_equal(f["entry/instrument/detector/raw_000"][()], frames)
        np.testing.assert_array_equal(f["entry/data/raw_000"][()], frames)
        # the frame table says which frame of the file each event was
        table = f["entry/instrument/detector/frames"]
        assert table["g2_um"].attrs["units"] == "um"
        assert list(table["point"][()]) == list(range(len(record.frames)))


def test_derived_file_is_nexus_with_one_nxdata_per_image_and_a_cluster_table(measured):
    with h5py.File(measured.derived, "r") as f:
        assert f.attrs["parent_uid"] == measured.uid
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
        assert f["entry/raw/raw_000"].shape[1:] == SHAPE


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
