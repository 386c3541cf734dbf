"""The Channel Access twins: the EPICS device classes of ``devices/`` over CA on loopback.

One IOC subprocess for the module (``tests/ioc_fixture.py``), a 32 x 48 detector region
and a time scale of 0.001, so a recorded 9 s exposure takes 50 ms of wall time (the
twin's shortest image).
"""

import re
import time

import epics
import h5py
import numpy as np
import pytest
from bluesky import plans as bp
from support import small_config, validated_documents, run_engine
from ioc_fixture import wait_for
from ophyd import EpicsMotor, EpicsSignal
from ophyd.utils import LimitError

import devices
from devices.tube import RefusedCommand

CONNECT_S = 10.0


@pytest.fixture
def tube(ioc):
    tube = devices.XRayTube(ioc.pv("tube:"), name="tube")
    tube.wait_for_connection(timeout=CONNECT_S)
    yield tube
    epics.caput(ioc.pv("tube:SimClearInterlock"), 1, wait=True)
    epics.caput(ioc.pv("tube:FaultReset"), 1, wait=True)
    tube.shutter.put(0)


def test_epics_motor_moves_g2_with_a_dmov_pulse_and_refuses_beyond_limits(ioc):
    g2 = EpicsMotor(ioc.pv("g2"), name="g2")
    g2.wait_for_connection(timeout=CONNECT_S)
    assert g2.limits == (-5.0, 15.0) and g2.egu == "um"

    dmov = []
    g2.motor_done_move.subscribe(lambda value, **kw: dmov.append(value), run=False)
    g2.move(2.5, wait=True, timeout=5)
    assert g2.position == pytest.approx(2.5, abs=1e-9)
    g2.move(2.5, wait=True, timeout=5)  # a null move still pulses DMOV
    wait_for(lambda: dmov.count(0) == 2 and dmov[-1] == 1, what="two DMOV pulses")

    with pytest.raises(LimitError):
        g2.move(20.0, wait=True, timeout=5)
    # a client that ignores the limits: the record sets LVIO and restores VAL, no DMOV pulse
    dmov.clear()
    assert epics.caput(ioc.pv("g2.VAL"), 20.0, wait=True) == 1
    lvio = EpicsSignal(ioc.pv("g2.LVIO"), name="lvio")
    assert lvio.get() == 1
    assert g2.user_setpoint.get() == pytest.approx(2.5)
    time.sleep(0.1)
    assert dmov == [] and g2.position == pytest.approx(2.5)
    g2.move(0.0, wait=True, timeout=5)
    assert lvio.get() == 0


def test_piezo_stepper_and_stage_arrive_within_tolerance(ioc):
    g2 = devices.PiezoStepper(ioc.pv("g2"), name="g2", tolerance_um=0.01, settle_time=0.0)
    stage = devices.SampleStage(ioc.prefix, name="stage")
    for device in (g2, stage):
        device.wait_for_connection(timeout=CONNECT_S)
    assert g2.settle_delay.get() == pytest.approx(0.05)  # configured g2.settle_s, the DLY field
    for target in (1.2, 4.8 * 3 / 9, -4.0):
        g2.move(target, wait=True, timeout=5)
        assert abs(g2.position - target) <= 0.01
    g2.move(0.0, wait=True, timeout=5)
    stage.x.move(120.0, wait=True, timeout=5)  # reference position: sample out of the beam
    stage.y.move(-3.0, wait=True, timeout=5)
    assert (stage.x.position, stage.y.position) == pytest.approx((120.0, -3.0))
    assert stage.x.limits == (-150.0, 150.0)
    for axis in (stage.x, stage.y):
        axis.move(0.0, wait=True, timeout=5)


