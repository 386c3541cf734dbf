"""The run catalogue: projections on the twins written by TiledWriter, found by sample id."""

import contextlib
import dataclasses
import secrets
import shutil
import sqlite3
import subprocess
import time

import h5py
import numpy as np
import pytest
from ioc_fixture import _free_port

from acquisition.storage.catalogue import (
    asset_path, catalogue_writer, connect_catalogue, find_runs, open_catalogue, read_api_key,
    relative_uri, server_api_key, server_command, server_environment)
from acquisition.storage.frames import HANDLERS, HDF5FrameHandler, open_frame_files
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing.live import darkfield_router
from support import small_config, run_engine

API_KEY = secrets.token_hex(16)  # tiled wants letters and digits only


class Recorder:
    """Each run's events by stream, and where each event's frame is in its file."""

    def __init__(self):
        self.streams, self.events, self.resources, self.datums = {}, [], {}, {}
        self.run_descriptors: dict[str, set] = {}  # run uid -> its descriptor uids

    def __call__(self, name, doc):
        if name == "descriptor":
            self.streams[doc["uid"]] = doc["name"]
        elif name == "event":
            self.events.append(dict(doc, stream=self.streams[doc["descriptor"]]))
        elif name == "resource":
            self.resources[doc["uid"]] = doc
        elif name == "datum":
            self.datums[doc["datum_id"]] = doc

    def column(self, run_uid, stream, key):
        return [e["data"][key] for e in self.events
                if e["stream"] == stream and e["descriptor"] in self.run_descriptors[run_uid]]

    def file(self, datum_id) -> str:
        """The file of a datum's resource."""
        resource = self.resources[self.datums[datum_id]["resource"]]
        return "/" + resource["resource_path"].lstrip("/")

    def frame(self, datum_id):
        """The raw frame of a datum, through the project's one loader."""
        datum = self.datums[datum_id]
        resource = self.resources[datum["resource"]]
        handler = HANDLERS[resource["spec"]]("/" + resource["resource_path"],
                                             **resource["resource_kwargs"])
        try:
            return handler(**datum["datum_kwargs"])
        finally:
            handler.close()


@pytest.fixture(scope="module")
def catalogued(tmp_path_factory):
    """Two projections (S-17 processed on the fly, S-18) written into a catalogue, which is
    then closed and reopened; a tiled server on the directory starts meanwhile (~7 s).  The
    detector writes bitshuffle/LZ4-compressed frames, so every read here reads those."""
    root = tmp_path_factory.mktemp("catalogue")
    raw, directory = root / "raw", root / "catalogue"
    readable = [raw, root / "derived"]
    client = open_catalogue(directory, readable=readable)
    port = _free_port()
    with open(root / "server.log", "w") as log:  # the server has its own copy of the descriptor
        server = subprocess.Popen(server_command(directory, port=port),
                                  env=server_environment(API_KEY), stdout=subprocess.DEVNULL, stderr=log)
    try:
        config = small_config()
        config = dataclasses.replace(config, instrument=dataclasses.replace(
            config.instrument, detector=dataclasses.replace(config.instrument.detector, compression="bslz4")))
        instrument = simulated_instrument(config, write_path=raw)
        with contextlib.closing(client.context), run_engine() as engine:  # closed: then reopened
            recorder, derived = Recorder(), Recorder()
            engine.subscribe(recorder)
            engine.subscribe(catalogue_writer(client))
            derived_writer = catalogue_writer(client)
            processor = darkfield_router(out_dir=root / "derived",
                                         publish=lambda name, doc: (derived(name, doc), derived_writer(name, doc)))
            token = engine.subscribe(processor)  # only S-17 is processed
            uids = {}
            for sample in ("S-17", "S-18"):
                known = set(recorder.streams)
                (uids[sample],) = engine(darkfield_projection(instrument, steps=3, dark_frames=1,
                                                              sample={"id": sample}))
                recorder.run_descriptors[uids[sample]] = set(recorder.streams) - known
                if token is not None:
                    engine.unsubscribe(token)
                    token = None
            processor.wait()
            recorder.derived = derived
        reopened = open_catalogue(directory, readable=readable)
        recorder.root = root
        with contextlib.closing(reopened.context):
            yield reopened, uids, recorder, (server, port)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_find_runs_gives_exactly_the_run_of_a_sample(catalogued):
    client, uids, _, _ = catalogued
    assert list(find_runs(client, "S-17")) == [uids["S-17"]]
    assert list(find_runs(client, "S-18")) == [uids["S-18"]]
    assert list(find_runs(client, "S-99")) == []


