"""The motor record and generator twins behave like the real records for stock clients.

pyepics ``epics.Motor``, ophyd ``EpicsMotor``/``EpicsSignal`` and caproto's sync client
against ``talbot-lau ioc``: put-completion that waits for the move, calibration that moves
nothing, homing, SPMG, tweak, relative moves, jog, DVAL/RVAL/DIFF, OFF/DIR, MSTA bits,
limit switches and the record's alarm, PREC/EGU on every position field; the tube's enums,
refused puts that fail and its alarms; CA beacons only on the served interfaces.

Most cases use the session IOC (time scale 0.001: one recorded second is a wall ms; a
slow VELO makes a move last wall time).  Timing cases (put-completion, RBV post rate,
LVIO at start-up) spawn an IOC of their own at time scale 1 and talk to it with caproto's
sync client (libca, hence pyepics and ophyd, only reach the session IOC's port).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid

import epics
import pytest
from caproto import AlarmSeverity, AlarmStatus, ChannelType, ErrorResponseReceived
from caproto.sync.client import read, write
from ioc_fixture import _free_port, searching_port, spawn_ioc, stop_ioc, wait_for
from ophyd import EpicsMotor, EpicsSignal
from ophyd.utils import LimitError, UnknownStatusFailure

import devices
from devices.tube import RefusedCommand
from simulators.ioc.motor import (
    MSTA_DONE,
    MSTA_HOME,
    MSTA_HOMED,
    MSTA_MOVING,
    MSTA_PLUS_LS,
)
from simulators.ioc.server import beacon_environment

CONNECT_S = 10.0
SLOW = 0.001
"""mm (um) per recorded s: 1 egu per wall second at the session IOC's time scale 0.001."""


def get(pv, **kwargs):
    value = epics.caget(pv, use_monitor=False, **kwargs)
    assert value is not None, f"{pv} did not answer"
    return value


def put(pv, value, wait=True):
    assert epics.caput(pv, value, wait=wait, timeout=10) == 1


@pytest.fixture
def stage_y(ioc):
    """``P stage:y`` as an EpicsMotor, restored afterwards (speed, SPMG, offset, position)."""
    axis = EpicsMotor(ioc.pv("stage:y"), name="stage_y")
    axis.wait_for_connection(timeout=CONNECT_S)
    yield axis
    record = ioc.pv("stage:y")
    put(record + ".SPMG", "Go")
    put(record + ".STOP", 1)
    for field, value in ((".VELO", 20.0), (".JVEL", 20.0), (".SET", 0), (".FOFF", 0),
                         (".DIR", 0), (".OFF", 0.0), (".HLM", 150.0), (".LLM", -150.0)):
        put(record + field, value)
    put(record + ".VAL", 0.0)
    assert get(record + ".RBV") == pytest.approx(0.0) and get(record + ".DMOV") == 1


def alarm(pv):
    """(status, severity) of ``pv`` (caproto's sync client, the session's port)."""
    response = read(pv, data_type=ChannelType.TIME_DOUBLE, timeout=3, repeater=False)
    return AlarmStatus(response.metadata.status), AlarmSeverity(response.metadata.severity)


# --- put-completion, RBV rate, LVIO at start-up: an IOC at time scale 1 ----------------

