"""Faults in the operator's session: interlock trips while subscribers are busy, a resumed
run in the catalogue, a full disk under the run recorder."""

import errno
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from support import small_config, run_engine

from acquisition.storage.catalogue import catalogue_writer, open_catalogue
from acquisition.storage.frames import HANDLERS
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection, source_suspenders
from acquisition.storage.run_record_reader import read_run_record
from acquisition.storage.run_recorder import run_recorder
from acquisition.session import session_namespace

SUSPENDED = "Signal tube_interlock is low: X-ray interlock open"


class Documents:
    """Every document of a RunEngine, and each event's stream (a fast subscriber)."""

    def __init__(self):
        self.docs, self.streams = [], {}
        self.changed = threading.Condition()

    def __call__(self, name, doc):
        if name == "descriptor":
            self.streams[doc["uid"]] = doc["name"]
        with self.changed:
            self.docs.append((name, doc))
            self.changed.notify_all()

    def events(self, stream):
        return [doc for name, doc in self.docs if name == "event" and self.streams[doc["descriptor"]] == stream]

    def wait_for(self, predicate, timeout):
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


class Tripper(threading.Thread):
    """Opens the interlock chain ``trips`` times while a phase-stepping set is being taken
    (the shutter open, at least one new frame since the plan last resumed); after each
    trip waits for the RunEngine's answer (the suspension in the ``interruptions``
    stream), closes the chain again and waits for the plan to resume."""

    def __init__(self, engine, tube, documents, trips, answer_timeout=10.0):
        super().__init__(daemon=True, name="tripper")
        self.engine, self.tube, self.documents = engine, tube, documents
        self.trips, self.answer_timeout = trips, answer_timeout
        self.answered, self.unanswered, self.latency = 0, 0, []
        self.stop_event = threading.Event()

    def _frames(self):
        return sum(1 for name, doc in self.documents.docs if name == "event"
                   and self.documents.streams[doc["descriptor"]] in ("reference", "primary"))

    def _interruptions(self, content):
        return [e for e in self.documents.events("interruptions") if e["data"]["interruption"] == content]

    def run(self):
        for _ in range(self.trips):
            frames = self._frames()
            # a set under way: a new frame taken with the shutter open
            if not self.documents.wait_for(lambda frames=frames: self._frames() > frames
                                           and self.tube.shutter.get() == 1
                                           and self.engine.state == "running", 30):
                return
            suspended = len(self._interruptions(SUSPENDED))
            started = time.monotonic()
            self.tube.trip_interlock()
            if self.documents.wait_for(lambda suspended=suspended: len(self._interruptions(SUSPENDED)) > suspended,
                                       self.answer_timeout):
                self.answered += 1
                self.latency.append(time.monotonic() - started)
            else:
                self.unanswered += 1
            self.tube.clear_interlock()  # the plan resumes (the next trip waits for its frames)


class LoopProbe(threading.Thread):
    """Measures how long the RunEngine's loop takes to run a callback scheduled from
    another thread, as a suspender's does (bluesky gives up after 0.1 s)."""

    def __init__(self, engine):
        super().__init__(daemon=True, name="loop-probe")
        self.engine, self.latency, self.done = engine, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            answered, started = threading.Event(), time.monotonic()
            self.engine.loop.call_soon_threadsafe(answered.set)
            answered.wait(10)
            self.latency.append(time.monotonic() - started)
            time.sleep(0.005)

    def stop(self):
        self.done.set()
        self.join(5)
        return max(self.latency)


def _sample_frames_equal_the_files(client, uid, documents):
    """The catalogue's primary stream holds a row and a frame per emitted event."""
    events = [e for e in documents.events("primary") if e["descriptor"] in
              {d["uid"] for n, d in documents.docs if n == "descriptor" and d["run_start"] == uid}]
    stream = client[uid]["primary"]
    assert list(stream["seq_num"].read()) == [e["seq_num"] for e in events]
    images = stream["detector_image"].read()
    assert images.shape[0] == len(events)
    resources = {d["uid"]: d for n, d in documents.docs if n == "resource"}
    datums = {d["datum_id"]: d for n, d in documents.docs if n == "datum"}
    for image, event in zip(images, events):
        datum = datums[event["data"]["detector_image"]]
        resource = resources[datum["resource"]]
        handler = HANDLERS["AD_HDF5"]("/" + resource["resource_path"], **resource["resource_kwargs"])
        try:
            np.testing.assert_array_equal(image, handler(**datum["datum_kwargs"]))
        finally:
            handler.close()
    return events