def test_stop_halts_a_slow_move_and_limits_follow_hlm(ioc):
    axis = EpicsMotor(ioc.pv("stage:y"), name="stage_y")
    axis.wait_for_connection(timeout=CONNECT_S)
    axis.velocity.set(0.001).wait(timeout=5)  # mm per recorded s: 1 mm per wall s here
    try:
        status = axis.move(5.0, wait=False)
        wait_for(lambda: axis.moving and axis.position > 0.05, what="motion")
        axis.stop()
        status.wait(timeout=5)
        wait_for(lambda: axis.motor_done_move.get() == 1, what="DMOV after STOP")
        stopped = axis.position
        assert 0.05 < stopped < 5.0
        wait_for(lambda: axis.user_setpoint.get() == pytest.approx(stopped), what="VAL := RBV")
    finally:
        axis.velocity.set(20.0).wait(timeout=5)
        axis.move(0.0, wait=True, timeout=5)

    axis.high_limit_travel.set(10.0).wait(timeout=5)
    try:
        wait_for(lambda: axis.limits == (-150.0, 10.0), what="VAL control limits from HLM")
        with pytest.raises(LimitError):
            axis.move(12.0, wait=True, timeout=5)
    finally:
        axis.high_limit_travel.set(150.0).wait(timeout=5)
    wait_for(lambda: axis.limits == (-150.0, 150.0), what="limits restored")


def test_backlash_takeout_approaches_every_target_from_one_side(ioc):
    axis = EpicsMotor(ioc.pv("stage:x"), name="stage_x")
    axis.wait_for_connection(timeout=CONNECT_S)
    bdst = EpicsSignal(ioc.pv("stage:x.BDST"), name="bdst")
    bdst.put(0.5, wait=True)  # final approach: the last 0.5 mm in the positive direction
    readbacks = []
    axis.user_readback.subscribe(lambda value, **kw: readbacks.append(value), run=False)
    try:
        axis.move(-2.0, wait=True, timeout=5)  # against BDST: overshoots to -2.5, comes back
        wait_for(lambda: readbacks and readbacks[-1] == pytest.approx(-2.0), what="readback")
        assert min(readbacks) == pytest.approx(-2.5, abs=1e-6)
        readbacks.clear()
        axis.move(-1.0, wait=True, timeout=5)  # with BDST: no overshoot
        wait_for(lambda: readbacks and readbacks[-1] == pytest.approx(-1.0), what="readback")
        assert max(readbacks) == pytest.approx(-1.0, abs=1e-6) and min(readbacks) >= -2.0
    finally:
        bdst.put(0.0, wait=True)
        axis.move(0.0, wait=True, timeout=5)


def test_tube_shutter_opens_and_is_refused_while_interlocked(ioc, tube):
    assert tube.state.get() == "ready" and tube.interlock.get() == 1
    tube.kv.set(35.0).wait(timeout=5)
    tube.ma.set(60.0).wait(timeout=5)
    assert (tube.kv.get(), tube.ma.get()) == pytest.approx((35.0, 60.0))
    tube.shutter.set(1).wait(timeout=5)
    assert tube.shutter.get() == 1

    epics.caput(ioc.pv("tube:SimTripInterlock"), 1, wait=True)
    wait_for(lambda: tube.interlock.get() == 0 and tube.shutter.get() == 0, what="trip")
    assert tube.state.get() == "interlocked"
    started = time.monotonic()
    status = tube.shutter.set(1, timeout=5.0)
    with pytest.raises(RefusedCommand, match="refused .*Shutter = 1.*'interlocked'"):
        status.wait(timeout=3)  # the IOC fails the put: refused at once, not timed out
    assert time.monotonic() - started < 1.0
    assert not status.success and tube.shutter.get() == 0
    assert EpicsSignal(ioc.pv("tube:Shutter"), name="cmd").get() == 0  # the command was refused

    epics.caput(ioc.pv("tube:SimClearInterlock"), 1, wait=True)
    wait_for(lambda: tube.interlock.get() == 1, what="interlock closed")
    tube.shutter.set(1).wait(timeout=5)
    tube.shutter.set(0).wait(timeout=5)


