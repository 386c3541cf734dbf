"""The shutter closes on every way out, frames without beam are caught, and the dose counts
what was exposed (in-process twins; the Channel Access faults are in test_fault_injection)."""

import threading
import time

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted

from acquisition.dose import dose_rate_mgy_per_s
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection, source_suspenders
from acquisition.plans.checks import SetRejected, frame_problem
from acquisition.plans.settings import stepping_settings
from support import small_config, validated_documents
from simulators.shared.generator import ExposureTimer


def make_instrument(tmp_path, time_scale=0.0):
    return simulated_instrument(small_config(rows=32, cols=40, time_scale=time_scale),
                                write_path=tmp_path / "raw")


def events_of(documents, stream):
    uids = {doc["uid"] for name, doc in documents if name == "descriptor" and doc["name"] == stream}
    return [doc for name, doc in documents if name == "event" and doc["descriptor"] in uids]


def stop_when_open(engine, tube, action, frames_open=2):
    """Call ``action(engine)`` from a thread once the shutter has been open for a while."""
    def watch():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if tube.shutter.get() == 1 and tube.shutter.get() == 1:
                time.sleep(0.05 * frames_open)
                if tube.shutter.get() == 1:
                    action(engine)
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.parametrize("way_out", ["pause", "halt", "abort", "stop", "resume"])
def test_every_interruption_closes_the_shutter(RE, tmp_path, way_out):
    """Ctrl-C twice (a hard pause) mid-set, then what the operator types next."""
    instrument = make_instrument(tmp_path, time_scale=0.02)
    tube = instrument.tube
    documents = validated_documents(RE)
    thread = stop_when_open(RE, tube, lambda e: e.request_pause(defer=False))
    with pytest.raises(RunEngineInterrupted):
        RE(darkfield_projection(instrument, steps=5, exposure_s=2.0, dark_frames=0))
    thread.join()
    assert RE.state == "paused"
    assert tube.shutter.get() == 0, "paused with the shutter open"
    if way_out == "pause":
        RE.abort("test")
    elif way_out == "resume":
        RE.resume()
        assert documents[-1][1]["exit_status"] == "success"
    else:
        getattr(RE, way_out)()
    assert RE.state == "idle"
    assert tube.shutter.get() == 0
    assert documents[-1][0] == "stop"


def test_stopping_the_shutter_signal_closes_it(tmp_path):
    """The RunEngine stops what a plan touched (``tube.shutter``), not ``tube``."""
    tube = make_instrument(tmp_path).tube
    tube.shutter.set(1).wait(2)
    tube.shutter.stop()
    assert tube.shutter.get() == 0
    tube.shutter.set(1).wait(2)
    tube.stop()
    assert tube.shutter.get() == 0


def test_exposure_timer_closes_the_shutter_when_the_heartbeat_stops(tmp_path):
    instrument = simulated_instrument(small_config(rows=32, cols=40), write_path=tmp_path / "raw")
    tube = instrument.tube
    tube.timer.floor_wall_s = 0.2  # the twin's floor, shortened for the test
    tube.heartbeat.put(0.1)
    tube.shutter.set(1).wait(2)
    time.sleep(0.1)
    tube.heartbeat.put(0.1)  # fed: still open
    assert tube.shutter.get() == 1
    deadline = time.monotonic() + 3
    while tube.shutter.get() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tube.shutter.get() == 0 and tube.watchdog_tripped.get() == 1
    tube.shutter.set(1).wait(2)  # opening again clears the flag and re-arms
    assert tube.watchdog_tripped.get() == 0
    tube.shutter.set(0).wait(2)
    assert tube.timer.expiries == 1


def test_exposure_timer_refuses_an_unbounded_default():
    with pytest.raises(ValueError, match="watchdog_s"):
        ExposureTimer(lambda: None, default_s=float("nan"))
    fired = []
    timer = ExposureTimer(lambda: fired.append(1), time_scale=0.0, default_s=5.0, floor_wall_s=0.05)
    timer.beat(float("inf"))  # a junk beat arms the default, it does not disarm
    time.sleep(0.2)
    assert fired == [1]