@pytest.mark.slow
def test_the_catalogue_keeps_every_frame_of_a_resumed_run(tmp_path):
    instrument = simulated_instrument(small_config(rows=32, cols=32, time_scale=0.02),
                                      write_path=tmp_path / "raw")
    client = open_catalogue(tmp_path / "catalogue", readable=[tmp_path / "raw"])
    try:
        with run_engine() as engine:
            engine.record_interruptions = True
            documents = Documents()
            engine.subscribe(documents)
            engine.subscribe(catalogue_writer(client))
            cfg = instrument.config.instrument
            for suspender in source_suspenders(instrument.tube, kv=cfg.tube.kv, ma=cfg.tube.ma, sleep_s=0.05):
                engine.install_suspender(suspender)

            def trip_in_the_sample_set():  # after its second frame
                if documents.wait_for(lambda: len(documents.events("primary")) >= 2, 60):
                    instrument.tube.trip_interlock()
                    documents.wait_for(lambda: len(documents.events("interruptions")) >= 1, 10)
                    instrument.tube.clear_interlock()

            threading.Thread(target=trip_in_the_sample_set, daemon=True).start()
            (uid,) = engine(darkfield_projection(instrument, steps=4, dark_frames=1, exposure_s=1.0))

            run = client[uid]
            assert run.metadata["stop"]["exit_status"] == "success"
            events = _sample_frames_equal_the_files(client, uid, documents)
            seq_nums = [e["seq_num"] for e in events]
            assert len(events) > 4 and seq_nums[-4:] == [1, 2, 3, 4]  # the repeated set, after the interrupted one
            assert seq_nums[:2] == [1, 2]
    finally:
        client.context.close()


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("TALBOT_LAU_STATE", str(tmp_path / "state"))


@pytest.mark.slow
def test_twenty_interlock_trips_in_the_full_session_are_all_answered(tmp_path, state):
    """Every subscriber of ``talbot-lau session`` (table, progress, run recorder, catalogue,
    processor) is subscribed while the interlock opens 20 times during a projection's
    phase-stepping sets: each trip suspends the plan, which resumes and repeats the set."""
    instrument = simulated_instrument(small_config(rows=64, cols=64, time_scale=0.02),
                                      write_path=tmp_path / "data" / "raw")
    namespace = session_namespace(instrument, tmp_path / "data", suspend_sleep_s=0.05)
    session, engine = namespace["session"], namespace["RE"]
    try:
        documents = Documents()
        engine.subscribe(documents)
        plan = {"steps": 5, "dark_frames": 2, "exposure_s": 1.0, "reference_exposure_s": 1.0,
                "sample": "trip-20"}
        # the twin computes its first frames (spectrum, phantom) on the RunEngine's thread,
        # which stalls the loop for up to a second: a first run warms it up.  The catalogue
        # opens at that run's first document, in its writer's thread (tiled builds its
        # pydantic models holding the GIL for tenths of a second): the measured run starts
        # once it is open and has caught up
        engine(darkfield_projection(instrument, **plan))
        namespace["catalogue"].wait(60)
        assert session.flush(60)
        documents.docs.clear()
        tripper, probe = Tripper(engine, instrument.tube, documents, trips=20), LoopProbe(engine)
        started = time.monotonic()
        tripper.start()
        probe.start()
        (uid,) = engine(darkfield_projection(instrument, **plan))
        took = time.monotonic() - started
        worst = probe.stop()
        tripper.join(5)
        assert session.flush(60)

        assert (tripper.answered, tripper.unanswered) == (20, 0), tripper.latency
        assert worst < 0.1, f"the RunEngine's loop was held for {worst:.3f} s"
        suspensions = [e for e in documents.events("interruptions") if e["data"]["interruption"] == SUSPENDED]
        assert len(suspensions) == 20
        (stop,) = [doc for name, doc in documents.docs if name == "stop"]
        assert stop["exit_status"] == "success"
        # every set complete, its last frames (the ones used) taken with the shutter open
        for stream, count in (("reference", 5), ("primary", 5)):
            events = documents.events(stream)
            assert len(events) >= count
            assert all(e["data"]["tube_shutter"] == 1 for e in events[-count:])
        assert all(e["data"]["tube_shutter"] == 0 for e in documents.events("dark"))
        # the derived run used beam-lit frames only, the record and the catalogue have it all
        catalogue = namespace["catalogue"]
        derived = [catalogue[d] for d in namespace["find_runs"](catalogue, "trip-20", derived=True)]
        assert uid in {d.metadata["start"]["parent_uid"] for d in derived}
        assert [d.metadata["stop"]["exit_status"] for d in derived] == ["success", "success"]
        record = read_run_record(tmp_path / "data" / f"run_{uid[:8]}.nxs")
        assert len(record.frames) == sum(len(documents.events(s)) for s in ("dark", "reference", "primary"))
        _sample_frames_equal_the_files(catalogue, uid, documents)
        assert took < 60, took
    finally:
        session.close(30)