@pytest.mark.slow
def test_runs_survive_reopening_the_catalogue(catalogued):
    client, uids, _, _ = catalogued  # the fixture closed the writing client and reopened
    run = client[uids["S-17"]]
    assert run.metadata["start"]["sample"]["id"] == "S-17"
    assert run.metadata["stop"]["exit_status"] == "success"
    assert set(run) == {"dark", "reference", "primary", "dose"}


@pytest.mark.slow
def test_primary_stream_keeps_the_recorded_g2_positions(catalogued):
    client, uids, recorder, _ = catalogued
    for sample, uid in uids.items():
        recorded = recorder.column(uid, "primary", "g2")
        assert len(recorded) == 3
        np.testing.assert_array_equal(client[uid]["primary"]["g2"].read(), recorded)  # um


@pytest.mark.slow
def test_image_columns_read_back_the_raw_frames(catalogued):
    client, uids, recorder, _ = catalogued
    uid = uids["S-17"]
    for path in (recorder.root / "raw").glob("*.h5"):  # the catalogue reads compressed frames
        with h5py.File(path, "r") as f:
            assert "32008" in f["entry/data/data"]._filters  # bitshuffle (hdf5plugin)
    for stream, count in (("dark", 1), ("reference", 3), ("primary", 3)):
        images = client[uid][stream]["detector_image"].read()
        assert images.shape == (count, 96, 112) and images.dtype == np.uint16
        for image, datum_id in zip(images, recorder.column(uid, stream, "detector_image")):
            np.testing.assert_array_equal(image, recorder.frame(datum_id))


@pytest.mark.slow
def test_derived_run_is_catalogued_with_its_images(catalogued):
    client, uids, recorder, _ = catalogued
    (derived_uid,) = find_runs(client, "S-17", derived=True)
    assert list(find_runs(client, "S-18", derived=True)) == []
    derived = client[derived_uid]
    assert derived.metadata["start"]["parent_uid"] == uids["S-17"]
    assert derived.metadata["stop"]["exit_status"] == "success"
    images = derived["images"]
    (event,) = [e for e in recorder.derived.events if e["stream"] == "images"]
    for name in ("dark_field", "labels"):
        image = images[name].read()
        assert image.shape == (96, 112)
        np.testing.assert_array_equal(image, recorder.derived.frame(event["data"][name]))
    assert images["dark_field"].dtype == np.float32 and images["labels"].dtype == np.int32


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The callback:UserWarning")  # event-model on the failed start
def test_a_failing_catalogue_never_fails_the_scan(RE, tmp_path, caplog):
    class Unreachable:  # a tiled client whose server is gone
        def include_data_sources(self):
            return self

        def create_container(self, **kwargs):
            raise ConnectionError("catalogue server unreachable")

    RE.subscribe(catalogue_writer(Unreachable()))
    instrument = simulated_instrument(small_config(rows=32, cols=32), write_path=tmp_path)
    (uid,) = RE(darkfield_projection(instrument, steps=3, dark_frames=1, sample={"id": "S-19"}))
    assert uid
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "acquisition.storage.catalogue"]
    assert len(errors) == 1 and "start document not written" in errors[0].getMessage()