def test_frame_problem_names_what_is_wrong(tmp_path):
    instrument = make_instrument(tmp_path)
    settings = stepping_settings(instrument, steps=3, exposure_s=1.0)
    good = {"tube_shutter": 1, "tube_interlock": 1, "tube_hv_on": 1, "tube_fault": 0,
            "tube_kv": settings.kv, "tube_ma": settings.ma}
    check = dict(settings=settings, beam=True, exposure_s=1.0, written=1)
    assert frame_problem(good, "tube", **check) is None
    assert "shutter closed" in frame_problem({**good, "tube_shutter": 0}, "tube", **check)
    assert "interlock open" in frame_problem({**good, "tube_interlock": 0}, "tube", **check)
    assert "kV" in frame_problem({**good, "tube_kv": settings.kv * 0.8}, "tube", **check)
    assert "0 frames written" in frame_problem(good, "tube", **{**check, "written": 0})
    assert "exposure 9 s" in frame_problem(good, "tube", **{**check, "exposure_s": 9.0})
    dark = dict(check, beam=False)
    assert frame_problem({**good, "tube_shutter": 0}, "tube", **dark) is None
    assert "dark" in frame_problem(good, "tube", **dark)


def test_a_frame_without_beam_repeats_the_set_and_the_run_is_whole(RE, tmp_path):
    """The shutter closes by itself during the sample set once (no suspender installed):
    the set is repeated, the run ends success, every sample frame kept saw the beam."""
    instrument = make_instrument(tmp_path)
    tube = instrument.tube
    documents = validated_documents(RE)
    closed_once = []

    def close_during_sample(name, doc):
        if name == "event" and not closed_once and doc["seq_num"] == 2 and tube.shutter.get():
            if any(d["name"] == "primary" and d["uid"] == doc["descriptor"]
                   for n, d in documents if n == "descriptor"):
                closed_once.append(doc["seq_num"])
                tube.shutter.put(0, force=True)  # a shutter that fell closed (no interlock)

    RE.subscribe(close_during_sample)
    RE(darkfield_projection(instrument, steps=3, exposure_s=1.0, dark_frames=1))
    assert closed_once
    stop = documents[-1][1]
    assert stop["exit_status"] == "success"
    sample = events_of(documents, "primary")
    assert len(sample) == 3 + 3  # the rejected set's frames are kept, the set taken again
    assert [e["data"]["tube_shutter"] for e in sample[-3:]] == [1, 1, 1]
    assert tube.shutter.get() == 0


def test_no_beam_twice_fails_the_run_with_the_reason(RE, tmp_path):
    instrument = make_instrument(tmp_path)
    tube = instrument.tube
    documents = validated_documents(RE)

    def refuse(name, doc):
        if name == "event" and tube.shutter.get():
            tube.shutter.put(0, force=True)

    RE.subscribe(refuse)
    with pytest.raises(SetRejected, match="reference set .* rejected 2 times.*shutter closed"):
        RE(darkfield_projection(instrument, steps=3, exposure_s=1.0, dark_frames=0))
    stop = documents[-1][1]
    assert stop["exit_status"] == "fail" and "shutter closed" in stop["reason"]
    assert tube.shutter.get() == 0