def _fill(directory):
    """Fill the file system of ``directory`` to the last byte."""
    path = os.path.join(directory, "filler")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(descriptor)


def _record_a_projection(tmp_path, out):
    instrument = simulated_instrument(small_config(rows=32, cols=32), write_path=tmp_path / "raw")
    with run_engine() as engine:
        engine.subscribe(run_recorder(out))
        stops = []
        engine.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
        (uid,) = engine(darkfield_projection(instrument, steps=3, dark_frames=1))
        return uid, stops


@pytest.mark.slow
@pytest.mark.parametrize("where", ["hdf5", "disk"])
def test_a_full_disk_leaves_no_record_and_one_error_naming_it(tmp_path, monkeypatch, caplog, where):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "hdf5":  # HDF5 fails while the record's fields are written
        monkeypatch.setattr("acquisition.storage.run_record.nx_field", no_space)
    else:  # the bytes fail to reach the disk
        monkeypatch.setattr("acquisition.storage.run_record.os.fsync", no_space)
    out = tmp_path / "records"
    with caplog.at_level(logging.ERROR, logger="acquisition.storage.run_record"):
        uid, stops = _record_a_projection(tmp_path, out)
    assert [s["exit_status"] for s in stops] == ["success"]  # the scan never saw it
    assert not out.exists() or not list(out.iterdir())  # no empty, truncated or temporary file
    (error,) = [r for r in caplog.records if r.name == "acquisition.storage.run_record"]
    assert f"run_{uid[:8]}.nxs NOT written" in error.getMessage()
    assert "No space left on device" in error.getMessage()


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_session_faults as t
from pathlib import Path
t._fill({out!r})
uid, stops = t._record_a_projection(Path({tmp!r}), Path({out!r}))
print("RUN", stops[0]["exit_status"], uid[:8])
"""


@pytest.mark.slow
def test_a_full_tmpfs_under_the_recorder_ends_cleanly(tmp_path):
    """A real full file system (a 1 MB tmpfs, where mounting is permitted), in a process of
    its own so that its exit is checked too."""
    out = tmp_path / "tiny"
    out.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)],
                                 capture_output=True, text=True, check=False)
    except OSError as err:  # no mount command
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        script = SCRIPT.format(tests=os.path.dirname(__file__), out=str(out), tmp=str(tmp_path))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]  # no crash at the exit
        assert "RUN success" in done.stdout
        uid8 = done.stdout.split()[-1]
        assert f"run_{uid8}.nxs NOT written" in done.stderr
        assert done.stderr.count("NOT written") == 1
        assert sorted(os.listdir(out)) == ["filler"]  # nothing half-written
    finally:
        subprocess.run(["umount", str(out)], capture_output=True, check=False)