def test_arc_faults_the_tube_until_fault_reset(ioc, tube):
    tube.shutter.set(1).wait(timeout=5)
    epics.caput(ioc.pv("tube:SimTripArc"), 1, wait=True)
    wait_for(lambda: tube.fault.get() == 1 and tube.shutter.get() == 0, what="arc")
    assert tube.arc.get() == 1 and tube.state.get() == "fault"
    with pytest.raises(RefusedCommand, match="refused .*Shutter = 1.*'fault'"):
        tube.shutter.set(1).wait(timeout=3)
    tube.fault_reset.put(1)
    wait_for(lambda: tube.fault.get() == 0, what="fault reset")
    assert tube.state.get() == "ready"
    tube.shutter.set(1).wait(timeout=5)


@pytest.mark.slow
def test_detector_counts_write_hdf5_frames_that_follow_g2(RE, ioc, tube):
    rows, cols = ioc.region[2:]
    detector = devices.PaxScanDetector(ioc.prefix, name="detector", write_path=ioc.write_path)
    g2 = devices.PiezoStepper(ioc.pv("g2"), name="g2", settle_time=0.0)
    for device in (detector, g2):
        device.wait_for_connection(timeout=CONNECT_S)
    detector.cam.acquire_time.set(9.0).wait(timeout=5)  # recorded s; 9 ms of wall time
    tube.kv.set(40.0).wait(timeout=5)
    tube.ma.set(70.0).wait(timeout=5)
    tube.shutter.set(1).wait(timeout=5)

    documents = validated_documents(RE)
    started = time.monotonic()
    # G2 at 0, 0 and half a period (4.8 um): the fringes invert between the 0s and 2.4
    RE(bp.list_scan([detector], g2, [0.0, 0.0, 2.4]))
    elapsed = time.monotonic() - started
    tube.shutter.set(0).wait(timeout=5)

    resources = [doc for name, doc in documents if name == "resource"]
    datums = [doc for name, doc in documents if name == "datum"]
    events = [doc for name, doc in documents if name == "event"]
    assert [r["spec"] for r in resources] == ["AD_HDF5"] and len(datums) == 3
    assert [e["data"]["detector_image"] for e in events] == [d["datum_id"] for d in datums]
    assert [e["data"]["g2"] for e in events] == pytest.approx([0.0, 0.0, 2.4], abs=0.01)
    descriptor = next(doc for name, doc in documents if name == "descriptor")
    assert list(descriptor["data_keys"]["detector_image"]["shape"]) == [rows, cols]

    filename = "/" + resources[0]["resource_path"].lstrip("/")
    assert filename.startswith(str(ioc.write_path))
    with h5py.File(filename, "r") as f:
        frames = f["entry/data/data"][()].astype(float)
    assert frames.shape == (3, rows, cols)
    noise = np.abs(frames[1] - frames[0]).mean()
    fringe = np.abs(frames[2] - frames[0]).mean()
    assert frames.mean() > 500 and fringe > 5 * noise
    assert elapsed < 10


def document_shape(documents):
    """Per stream: each data key's (dtype, shape, external), the object keys and the
    configuration keys; and how many documents of each kind (sources and uids left out)."""
    streams = {}
    for name, doc in documents:
        if name == "descriptor":
            streams[doc["name"]] = (
                {k: (v["dtype"], list(v["shape"]), v.get("external"), v.get("dtype_numpy"))
                 for k, v in doc["data_keys"].items()},
                doc["object_keys"],
                {obj: sorted(c["data_keys"]) for obj, c in doc["configuration"].items()})
    counts = {}
    for name, _ in documents:
        counts[name] = counts.get(name, 0) + 1
    return streams, counts