@pytest.mark.slow
def test_a_tiled_server_serves_the_same_catalogue(catalogued, tmp_path):
    _, uids, recorder, (server, port) = catalogued
    import httpx

    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            pytest.fail(f"tiled server exited with {server.returncode}: see server.log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("tiled server did not start within 30 s")
        time.sleep(0.1)
    with open(f"/proc/{server.pid}/cmdline", "rb") as f:  # the key is not on its command line
        cmdline = f.read()
    assert b"serve" in cmdline and API_KEY.encode() not in cmdline
    with pytest.raises(Exception, match="401"):  # the key is required (the refused client closed)
        connect_catalogue(f"http://127.0.0.1:{port}", api_key="wrongkey")
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    key_file.chmod(0o600)
    client = connect_catalogue(f"http://127.0.0.1:{port}", api_key_file=key_file)
    with contextlib.closing(client.context):  # its HTTP connections to the server
        uid = uids["S-17"]
        assert list(find_runs(client, "S-17")) == [uid]
        (datum_id, *_) = recorder.column(uid, "primary", "detector_image")
        np.testing.assert_array_equal(client[uid]["primary"]["detector_image"][0], recorder.frame(datum_id))


def test_api_key_from_a_private_file_the_environment_or_fresh(tmp_path, monkeypatch):
    monkeypatch.delenv("TALBOT_LAU_API_KEY", raising=False)
    key, _, path = server_api_key(tmp_path)  # fresh, in a file only the user can read
    assert path == tmp_path / "api_key" and path.stat().st_mode & 0o777 == 0o600
    assert read_api_key(path) == key and len(key) == 64 and key.isalnum()
    assert server_api_key(tmp_path)[0] != key  # a new one each time
    monkeypatch.setenv("TALBOT_LAU_API_KEY", "fromenv1")
    assert server_api_key(tmp_path)[:2] == ("fromenv1", "$TALBOT_LAU_API_KEY")
    mine = tmp_path / "mine"
    mine.write_text("fromfile1\n")
    mine.chmod(0o644)
    with pytest.raises(ValueError, match="readable by you only"):
        server_api_key(tmp_path, mine)
    mine.chmod(0o600)
    assert server_api_key(tmp_path, mine)[0] == "fromfile1"
    assert "--api-key" not in server_command(tmp_path)
    assert server_environment("abc123", base={})["TILED_SINGLE_USER_API_KEY"] == "abc123"


@pytest.mark.slow
@pytest.mark.parametrize("holder", ["frames' shared handle", "h5py swmr", "h5py"])
def test_a_frame_reads_while_its_file_is_open_elsewhere_in_the_process(catalogued, holder):
    """tiled's HDF5 adapter opened the file anew with swmr=True: OSError (SWMR read access
    flag not the same) when the process already held it without SWMR, as acquisition.storage.frames'
    handle does for a finished file.  Our adapter reads through that handle."""
    client, uids, recorder, _ = catalogued
    uid = uids["S-17"]
    datum_ids = recorder.column(uid, "primary", "detector_image")
    path = recorder.file(datum_ids[0])
    (derived_uid,) = find_runs(client, "S-17", derived=True)
    (event,) = [e for e in recorder.derived.events if e["stream"] == "images"]
    derived_path = recorder.derived.file(event["data"]["dark_field"])
    frame_holder, derived_holder = {
        "frames' shared handle": (HDF5FrameHandler, HANDLERS["TL_DERIVED_HDF5"]),
        "h5py swmr": (lambda p: h5py.File(p, "r", swmr=True),) * 2,
        "h5py": (lambda p: h5py.File(p, "r"),) * 2}[holder]
    before = open_frame_files()
    frame_file, derived_file = frame_holder(path), derived_holder(derived_path)
    try:
        frames = client[uid]["primary"]["detector_image"].read()
        for image, datum_id in zip(frames, datum_ids):
            np.testing.assert_array_equal(image, recorder.frame(datum_id))
        np.testing.assert_array_equal(client[uid]["primary"]["detector_image"][1],
                                      recorder.frame(datum_ids[1]))
        np.testing.assert_array_equal(client[derived_uid]["images"]["dark_field"].read(),
                                      recorder.derived.frame(event["data"]["dark_field"]))
        assert open_frame_files() == before + ([path] if holder == "frames' shared handle" else [])
    finally:
        frame_file.close()
        derived_file.close()
    assert open_frame_files() == before  # the catalogue keeps no file open


@pytest.mark.slow
def test_the_catalogue_stores_paths_relative_to_its_directory(catalogued):
    _, _, recorder, _ = catalogued
    with sqlite3.connect(recorder.root / "catalogue" / "catalog.db") as db:
        uris = [uri for (uri,) in db.execute("SELECT data_uri FROM assets")]
    files = sorted(uri for uri in uris if not uri.startswith("sqlite:"))
    assert files and all(uri.startswith(("../raw/", "../derived/")) for uri in files), files
    assert not any(str(recorder.root) in uri for uri in files)


@pytest.mark.slow
def test_a_moved_catalogue_reads_frames_and_derived_images_at_its_new_place(catalogued, tmp_path):
    """The catalogue and its run folder copied elsewhere, the copy then moved (so only the
    new place holds it), and opened there: its tables (marked, to tell them from the
    original's), frames and derived images read, and nothing is read from the place it was
    written at (not readable for the new catalogue)."""
    _, uids, recorder, _ = catalogued
    root = recorder.root
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("server.log"))
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    copy.rename(moved)
    with contextlib.closing(sqlite3.connect(moved / "catalogue" / "tables.sqlite")) as tables, \
            tables:  # mark the copy's tables (committed, then closed)
        for (table,) in tables.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            if "g2" in [column[1] for column in tables.execute(f'PRAGMA table_info("{table}")')]:
                tables.execute(f'UPDATE "{table}" SET g2 = g2 + 1000')
    client = open_catalogue(moved / "catalogue", readable=[moved / "raw", moved / "derived"])
    try:
        uid = uids["S-17"]
        run = client[uid]
        np.testing.assert_array_equal(run["primary"]["g2"].read(),  # um, the copy's
                                      np.add(recorder.column(uid, "primary", "g2"), 1000))
        for stream in ("dark", "reference", "primary"):
            images = run[stream]["detector_image"].read()
            for image, datum_id in zip(images, recorder.column(uid, stream, "detector_image"), strict=True):
                np.testing.assert_array_equal(image, recorder.frame(datum_id))
        (derived_uid,) = find_runs(client, "S-17", derived=True)
        (event,) = [e for e in recorder.derived.events if e["stream"] == "images"]
        np.testing.assert_array_equal(client[derived_uid]["images"]["labels"].read(),
                                      recorder.derived.frame(event["data"]["labels"]))
        assert str(moved / "catalogue") in (moved / "catalogue" / "tiled.yml").read_text()
    finally:
        client.context.close()


def test_asset_paths_resolve_inside_the_readable_directories_only(tmp_path):
    directory, raw = tmp_path / "catalogue", tmp_path / "raw"
    uri = relative_uri(f"file://localhost{raw}/a b.h5", directory)
    assert uri == "../raw/a%20b.h5"
    assert asset_path(uri, directory, [raw]) == raw / "a b.h5"
    assert asset_path(f"file://localhost{raw}/x.h5", None, [raw]) == raw / "x.h5"
    with pytest.raises(PermissionError, match="outside the catalogue's readable directories"):
        asset_path("../secret/x.h5", directory, [raw])
    with pytest.raises(PermissionError, match="outside"):
        asset_path("../raw/../../x.h5", directory, [raw])
    with pytest.raises(ValueError, match="relative to a catalogue directory"):
        asset_path(uri, None, [raw])
    with pytest.raises(ValueError, match="not a file:// URI"):
        relative_uri("s3://bucket/x.h5", directory)
