"""Documents over bluesky's 0MQ proxy to a monitor and processor in another thread."""

import socket
import subprocess
import sys
import time

from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher

from acquisition.demo import DerivedCollector
from acquisition.instrument import simulated_instrument
from acquisition.monitor import MonitorWindow
from acquisition.plans import darkfield_projection
from acquisition.processing import darkfield_router
from acquisition.remote import parse_address, start_dispatcher
from conftest import small_config
from simulators.physics import Phantom, TissueSlab, cluster_preset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_monitor_and_processor_behind_the_proxy(qtbot, tmp_path, request):
    in_port, out_port = free_port(), free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "proxy", "--in-port", str(in_port),
                              "--out-port", str(out_port)])
    request.addfinalizer(proxy.kill)
    for port in (in_port, out_port):  # wait until the proxy listens
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.1)
    window = MonitorWindow()
    qtbot.addWidget(window)
    collector = DerivedCollector()

    def publish(name, doc):
        collector(name, doc)
        window.derived_callback(name, doc)

    stop = start_dispatcher(("127.0.0.1", out_port),
                                  [window.raw_callback, darkfield_router(tmp_path, publish=publish)])
    time.sleep(0.5)  # 0MQ subscribers need a moment to connect
    phantom = Phantom(TissueSlab(), (cluster_preset("fine", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=96, cols=96), write_path=tmp_path / "raw",
                                      phantom=phantom)
    engine = RunEngine({})
    publisher = Publisher(("127.0.0.1", in_port))
    request.addfinalizer(publisher.close)
    engine.subscribe(publisher)
    time.sleep(0.5)  # and the publisher to connect
    engine(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0))
    qtbot.waitUntil(lambda: len(window.cluster_rows) == 1, timeout=10_000)
    assert [c["texture"] for c in collector.clusters] == ["fine"]
    assert window.images["raw"].image.shape == (96, 96)
    stop()


def test_addresses_are_checked():
    assert parse_address("5578") == ("127.0.0.1", 5578)
    assert parse_address("10.0.0.2:1234") == ("10.0.0.2", 1234)
    try:
        parse_address("localhost:abc")
    except ValueError as err:
        assert "HOST:PORT" in str(err)
    else:
        raise AssertionError("a bad address was accepted")