def test_detector_settings_lost_mid_run_are_reapplied(RE, tmp_path):
    """An IOC restart resets AcquireTime to its default (9 s): the frame is rejected, the
    settings re-applied and the set repeated; no frame is kept at the wrong exposure."""
    instrument = make_instrument(tmp_path)
    cam = instrument.detector.cam
    documents = validated_documents(RE)
    reset = []

    def restart(name, doc):
        if name == "event" and not reset and doc["seq_num"] == 1 and cam.acquire_time.get() != 9.0:
            if any(d["name"] == "reference" and d["uid"] == doc["descriptor"]
                   for n, d in documents if n == "descriptor"):
                reset.append(1)
                cam.acquire_time.put(9.0)

    RE.subscribe(restart)
    RE(darkfield_projection(instrument, steps=3, exposure_s=1.0, dark_frames=1))
    assert reset and documents[-1][1]["exit_status"] == "success"
    assert cam.acquire_time.get() == pytest.approx(1.0)


def test_a_failed_frame_write_fails_the_run_and_closes_the_shutter(RE, tmp_path):
    """Disk full in the detector's file: the set is tried again, then the run fails naming
    the cause; the shutter closes first."""
    instrument = make_instrument(tmp_path)
    detector = instrument.detector
    documents = validated_documents(RE)
    calls = []

    def full(frame, *when):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return original(frame, *when)

    original = detector._append
    detector._append = full
    with pytest.raises(SetRejected, match="rejected 2 times.*No space left on device"):
        RE(darkfield_projection(instrument, steps=3, exposure_s=1.0, dark_frames=1))
    stop = documents[-1][1]
    assert stop["exit_status"] == "fail" and "No space left" in stop["reason"]
    assert instrument.tube.shutter.get() == 0


@pytest.mark.slow
def test_dose_counts_every_sample_frame_exposed_rewinds_included(RE, tmp_path):
    """An interlock trip mid sample set suspends; the set repeats.  The recorded dose is the
    dose of every sample event with the shutter open, repeats included."""
    instrument = make_instrument(tmp_path, time_scale=0.01)
    tube = instrument.tube
    cfg = instrument.config.instrument
    for suspender in source_suspenders(tube, kv=cfg.tube.kv, ma=cfg.tube.ma, sleep_s=0.1):
        RE.install_suspender(suspender)
    documents = validated_documents(RE)
    tripped = []

    def trip(name, doc):
        if name == "event" and not tripped and doc["seq_num"] == 3 and tube.shutter.get():
            if any(d["name"] == "primary" and d["uid"] == doc["descriptor"]
                   for n, d in documents if n == "descriptor"):
                tripped.append(1)
                tube.trip_interlock()
                threading.Timer(0.3, tube.clear_interlock).start()

    RE.subscribe(trip)
    RE(darkfield_projection(instrument, steps=5, exposure_s=1.0, dark_frames=0))
    assert tripped and documents[-1][1]["exit_status"] == "success"
    sample = events_of(documents, "primary")
    exposed = [e for e in sample if e["data"]["tube_shutter"]]
    assert len(sample) > 5  # the interrupted set was taken again
    rate = dose_rate_mgy_per_s(cfg.dose, cfg.tube.kv, cfg.tube.ma, None)
    dose = events_of(documents, "dose")[0]["data"]["delivered_dose_mgy"]
    assert dose == pytest.approx(len(exposed) * rate * 1.0)
    assert tube.shutter.get() == 0


@pytest.mark.slow
def test_a_plan_that_stops_feeding_the_timer_has_its_shutter_closed(RE, tmp_path):
    """A plan that opens the shutter and then hangs (here: sleeps) past the exposure timer:
    the generator closes the shutter by itself."""
    instrument = make_instrument(tmp_path)
    tube = instrument.tube
    tube.timer.floor_wall_s = 0.2

    def hung():
        yield from bps.abs_set(tube.heartbeat, 0.1, wait=True)
        yield from bps.abs_set(tube.shutter, 1, wait=True)
        yield from bps.sleep(1.0)
        return (yield from bps.rd(tube.shutter))

    closed_during_sleep = RE(hung())
    assert tube.shutter.get() == 0 and tube.watchdog_tripped.get() == 1
    assert np.isfinite(tube.timer.expiries) and tube.timer.expiries >= 1
    del closed_during_sleep
