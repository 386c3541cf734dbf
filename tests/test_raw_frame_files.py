"""Raw frame files in ADCore's NDFileHDF5 default layout, with per-frame NDAttributes, from
both detector twins; compressed files read back bit-identical by every reader (issue 16)."""

import dataclasses
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from support import small_config, run_engine
from ioc_fixture import wait_for

from acquisition.config import ConfigError, load_config
from acquisition.storage.frames import HDF5FrameHandler
from acquisition.instrument import embedded_attributes_file, epics_instrument, simulated_instrument
from acquisition.plans import darkfield_projection
from simulators.shared.frame_file import (COMPRESSIONS, EPICS_EPOCH_OFFSET_S, append_frame,
                                   close_frame_file, create_frame_file, read_attributes_file)
from simulators.physics import detector_shape, simulate_frame
from simulators.shared.world import READBACK_TYPES

PV_ATTRIBUTES = {"G2Position": "g2", "StageX": "stage_x", "StageY": "stage_y",
                 "TubeKV": "tube_kv", "TubeMA": "tube_ma", "ShutterOpen": "tube_shutter",
                 "HighVoltageOn": "tube_hv_on"}
"""The attribute file's NDAttributes and the event field reading the same readback."""


def with_compression(config, compression):
    detector = dataclasses.replace(config.instrument.detector, compression=compression)
    return dataclasses.replace(config, instrument=dataclasses.replace(config.instrument,
                                                                      detector=detector))


def layout(path) -> dict:
    """Every group and dataset of a file: its NX_class/NDAttr* attributes, dtype, frame shape."""
    items = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {key: np.asarray(value).tolist() for key, value in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                items[name] = (str(obj.dtype), obj.shape[1:], obj.fletcher32,
                               sorted(obj._filters), attrs)
            else:
                items[name] = attrs
        f.visititems(visit)
    return items


def record(instrument, **plan):
    with run_engine() as engine:
        documents = []
        engine(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=9.0,
                                    sample={"id": "RAW-1"}, **plan),
               lambda name, doc: documents.append((name, doc)))
        (resource,) = [doc for name, doc in documents if name == "resource"]
        return "/" + resource["resource_path"].lstrip("/"), documents


def frame_events(documents) -> list[tuple[int, dict]]:
    """(point number, event data) of every event with a frame."""
    points = {doc["datum_id"]: doc["datum_kwargs"]["point_number"]
              for name, doc in documents if name == "datum"}
    return [(points[doc["data"]["detector_image"]], doc) for name, doc in documents
            if name == "event" and "detector_image" in doc["data"]]


def check_frame_file(path, documents) -> None:
    """ADCore's layout, NDAttributes that match the events, frames whose mean is the NDStats
    mean the detector computed from the frame it wrote (so they read back unchanged)."""
    from nexusformat.nexus.validate import validate_file

    events = frame_events(documents)
    start = next(doc for name, doc in documents if name == "start")
    with h5py.File(path, "r") as f:
        assert {f[g].attrs["NX_class"] for g in ("entry", "entry/instrument",
                                                  "entry/instrument/detector", "entry/data",
                                                  "entry/instrument/NDAttributes")} == {
            "NXentry", "NXinstrument", "NXdetector", "NXdata", "NXcollection"}
        assert f["entry/data"].attrs["signal"] == "data"
        assert f["entry/data/data"] == f["entry/instrument/detector/data"]  # one dataset, two names
        assert isinstance(f.get("entry/data/data", getlink=True), h5py.HardLink)
        frames = f["entry/data/data"][()]
        nd = {name: f["entry/instrument/NDAttributes"][name][()]
              for name in f["entry/instrument/NDAttributes"]}
        assert f["entry/instrument/NDAttributes/G2Position"].attrs["NDAttrSource"] == "TL:g2.RBV"
    assert len(frames) == len(events) and all(len(v) == len(frames) for v in nd.values())
    assert list(np.diff(nd["NDArrayUniqueId"])) == [1] * (len(frames) - 1)
    posix = nd["NDArrayTimeStamp"] + EPICS_EPOCH_OFFSET_S
    assert np.allclose(nd["NDArrayEpicsTSSec"] + nd["NDArrayEpicsTSnSec"] * 1e-9,
                       nd["NDArrayTimeStamp"], atol=1e-6)
    for point, event in events:
        assert start["time"] - 1 < posix[point] <= event["time"]  # the exposure's start
        for name, field in PV_ATTRIBUTES.items():
            assert nd[name][point] == pytest.approx(float(event["data"][field]), abs=1e-6), name
        stored = np.asarray(frames[point], dtype=np.float64).mean()
        assert stored == event["data"]["detector_stats1_mean_value"]
    assert [nd["ShutterOpen"][p] for p, _ in events] == [0] + [1] * (len(events) - 1)  # the dark
    _, errors = validate_file(str(path))  # nexusformat's base-class check (nxcheck)
    assert errors == 0