@pytest.fixture(scope="module")
def real_time_ioc(tmp_path_factory):
    """``talbot-lau ioc --time-scale 1`` on its own port, its beacons on a private port."""
    port, beacon_port = _free_port(), _free_port()
    prefix = f"R{uuid.uuid4().hex[:6]}:"
    write_path = tmp_path_factory.mktemp("real-time-ioc")
    beacons = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    beacons.bind(("127.0.0.1", beacon_port))  # before the IOC starts: its first beacons
    beacons.settimeout(5.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EPICS_CAS_BEACON_PORT", str(beacon_port))
        process = spawn_ioc(prefix, port, write_path, time_scale=1.0)
    try:
        yield prefix, port, beacons
    finally:
        stop_ioc(process)
        beacons.close()


@pytest.mark.slow
def test_lvio_is_0_at_start_and_every_position_field_has_prec_and_egu(real_time_ioc):
    prefix, port, _ = real_time_ioc
    with searching_port(port):
        for axis, egu in (("g2", "um"), ("stage:x", "mm")):
            assert read(f"{prefix}{axis}.LVIO", timeout=3, repeater=False).data[0] == 0
            for field, units in ((".RBV", egu), ("", egu), (".DRBV", egu), (".HLM", egu),
                                 (".LLM", egu), (".RDBD", egu), (".OFF", egu), (".DIFF", egu),
                                 (".VELO", f"{egu}/s"), (".DLY", "s")):
                metadata = read(prefix + axis + field, data_type=ChannelType.CTRL_DOUBLE,
                                timeout=3, repeater=False).metadata
                assert metadata.precision == (3 if field == ".DLY" else 4), field
                assert metadata.units.decode() == units, field
            status = read(f"{prefix}{axis}.MSTA", timeout=3, repeater=False).data[0]
            assert status & MSTA_DONE and not status & MSTA_MOVING


@pytest.mark.slow
def test_put_with_callback_completes_when_the_move_is_done(real_time_ioc):
    """A 40 mm move at 20 mm/s: 2 s.  ``write(notify=True)`` (caput -c) returns then; a put
    without callback returns at once; STOP and a retarget end a pending callback."""
    from caproto.threading.client import Context

    prefix, port, _ = real_time_ioc
    record = prefix + "stage:x"
    with searching_port(port):  # caproto's threading client searches it when it connects
        context = Context()
        val, stop, rbv, dmov = context.get_pvs(record + ".VAL", record + ".STOP",
                                               record + ".RBV", record + ".DMOV", timeout=5)
        for pv in (val, stop, rbv, dmov):
            pv.wait_for_connection(timeout=5)
    try:
        def value(pv):
            return pv.read(timeout=3).data[0]

        started = time.monotonic()
        val.write(40.0, wait=True, timeout=10)  # with callback (WriteNotify)
        took = time.monotonic() - started
        assert 1.9 < took < 2.6, took
        assert value(dmov) == 1 and value(rbv) == pytest.approx(40.0)

        started = time.monotonic()
        val.write(30.0, wait=False)  # without callback, as EpicsMotor puts
        assert time.monotonic() - started < 0.3
        wait_for(lambda: value(dmov) == 0, what="DMOV 0")
        wait_for(lambda: value(dmov) == 1, what="DMOV after a put without callback")

        # STOP while a callback is pending: the callback completes when the axis stops
        ended = threading.Event()
        val.write(-10.0, wait=False, callback=lambda response: ended.set())
        time.sleep(0.5)
        assert not ended.is_set()
        stop.write(1, wait=True, timeout=3)
        assert ended.wait(0.3)
        position = value(rbv)
        assert -10.0 < position < 30.0 and value(val) == pytest.approx(position)

        # a new target while a callback is pending: it completes with the retargeted move
        ended.clear()
        val.write(40.0, wait=False, callback=lambda response: ended.set())
        time.sleep(0.3)
        val.write(position, wait=False)  # back where it was
        assert ended.wait(3)
        assert value(rbv) == pytest.approx(position) and value(dmov) == 1
        val.write(0.0, wait=True, timeout=10)
    finally:
        context.disconnect()


@pytest.mark.slow
def test_rbv_posts_at_the_records_10_hz_while_moving(real_time_ioc):
    from caproto.threading.client import Context

    prefix, port, _ = real_time_ioc
    record = prefix + "stage:y"
    arrivals = []
    with searching_port(port):
        context = Context()
        val, rbv = context.get_pvs(record + ".VAL", record + ".RBV", timeout=5)
        for pv in (val, rbv):
            pv.wait_for_connection(timeout=5)
        try:
            def arrived(sub, response):  # caproto holds callbacks by weak reference
                arrivals.append(time.monotonic())

            subscription = rbv.subscribe()
            subscription.add_callback(arrived)
            wait_for(lambda: arrivals, what="the current value")
            val.write(20.0, wait=True, timeout=5)  # a 1 s move
            val.write(0.0, wait=True, timeout=5)
        finally:
            context.disconnect()
    moving = arrivals[1:]  # the first is the subscription's current value
    gaps = [b - a for a, b in itertools.pairwise(moving)]
    assert 18 <= len(moving) <= 26, len(moving)  # two 1 s moves at 10 Hz
    assert min(gaps) > 0.05 and max(gaps) < 0.2, gaps


@pytest.mark.slow
def test_beacons_go_to_the_served_interface_only(real_time_ioc, monkeypatch):
    """caproto sends beacons to EPICS_CAS_BEACON_ADDR_LIST, plus 255.255.255.255 unless that
    list is set and EPICS_CAS_AUTO_BEACON_ADDR_LIST=NO (caproto._utils)."""
    from caproto import CLIENT, Beacon, Broadcaster, get_beacon_address_list

    _, port, beacons = real_time_ioc
    data, _ = beacons.recvfrom(4096)  # the loopback IOC's beacon reaches loopback
    commands = Broadcaster(our_role=CLIENT).recv(data, ("127.0.0.1", 0))
    assert any(isinstance(c, Beacon) and c.server_port == port for c in commands)

    for name in ("EPICS_CAS_BEACON_ADDR_LIST", "EPICS_CAS_AUTO_BEACON_ADDR_LIST"):
        monkeypatch.delenv(name, raising=False)
    settings = beacon_environment(["127.0.0.1"])
    assert settings == {"EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
                        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO"}
    monkeypatch.setenv("EPICS_CAS_BEACON_PORT", "5065")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert get_beacon_address_list() == [("127.0.0.1", 5065)]  # what the server uses
    assert beacon_environment(["0.0.0.0"]) == {}  # every interface: caproto's broadcast
    monkeypatch.setenv("EPICS_CAS_BEACON_ADDR_LIST", "10.1.2.255")
    assert beacon_environment(["127.0.0.1"]) == {}  # the user's choice stands


# --- stock clients on the session IOC ----------------------------------------------------

@pytest.mark.slow
def test_pyepics_motor_move_with_wait_takes_the_move_time(ioc, stage_y):
    motor = epics.Motor(ioc.pv("stage:y"))
    assert motor.get("LVIO") == 0
    motor.put("VELO", SLOW, wait=True)  # 1 mm per wall s
    started = time.monotonic()
    assert motor.move(0.5, wait=True) == 0  # 0: finished OK (no soft limit violation)
    took = time.monotonic() - started
    assert 0.45 < took < 1.5, took
    assert motor.get("DMOV") == 1 and motor.get("RBV") == pytest.approx(0.5)
    assert motor.get("DIFF") == pytest.approx(0.0) and motor.get("LVIO") == 0

    setpoint = EpicsSignal(ioc.pv("stage:y.VAL"), name="val", put_complete=True)
    setpoint.wait_for_connection(timeout=CONNECT_S)
    started = time.monotonic()
    setpoint.set(0.0).wait(timeout=5)
    assert time.monotonic() - started > 0.45  # completes with the move, not at once
    assert stage_y.position == pytest.approx(0.0)


def test_set_current_position_changes_off_and_moves_nothing(ioc, stage_y):
    stage_y.move(2.0, wait=True, timeout=5)
    movn = []
    stage_y.motor_is_moving.subscribe(lambda value, **kw: movn.append(value), run=False)
    dial = get(ioc.pv("stage:y.DRBV"))
    stage_y.set_current_position(12.0)
    time.sleep(0.2)
    assert 1 not in movn
    assert get(ioc.pv("stage:y.OFF")) == pytest.approx(10.0)
    assert get(ioc.pv("stage:y.DRBV")) == pytest.approx(dial)
    assert get(ioc.pv("stage:y.DVAL")) == pytest.approx(dial)
    assert get(ioc.pv("stage:y.SET")) == 0
    wait_for(lambda: stage_y.position == pytest.approx(12.0), what="RBV = dial + OFF")
    wait_for(lambda: stage_y.limits == (-140.0, 160.0), what="user limits follow OFF")
    assert get(ioc.pv("stage:y.HLM")) == pytest.approx(160.0)

    # FOFF Frozen: a put in Set mode redefines the dial position instead; nothing moves
    put(ioc.pv("stage:y.FOFF"), 1)
    stage_y.set_current_position(20.0)
    assert get(ioc.pv("stage:y.OFF")) == pytest.approx(10.0)
    assert get(ioc.pv("stage:y.DRBV")) == pytest.approx(10.0)
    assert 1 not in movn
    put(ioc.pv("stage:y.FOFF"), 0)
    stage_y.set_current_position(2.0)  # FOFF Variable again: OFF = 2 - 10
    assert get(ioc.pv("stage:y.OFF")) == pytest.approx(-8.0)
    put(ioc.pv("stage:y.SET"), 1)
    put(ioc.pv("stage:y.DVAL"), 2.0)  # Set mode: the dial redefined as 2, OFF follows VAL
    put(ioc.pv("stage:y.SET"), 0)
    assert get(ioc.pv("stage:y.OFF")) == pytest.approx(0.0)
    assert get(ioc.pv("stage:y.DRBV")) == pytest.approx(2.0) and 1 not in movn


def test_off_and_dir_map_dial_to_user(ioc, stage_y):
    record = ioc.pv("stage:y")
    stage_y.move(3.0, wait=True, timeout=5)
    put(record + ".OFF", 5.0)
    assert get(record + ".RBV") == pytest.approx(8.0) and get(record + ".VAL") == pytest.approx(8.0)
    assert (get(record + ".LLM"), get(record + ".HLM")) == pytest.approx((-145.0, 155.0))
    put(record + ".DIR", "Neg")  # FOFF Variable: VAL stays, OFF follows
    assert get(record + ".VAL") == pytest.approx(8.0) and get(record + ".OFF") == pytest.approx(11.0)
    assert (get(record + ".LLM"), get(record + ".HLM")) == pytest.approx((-139.0, 161.0))
    put(record + ".VAL", 10.0)  # user +2 is dial -2
    assert get(record + ".DRBV") == pytest.approx(1.0) and get(record + ".RBV") == pytest.approx(10.0)
    put(record + ".DIR", "Pos")
    put(record + ".OFF", 0.0)
    assert get(record + ".RBV") == pytest.approx(1.0)


def test_dval_rval_and_diff(ioc, stage_y):
    record = ioc.pv("stage:y")
    put(record + ".DVAL", 1.25)
    assert get(record + ".RBV") == pytest.approx(1.25) and get(record + ".VAL") == pytest.approx(1.25)
    assert get(record + ".RVAL") == 1_250_000 and get(record + ".RRBV") == 1_250_000
    put(record + ".RVAL", -500_000)
    assert get(record + ".DRBV") == pytest.approx(-0.5) and get(record + ".DIFF") == pytest.approx(0)
    put(record + ".VELO", SLOW)
    put(record + ".VAL", 0.5, wait=False)
    wait_for(lambda: get(record + ".MOVN") == 1, what="motion")
    diff = get(record + ".DIFF")
    assert 0 < diff <= 1.0 and diff == pytest.approx(get(record + ".DVAL") - get(record + ".DRBV"),
                                                      abs=0.2)
    put(record + ".STOP", 1)


def test_home_completes_sets_homed_and_athm(ioc):
    g2 = EpicsMotor(ioc.pv("g2"), name="g2")
    g2.wait_for_connection(timeout=CONNECT_S)
    g2.move(3.0, wait=True, timeout=5)
    assert get(ioc.pv("g2.ATHM")) == 0
    g2.home("forward", wait=True, timeout=5)
    assert g2.position == pytest.approx(0.0)
    status = get(ioc.pv("g2.MSTA"))
    assert status & MSTA_HOMED and status & MSTA_HOME and status & MSTA_DONE
    assert get(ioc.pv("g2.ATHM")) == 1 and get(ioc.pv("g2.HOMF")) == 0
    assert get(ioc.pv("g2.VAL")) == pytest.approx(0.0)
    g2.move(1.0, wait=True, timeout=5)  # away from home: ATHM 0, still homed
    assert get(ioc.pv("g2.ATHM")) == 0 and get(ioc.pv("g2.MSTA")) & MSTA_HOMED
    put(ioc.pv("g2.HOMR"), 1)  # caput -c on HOMR completes when home is found
    assert get(ioc.pv("g2.RBV")) == pytest.approx(0.0) and get(ioc.pv("g2.DMOV")) == 1


@pytest.mark.slow
def test_spmg_stop_pause_move_go(ioc, stage_y):
    record = ioc.pv("stage:y")
    put(record + ".VELO", SLOW)
    status = stage_y.move(1.0, wait=False)
    wait_for(lambda: stage_y.position > 0.1, what="motion")
    put(record + ".SPMG", "Pause")  # stops, keeps the target, not done
    time.sleep(0.2)
    paused = get(record + ".RBV")
    time.sleep(0.2)
    assert get(record + ".RBV") == paused < 1.0
    assert get(record + ".MOVN") == 0 and get(record + ".DMOV") == 0 and not status.done
    assert get(record + ".VAL") == pytest.approx(1.0)
    put(record + ".SPMG", "Go")  # resumes
    status.wait(timeout=5)
    assert stage_y.position == pytest.approx(1.0)

    status = stage_y.move(0.0, wait=False)
    wait_for(lambda: stage_y.position < 0.9, what="motion")
    put(record + ".SPMG", "Stop")  # stops, VAL := RBV, done
    status.wait(timeout=5)
    stopped = get(record + ".RBV")
    assert 0.0 < stopped < 1.0 and get(record + ".VAL") == pytest.approx(stopped)
    put(record + ".VAL", 0.0, wait=False)  # held while stopped
    time.sleep(0.2)
    assert get(record + ".RBV") == stopped and get(record + ".DMOV") == 0
    put(record + ".SPMG", "Go")
    wait_for(lambda: get(record + ".DMOV") == 1, what="the held move")
    assert get(record + ".RBV") == pytest.approx(0.0)

    put(record + ".VELO", 20.0)
    put(record + ".SPMG", "Move")  # one move, then Pause
    put(record + ".VAL", 0.2)
    assert get(record + ".RBV") == pytest.approx(0.2)
    assert get(record + ".SPMG", as_string=True) == "Pause"
    put(record + ".SPMG", "Go")


def test_tweak_relative_move_and_jog(ioc, stage_y):
    record = ioc.pv("stage:y")
    put(record + ".TWV", 0.5)
    put(record + ".TWF", 1)
    assert get(record + ".RBV") == pytest.approx(0.5) and get(record + ".TWF") == 0
    put(record + ".TWR", 1)
    put(record + ".TWR", 1)
    assert get(record + ".RBV") == pytest.approx(-0.5)
    put(record + ".RLV", 2.0)
    assert get(record + ".RBV") == pytest.approx(1.5) and get(record + ".RLV") == 0
    assert get(record + ".VAL") == pytest.approx(1.5)

    put(record + ".JVEL", SLOW)
    put(record + ".JOGF", 1)
    wait_for(lambda: get(record + ".RBV") > 1.6, what="jogging forward")
    assert get(record + ".DMOV") == 0 and get(record + ".JOGF") == 1
    put(record + ".JOGF", 0)
    wait_for(lambda: get(record + ".DMOV") == 1, what="jog stopped")
    position = get(record + ".RBV")
    assert 1.6 < position < 5.0 and get(record + ".VAL") == pytest.approx(position)


def test_lvio_and_limit_switches_raise_the_records_alarm(ioc, stage_y):
    record = ioc.pv("stage:y")
    with searching_port(ioc.port):
        write(record + ".VAL", 200.0, notify=True, timeout=3, repeater=False)  # beyond HLM
        assert get(record + ".LVIO") == 1 and get(record + ".VAL") == pytest.approx(0.0)
        assert alarm(record) == (AlarmStatus.SOFT, AlarmSeverity.MAJOR_ALARM)
        assert alarm(record + ".RBV") == (AlarmStatus.SOFT, AlarmSeverity.MAJOR_ALARM)
        assert get(record + ".SEVR", as_string=True) == "MAJOR"
        stage_y.move(1.0, wait=True, timeout=5)  # a legal move clears both
        assert get(record + ".LVIO") == 0 and alarm(record) == (AlarmStatus.NO_ALARM,
                                                                 AlarmSeverity.NO_ALARM)

        put(record + ".HLM", 0.0)  # HLM = LLM = 0: no soft limits, the switch stops it
        put(record + ".LLM", 0.0)
        wait_for(lambda: stage_y.limits == (0.0, 0.0), what="no limits")
        with pytest.raises(UnknownStatusFailure):  # EpicsMotor: stopped by the switch
            stage_y.move(1000.0, wait=True, timeout=5)
        assert get(record + ".RBV") == pytest.approx(156.0)  # 2 % of the travel beyond HLM
        assert get(record + ".HLS") == 1 and get(record + ".LLS") == 0
        assert get(record + ".MSTA") & MSTA_PLUS_LS
        assert alarm(record + ".RBV") == (AlarmStatus.HIGH, AlarmSeverity.MAJOR_ALARM)
        stage_y.move(0.0, wait=True, timeout=5)
        assert get(record + ".HLS") == 0 and not get(record + ".MSTA") & MSTA_PLUS_LS
        assert alarm(record) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
    put(record + ".HLM", 150.0)
    put(record + ".LLM", -150.0)
    wait_for(lambda: stage_y.limits == (-150.0, 150.0), what="limits restored")
    with pytest.raises(LimitError):
        stage_y.move(151.0, wait=True, timeout=5)


def test_msta_moving_and_done_bits_follow_the_motion(ioc, stage_y):
    record = ioc.pv("stage:y")
    assert get(record + ".MSTA") & MSTA_DONE
    put(record + ".VELO", SLOW)
    put(record + ".VAL", 0.3, wait=False)
    wait_for(lambda: get(record + ".MSTA") & MSTA_MOVING, what="MOVING bit")
    assert not get(record + ".MSTA") & MSTA_DONE and get(record + ".MOVN") == 1
    wait_for(lambda: get(record + ".DMOV") == 1, what="done")
    status = get(record + ".MSTA")
    assert status & MSTA_DONE and not status & MSTA_MOVING


def test_ophyd_reads_precision_and_units_of_the_readback(ioc):
    stage = EpicsMotor(ioc.pv("stage:x"), name="stage_x")
    stage.wait_for_connection(timeout=CONNECT_S)
    assert stage.precision == 4 and stage.egu == "mm"
    rbv = epics.PV(ioc.pv("stage:x.RBV"), form="ctrl")
    rbv.wait_for_connection(timeout=5)
    assert rbv.get_ctrlvars()["precision"] == 4 and rbv.units == "mm"
    velocity = epics.PV(ioc.pv("stage:x.VELO"), form="ctrl")
    velocity.wait_for_connection(timeout=5)
    assert velocity.get_ctrlvars()["units"] == "mm/s"
    put(ioc.pv("stage:x.PREC"), 3)
    try:
        assert rbv.get_ctrlvars()["precision"] == 3  # PREC sets every position field's
        with searching_port(ioc.port):
            assert read(ioc.pv("stage:x.HLM"), data_type=ChannelType.CTRL_DOUBLE, timeout=3,
                        repeater=False).metadata.precision == 3
    finally:
        put(ioc.pv("stage:x.PREC"), 4)


# --- the tube ------------------------------------------------------------------------------

@pytest.fixture
def tube_pvs(ioc):
    yield ioc.pv("tube:")
    prefix = ioc.pv("tube:")
    put(prefix + "SimClearInterlock", 1)
    put(prefix + "FaultReset", 1)
    put(prefix + "HVOn", 1)
    put(prefix + "Shutter", 0)


def test_tube_switches_are_enums_and_refused_puts_fail(ioc, tube_pvs):
    tube = tube_pvs
    for name, states in (("Shutter", ("Closed", "Open")), ("Shutter_RBV", ("Closed", "Open")),
                         ("HVOn", ("Off", "On")), ("HVOn_RBV", ("Off", "On"))):
        pv = epics.PV(tube + name, form="ctrl")
        pv.wait_for_connection(timeout=5)
        assert pv.enum_strs == states, name
    assert get(tube + "Shutter_RBV", as_string=True) == "Closed"
    assert get(tube + "HVOn_RBV", as_string=True) == "On"

    with searching_port(ioc.port):
        for pv, value in (("Shutter", -3), ("Shutter", 2), ("HVOn", 7), ("kV", 60.0),
                          ("kV", float("nan")), ("mA", -1.0)):
            before = read(tube + pv, timeout=3, repeater=False).data[0]
            with pytest.raises(ErrorResponseReceived):
                write(tube + pv, value, notify=True, timeout=3, repeater=False)
            after = read(tube + pv, timeout=3, repeater=False).data[0]
            assert after == before, pv
        assert get(tube + "Shutter_RBV") == 0

        write(tube + "SimTripInterlock", 1, notify=True, timeout=3, repeater=False)
        with pytest.raises(ErrorResponseReceived, match="interlock open"):
            write(tube + "Shutter", "Open", notify=True, timeout=3, repeater=False)
        with pytest.raises(ErrorResponseReceived, match="interlock open"):
            write(tube + "FaultReset", 1, notify=True, timeout=3, repeater=False)
        assert get(tube + "Shutter", as_string=True) == "Closed"

        write(tube + "SimClearInterlock", 1, notify=True, timeout=3, repeater=False)
        write(tube + "Shutter", "Open", notify=True, timeout=3, repeater=False)
        assert get(tube + "Shutter_RBV", as_string=True) == "Open"
        write(tube + "Shutter", 0, notify=True, timeout=3, repeater=False)
        assert get(tube + "Shutter_RBV") == 0


def test_tube_faults_carry_a_major_alarm(ioc, tube_pvs):
    tube = tube_pvs
    with searching_port(ioc.port):
        def severity(pv):
            response = read(tube + pv, data_type=ChannelType.TIME_STRING if pv == "State_RBV"
                            else ChannelType.TIME_LONG, timeout=3, repeater=False)
            return AlarmSeverity(response.metadata.severity)

        for pv in ("State_RBV", "Interlock_RBV", "Fault_RBV", "Arc_RBV"):
            assert severity(pv) == AlarmSeverity.NO_ALARM, pv
        write(tube + "SimTripInterlock", 1, notify=True, timeout=3, repeater=False)
        assert severity("Interlock_RBV") == severity("State_RBV") == AlarmSeverity.MAJOR_ALARM
        write(tube + "SimClearInterlock", 1, notify=True, timeout=3, repeater=False)
        assert severity("Interlock_RBV") == severity("State_RBV") == AlarmSeverity.NO_ALARM
        write(tube + "SimTripArc", 1, notify=True, timeout=3, repeater=False)
        for pv in ("State_RBV", "Fault_RBV", "Arc_RBV"):
            assert severity(pv) == AlarmSeverity.MAJOR_ALARM, pv
        write(tube + "FaultReset", 1, notify=True, timeout=3, repeater=False)
        for pv in ("State_RBV", "Fault_RBV", "Arc_RBV"):
            assert severity(pv) == AlarmSeverity.NO_ALARM, pv


@pytest.mark.slow
def test_xray_tube_fails_a_refused_set_promptly(ioc, tube_pvs):
    tube = devices.XRayTube(tube_pvs, name="tube")
    tube.wait_for_connection(timeout=CONNECT_S)
    tube.shutter.set(1).wait(timeout=5)
    assert tube.shutter.get() == 1  # the enum reads as its index
    tube.shutter.set(0).wait(timeout=5)
    started = time.monotonic()
    with pytest.raises(RefusedCommand, match=r"refused .*kV = 60"):
        tube.kv.set(60.0).wait(timeout=5)
    assert time.monotonic() - started < 1.0
    tube.hv_on.set(0).wait(timeout=5)
    epics.caput(tube_pvs + "SimTripInterlock", 1, wait=True)
    started = time.monotonic()
    with pytest.raises(RefusedCommand, match="interlocked"):
        tube.hv_on.set(1).wait(timeout=5)  # HV on is refused while interlocked
    assert time.monotonic() - started < 1.0 and tube.hv_on.get() == 0