@pytest.mark.slow
def test_darkfield_projection_over_ca_has_the_twins_document_shape(ioc, tmp_path):
    from acquisition.instrument import epics_instrument, simulated_instrument
    from acquisition.plans import darkfield_projection

    config = small_config(*ioc.region[2:])
    assert config.setup.detector.region == ioc.region
    over_ca = epics_instrument(config, prefix=ioc.prefix, write_path=ioc.write_path)
    twins = simulated_instrument(config, write_path=tmp_path)
    runs = {}
    for kind, instrument in (("ca", over_ca), ("twin", twins)):
        with run_engine() as engine:
            runs[kind] = validated_documents(engine)
            engine(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=9.0,
                                        sample={"id": "CA-1"}))

    documents = runs["ca"]
    assert document_shape(documents) == document_shape(runs["twin"])
    streams = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    events = [doc for name, doc in documents if name == "event"]
    counts = {s: sum(streams[e["descriptor"]] == s for e in events) for s in set(streams.values())}
    assert counts["dark"] == 1 and counts["reference"] == 3 and counts["primary"] == 3
    assert all(e["data"]["tube_shutter"] == 1
               for e in events if streams[e["descriptor"]] in ("reference", "primary"))
    assert next(doc for name, doc in documents if name == "stop")["exit_status"] == "success"
    wait_for(lambda: over_ca.tube.shutter.get() == 0, what="shutter closed after the plan")
    # 9 s exceeds the panel's longest frame: two 4.5 s frames summed into one image
    assert over_ca.detector.cam.acquire_time.get() == pytest.approx(4.5)
    assert over_ca.detector.cam.num_exposures.get() == 2

    (resource,) = [doc for name, doc in documents if name == "resource"]
    with h5py.File("/" + resource["resource_path"].lstrip("/"), "r") as f:
        frames = f["entry/data/data"][()]
    assert frames.shape == (7, *ioc.region[2:]) and frames.dtype == np.uint16
    assert frames[1:].mean(axis=(1, 2)).min() > 10 * frames[0].mean()  # beam off for the dark


@pytest.mark.slow
def test_stock_ophyd_area_detector_classes_acquire_into_files(RE, ioc, tube):
    """A lab's generic ophyd detector (stock cam and HDF5 plugin) works against the twin."""
    from ophyd import Component
    from ophyd.areadetector import DetectorBase, SingleTrigger
    from ophyd.areadetector.cam import AreaDetectorCam
    from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
    from ophyd.areadetector.plugins import HDF5Plugin

    from acquisition.storage.frames import HDF5FrameHandler

    class StockHDF5(HDF5Plugin, FileStoreHDF5IterativeWrite):
        pass

    class StockDetector(SingleTrigger, DetectorBase):
        cam = Component(AreaDetectorCam, "det:cam1:")
        hdf1 = Component(StockHDF5, "det:HDF1:", write_path_template=str(ioc.write_path) + "/")

    detector = StockDetector(ioc.prefix, name="stock")
    detector.wait_for_connection(timeout=CONNECT_S)
    detector.cam.acquire_time.set(1.0).wait(timeout=5)
    tube.shutter.set(1).wait(timeout=5)
    documents = validated_documents(RE)
    RE(bp.count([detector], num=2))
    tube.shutter.set(0).wait(timeout=5)

    (resource,) = [doc for name, doc in documents if name == "resource"]
    datums = [doc for name, doc in documents if name == "datum"]
    assert resource["spec"] == "AD_HDF5" and len(datums) == 2
    handler = HDF5FrameHandler("/" + resource["resource_path"].lstrip("/"),
                               **resource["resource_kwargs"])
    frames = [handler(**datum["datum_kwargs"]) for datum in datums]
    assert [frame.shape for frame in frames] == [ioc.region[2:]] * 2
    assert min(frame.mean() for frame in frames) > 100  # exposed frames, not zeros