@pytest.mark.slow
def test_in_process_twin_writes_adcore_layout_with_the_readbacks_per_frame(tmp_path):
    config = with_compression(small_config(32, 48), "zlib")
    path, documents = record(simulated_instrument(config, write_path=tmp_path))
    check_frame_file(path, documents)
    with h5py.File(path, "r") as f:
        dataset = f["entry/data/data"]
        assert (dataset.compression, dataset.shuffle, dataset.fletcher32) == ("gzip", True, True)
    punx = shutil.which("punx")
    if punx is None:
        pytest.skip("punx is not installed")
    done = subprocess.run([punx, "validate", path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^ERROR\s+0\s", done.stdout, re.MULTILINE), done.stdout[-2000:]


@pytest.mark.slow
def test_ca_twin_writes_the_same_layout_through_the_epics_device(ioc, tmp_path):
    """The EPICS device sets Compression (BSLZ4) and NDAttributesFile at stage; the IOC
    writes what the in-process twin writes, value for value where they share a readback."""
    config = with_compression(small_config(*ioc.region[2:]), "bslz4")
    over_ca = epics_instrument(config, prefix=ioc.prefix, write_path=ioc.write_path)
    ca_path, ca_documents = record(over_ca)
    wait_for(lambda: over_ca.tube.shutter.get() == 0, what="shutter closed after the plan")
    twin_path, twin_documents = record(simulated_instrument(config, write_path=tmp_path))
    check_frame_file(ca_path, ca_documents)
    check_frame_file(twin_path, twin_documents)
    assert layout(ca_path) == layout(twin_path)
    with h5py.File(ca_path, "r") as f:
        assert "32008" in f["entry/data/data"]._filters  # bitshuffle, HDF5 filter 32008
    # unstaged: the cam's settings restored (ophyd's stage_sigs)
    assert over_ca.detector.hdf1.compression.get(as_string=True) == "None"


def engine_frames(n: int = 4, shape=(64, 80)):
    """Frames of the physics engine (embedded setup, G2 stepped), uint16 ADU."""
    config = load_config()
    det = config.setup.detector
    region = ((det.rows - shape[0]) // 2, (det.columns - shape[1]) // 2, *shape)
    setup = dataclasses.replace(config.setup, detector=dataclasses.replace(det, region=region))
    from simulators.physics.setup import TubeState

    frames = [simulate_frame(setup, None, g2_um=k * 4.8 / n, stage_mm=(0.0, 0.0),
                             tube=TubeState(), exposure_s=9.0, seed=k) for k in range(n)]
    assert frames[0].shape == detector_shape(setup)
    return frames


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressed_frames_read_back_bit_identical_by_every_reader(tmp_path, compression):
    import silx.io

    frames = engine_frames()
    path = tmp_path / f"{compression}_000000.h5"
    file, dataset = create_frame_file(path, frames[0].shape, compression=compression)
    for frame in frames:
        append_frame(dataset, frame)
    assert close_frame_file(file) is None
    handler = HDF5FrameHandler(str(path))
    try:
        assert all(np.array_equal(handler(k), frame) for k, frame in enumerate(frames))
    finally:
        handler.close()
    with silx.io.open(str(path)) as f:
        assert np.array_equal(f["/entry/data/data"][()], np.stack(frames))
        assert np.array_equal(f["/entry/instrument/detector/data"][()], np.stack(frames))


@pytest.mark.slow
def test_offline_reconstruction_reads_a_bslz4_run(tmp_path):
    """A compressed run reconstructs offline to what the live processor found."""
    from acquisition.processing.offline import reconstruct_run
    from recorded_runs import record_pleomorphic_run

    record, live = record_pleomorphic_run(tmp_path, with_compression(small_config(rows=96, cols=96), "bslz4"))
    (raw,) = (tmp_path / "raw").glob("*.h5")
    with h5py.File(raw, "r") as f:
        assert "32008" in f["entry/data/data"]._filters
    rows = reconstruct_run(record, tmp_path / "offline")
    assert [(r["texture"], r["ratio"]) for r in rows] == [
        (c["texture"], round(c["ratio"], 4)) for c in live]
    assert rows and rows[0]["texture"] == "pleomorphic"


def test_the_attribute_file_names_pvs_the_twins_serve():
    """configs/paxscan_attributes.xml: EPICS_PV attributes on the PVs of configs/instrument.yaml."""
    prefix = load_config().instrument.epics.prefix
    attributes = read_attributes_file(embedded_attributes_file(), READBACK_TYPES)
    assert {a.name for a in attributes} == set(PV_ATTRIBUTES)
    assert {a.source for a in attributes} == {prefix + pv for pv in READBACK_TYPES}
    assert {a.name: a.dtype for a in attributes}["ShutterOpen"] == "<i2"  # an enum's DBR_NATIVE


GOOD_PV_AS_STRING = ('<Attributes><Attribute name="G" type="EPICS_PV" source="TL:g2.RBV" '
                     'dbrtype="DBR_STRING"/></Attributes>')


@pytest.mark.parametrize("text, message", [
    ('<Attributes><Attribute name="T" type="EPICS_PV" source="TL:oven:T_RBV"/></Attributes>',
     "'T': source 'TL:oven:T_RBV' is not a PV"),
    ('<Attributes><Attribute name="N" type="PARAM" source="ARRAY_COUNTER"/></Attributes>',
     "'N': type 'PARAM' is not simulated"),
    (GOOD_PV_AS_STRING, "'G': dbrtype 'DBR_STRING'"),
    ("<Attributes>", "not XML"),
])
def test_a_bad_attribute_file_is_named(tmp_path, text, message):
    path = tmp_path / "attributes.xml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_attributes_file(path, READBACK_TYPES)


def test_a_wrong_compression_names_the_field(tmp_path):
    import yaml

    from acquisition.config import default_config_dir

    data = yaml.safe_load((default_config_dir() / "instrument.yaml").read_text())
    data["detector"]["compression"] = "gzip"
    path = tmp_path / "instrument.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"instrument.yaml: detector.compression: 'gzip' is not"):
        load_config(path)
    sim = yaml.safe_load((default_config_dir() / "simulation.yaml").read_text())
    sim["detector"]["compression"] = "zlib"  # the twins store frames as instrument.yaml says
    path = tmp_path / "simulation.yaml"
    path.write_text(yaml.safe_dump(sim))
    with pytest.raises(ConfigError, match=r"simulation.yaml: detector.compression: unknown field"):
        load_config(simulation=path)
