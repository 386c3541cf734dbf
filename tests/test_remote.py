"""Documents over bluesky's 0MQ proxy to a monitor and processor in another thread."""

import socket
import subprocess
import sys
import time

import pytest
from ioc_fixture import _free_port, wait_for

from acquisition.processing.derived_collector import DerivedCollector
from acquisition.instrument import simulated_instrument
from acquisition.monitor import MonitorWindow
from acquisition.plans import darkfield_projection
from acquisition.processing.live import darkfield_router
from acquisition.processing.remote import by_origin, parse_address, publisher, start_dispatcher
from support import small_config, run_engine
from simulators.physics import Phantom, TissueSlab
from specimens import class_cluster


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_proxy(request) -> tuple[int, int]:
    """``talbot-lau proxy`` on two free ports; (in_port, out_port) once it listens."""
    in_port, out_port = _free_port(), _free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "proxy", "--in-port", str(in_port),
                              "--out-port", str(out_port)])
    request.addfinalizer(lambda: (proxy.kill(), proxy.wait()))
    for port in (in_port, out_port):  # wait until the proxy listens
        deadline = time.monotonic() + 20
        while not listening(port):
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.1)
    return in_port, out_port


def run_projection(request, tmp_path, in_port, texture):
    phantom = Phantom(TissueSlab(), (class_cluster(texture, (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=96, cols=96), write_path=tmp_path / "raw",
                                      phantom=phantom)
    with run_engine() as engine:
        publish = publisher(("127.0.0.1", in_port))  # msgpack
        request.addfinalizer(publish.close)
        engine.subscribe(publish)
        time.sleep(0.5)  # 0MQ subscribers and the publisher need a moment to connect
        return engine(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0,
                                           reference_exposure_s=1.0))


@pytest.mark.slow
def test_monitor_and_processor_behind_the_proxy(qtbot, tmp_path, request):
    in_port, out_port = start_proxy(request)
    window = MonitorWindow()
    qtbot.addWidget(window)
    collector = DerivedCollector()

    def publish(name, doc):
        collector(name, doc)
        window.derived_callback(name, doc)

    stop = start_dispatcher(("127.0.0.1", out_port),
                            [window.raw_callback, darkfield_router(tmp_path, publish=publish)])
    request.addfinalizer(stop)
    run_projection(request, tmp_path, in_port, "fine")
    qtbot.waitUntil(lambda: len(window.cluster_rows) == 1, timeout=10_000)
    assert [c["texture"] for c in collector.clusters] == ["fine"]
    assert window.images["raw"].image.shape == (96, 96)


@pytest.mark.slow
def test_processor_in_another_process_publishes_derived_runs_back(qtbot, tmp_path, request):
    """``talbot-lau processor --publish``: its derived runs reach the monitor through the proxy."""
    in_port, out_port = start_proxy(request)
    processor = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "processor",
                                  "--zmq", f"127.0.0.1:{out_port}", "--publish", f"127.0.0.1:{in_port}",
                                  "--out", str(tmp_path / "derived")], stdout=subprocess.PIPE, text=True)
    request.addfinalizer(lambda: (processor.kill(), processor.wait(), processor.stdout.close()))
    assert "processing documents" in processor.stdout.readline()
    window = MonitorWindow()
    qtbot.addWidget(window)
    collector = DerivedCollector()
    stop = start_dispatcher(("127.0.0.1", out_port),
                            [by_origin(window.raw_callback, window.derived_callback),
                             by_origin(lambda name, doc: None, collector)])
    request.addfinalizer(stop)
    (uid,) = run_projection(request, tmp_path, in_port, "coarse")
    qtbot.waitUntil(lambda: len(window.cluster_rows) == len(collector.clusters) == 1, timeout=20_000)
    assert [c["texture"] for c in collector.clusters] == ["coarse"]
    assert window.images["raw"].image.shape == (96, 96)  # raw frames still go to the raw panel
    assert list((tmp_path / "derived").glob(f"derived_{uid[:8]}.h5"))
    # recorded there too, at the raw run's stop (the derived run may come before: the last set
    # is processed when its last frame arrives)
    wait_for(lambda: (tmp_path / "derived" / f"run_{uid[:8]}.nxs").is_file(), 20, "the run record")


def test_addresses_are_checked():
    assert parse_address("5578") == ("127.0.0.1", 5578)
    assert parse_address("10.0.0.2:1234") == ("10.0.0.2", 1234)
    try:
        parse_address("localhost:abc")
    except ValueError as err:
        assert "HOST:PORT" in str(err)
    else:
        raise AssertionError("a bad address was accepted")