@pytest.mark.slow
def test_session_runs_a_plan_on_the_ioc_twins(ioc, tmp_path):
    """``talbot-lau session --ioc P``: the operator's IPython over Channel Access."""
    import os
    import subprocess
    import sys

    lines = "\n".join([
        "%mov g2 1.2",
        "%wa",  # the EPICS devices carry the twins' labels
        "%ct",  # NDStats: the mean ADU beside the image reference
        "RE(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0, sample='ca-s'))",
        "print('SHUTTER', tube.shutter.get(), 'G2', round(g2.position, 3), type(g2).__name__)",
    ])
    env = dict(os.environ, TALBOT_LAU_STATE=str(tmp_path / "state"))
    command = [sys.executable, "-m", "acquisition.cli", "session", "--ioc", ioc.prefix,
               "--out", str(tmp_path / "data"), "--write-path", str(ioc.write_path), "-c", lines]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"talbot-lau session: EPICS ({ioc.prefix}) instrument" in done.stdout
    assert "SHUTTER 0 G2" in done.stdout and "PiezoStepper" in done.stdout
    assert re.search(r"^\s*g2\s+1\.2", done.stdout, re.M) and re.search(r"^\s*stage_x\s", done.stdout, re.M)
    assert re.search(r"^detector_stats1_mean_value\s+\d+\.\d+$", done.stdout, re.M)
    assert list((tmp_path / "data").glob("run_*"))  # the run record, as with the twins


@pytest.mark.slow
def test_stats_plugin_gives_each_event_the_mean_of_its_frame(RE, ioc, tube):
    """``det:Stats1:`` (NDStats) over CA: the image's mean is a hinted reading of every event,
    computed from the very frame the HDF5 plugin wrote, before the trigger completes."""
    detector = devices.PaxScanDetector(ioc.prefix, name="detector", write_path=ioc.write_path)
    detector.wait_for_connection(timeout=CONNECT_S)
    assert detector.hints == {"fields": ["detector_stats1_mean_value"]}
    detector.cam.acquire_time.set(1.0).wait(timeout=5)
    documents = validated_documents(RE)
    RE(bp.count([detector], num=2))  # shutter closed: dark frames
    tube.shutter.set(1).wait(timeout=5)
    RE(bp.count([detector], num=1))  # open beam
    tube.shutter.set(0).wait(timeout=5)

    descriptor = next(doc for name, doc in documents if name == "descriptor")
    assert descriptor["data_keys"]["detector_stats1_mean_value"]["dtype"] == "number"
    assert descriptor["hints"]["detector"]["fields"] == ["detector_stats1_mean_value"]
    datums = {doc["datum_id"]: doc for name, doc in documents if name == "datum"}
    resources = {doc["uid"]: doc for name, doc in documents if name == "resource"}
    means = []
    for event in (doc for name, doc in documents if name == "event"):
        datum = datums[event["data"]["detector_image"]]
        path = "/" + resources[datum["resource"]]["resource_path"].lstrip("/")
        with h5py.File(path, "r") as f:
            frame = f["entry/data/data"][datum["datum_kwargs"]["point_number"]]
        mean = event["data"]["detector_stats1_mean_value"]
        assert mean == pytest.approx(frame.mean(), rel=1e-9)
        means.append(mean)
    assert means[2] > 5 * max(means[:2])  # the beam, not the dark offset


def test_the_shutter_closes_through_a_fresh_channel_when_ophyds_refuses(ioc, tube, monkeypatch):
    """After a hung IOC ophyd's channels can stay read-only: closing then goes through a
    fresh Channel Access connection and confirms the readback."""
    from ophyd.utils.errors import ReadOnlyError

    tube.kv.set(40.0).wait(timeout=5)
    tube.ma.set(70.0).wait(timeout=5)
    tube.shutter.set(1).wait(timeout=5)
    assert tube.shutter.get() == 1

    def read_only(*args, **kwargs):
        raise ReadOnlyError("tube_shutter: write access denied (as after a hung IOC)")

    monkeypatch.setattr(tube.shutter, "set", read_only)
    tube.shutter.stop()  # what the RunEngine calls on pause, halt and suspension
    deadline = time.monotonic() + 3
    while tube.shutter.get(use_monitor=False) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tube.shutter.get(use_monitor=False) == 0
