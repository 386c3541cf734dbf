"""The PaxScan twin behaves like the real areaDetector for stock CA clients (issue 15):
put-completion of ``Acquire`` and ``Capture``, refused settings, AcquirePeriod, external
triggers, the NDPluginBase PVs, the ``image1:`` NDStdArrays plugin and compressed files.

Wall-time checks run on a private IOC with a time scale of 0.05 (a recorded second is
50 ms); the rest on the session IOC (``tests/ioc_fixture.py``).  caproto's sync client
throughout: ``write(..., notify=True)`` is a put with callback.
"""

import threading
import time
import uuid

import h5py
import numpy as np
import pytest
from caproto import ErrorResponseReceived
from caproto.sync.client import read, write
from caproto.threading.client import Context

from acquisition.storage.frames import HDF5FrameHandler
from ioc_fixture import _free_port, searching_port, spawn_ioc, stop_ioc

SCALE = 0.05
TIMEOUT_S = 10.0  # search + reply; a loaded CI machine has taken more than 3 s to answer


class Client:
    """caproto's sync client on one IOC: ``get``/``put`` of ``prefix + "det:" + suffix``."""

    def __init__(self, prefix, port):
        self.prefix, self.port = prefix, port

    def get(self, suffix):
        with searching_port(self.port):
            data = read(self.prefix + "det:" + suffix, timeout=TIMEOUT_S, repeater=False,
                        force_int_enums=True).data
        return data if len(data) > 1 else data[0]

    def put(self, suffix, value, notify=True, timeout=TIMEOUT_S):
        with searching_port(self.port):
            write(self.prefix + "det:" + suffix, value, notify=notify, timeout=timeout,
                  repeater=False)

    def wait_for(self, suffix, value, timeout_s=3.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.get(suffix) == value:
                return
            time.sleep(0.02)
        raise AssertionError(f"{suffix} did not reach {value!r}: {self.get(suffix)!r}")


def pending_put(client, suffix, value, timeout_s=5.0):
    """A put with callback through caproto's threading client (the sync client is not
    thread-safe); returns (context, Event set when the put completes)."""
    with searching_port(client.port):
        context = Context()
        pv, = context.get_pvs(client.prefix + "det:" + suffix, timeout=timeout_s)
        pv.wait_for_connection(timeout=timeout_s)
    done = threading.Event()
    pv.write(value, wait=False, notify=True, callback=lambda response: done.set())
    return context, done


@pytest.fixture(scope="module")
def slow_ioc(tmp_path_factory):
    """A private IOC at time scale 0.05, its detector set to 1 recorded s exposures."""
    write_path = tmp_path_factory.mktemp("slow-ioc")
    port = _free_port()
    prefix = f"S{uuid.uuid4().hex[:6]}:"
    process = spawn_ioc(prefix, port, write_path, time_scale=SCALE)
    try:
        client = Client(prefix, port)
        client.write_path = write_path
        client.put("cam1:AcquireTime", 1.0)
        yield client
    finally:
        stop_ioc(process)


@pytest.fixture
def det(ioc):
    """The session IOC's detector; the settings the tests change are put back to the
    IOC's defaults (other test files share this IOC)."""
    client = Client(ioc.prefix, ioc.port)
    client.write_path = ioc.write_path
    yield client
    client.put("cam1:TriggerMode", 0)
    client.put("cam1:ImageMode", 0)
    client.put("cam1:NumImages", 1)
    client.put("HDF1:NumCapture", 0)
    client.put("HDF1:Compression", 0)


@pytest.mark.slow
def test_acquire_put_callback_completes_when_all_images_are_taken_period_apart(slow_ioc):
    slow_ioc.put("cam1:ImageMode", 1)  # Multiple
    slow_ioc.put("cam1:NumImages", 3)
    slow_ioc.put("cam1:AcquirePeriod", 8.0)  # 0.4 s wall, start to start
    before = slow_ioc.get("cam1:ArrayCounter_RBV")
    started = time.monotonic()
    slow_ioc.put("cam1:Acquire", 1, timeout=10)
    elapsed = time.monotonic() - started
    assert slow_ioc.get("cam1:Acquire_RBV") == 0 and slow_ioc.get("cam1:NumImagesCounter_RBV") == 3
    assert slow_ioc.get("cam1:ArrayCounter_RBV") == before + 3
    assert 2 * 8.0 * SCALE <= elapsed < 5

    # without callback the put returns at once and Acquire_RBV shows the acquisition
    slow_ioc.put("cam1:NumImages", 2)
    started = time.monotonic()
    slow_ioc.put("cam1:Acquire", 1, notify=False)
    assert time.monotonic() - started < 0.3
    assert slow_ioc.get("cam1:Acquire_RBV") == 1
    slow_ioc.wait_for("cam1:Acquire_RBV", 0, timeout_s=5)


@pytest.mark.slow
def test_acquire_0_ends_a_pending_put_callback(slow_ioc):
    slow_ioc.put("cam1:ImageMode", 2)  # Continuous
    context, done = pending_put(slow_ioc, "cam1:Acquire", 1)
    slow_ioc.wait_for("cam1:Acquire_RBV", 1)
    assert not done.wait(0.5)
    slow_ioc.put("cam1:Acquire", 0)
    assert done.wait(5)
    context.disconnect()
    assert slow_ioc.get("cam1:Acquire_RBV") == 0 and slow_ioc.get("cam1:DetectorState_RBV") == 10  # Aborted
    slow_ioc.put("cam1:ImageMode", 0)


@pytest.mark.slow
def test_capture_put_callback_completes_when_num_capture_frames_are_written(slow_ioc):
    slow_ioc.put("HDF1:FilePath", str(slow_ioc.write_path) + "/")
    slow_ioc.put("HDF1:FileName", "capture")
    slow_ioc.put("HDF1:NumCapture", 2)
    slow_ioc.put("cam1:ImageMode", 1)
    slow_ioc.put("cam1:NumImages", 2)
    slow_ioc.put("cam1:AcquirePeriod", 0.0)
    context, done = pending_put(slow_ioc, "HDF1:Capture", 1)
    slow_ioc.wait_for("HDF1:Capture_RBV", 1)
    assert not done.wait(0.3)
    slow_ioc.put("cam1:Acquire", 1, timeout=10)
    assert done.wait(5)
    context.disconnect()
    assert slow_ioc.get("HDF1:NumCaptured_RBV") == 2 and slow_ioc.get("HDF1:Capture_RBV") == 0

    # Capture = 0 ends a pending callback; without callback the put returns at once
    slow_ioc.put("HDF1:NumCapture", 0)
    context, done = pending_put(slow_ioc, "HDF1:Capture", 1)
    slow_ioc.wait_for("HDF1:Capture_RBV", 1)
    assert not done.wait(0.3)
    slow_ioc.put("HDF1:Capture", 0)
    assert done.wait(5)
    context.disconnect()
    started = time.monotonic()
    slow_ioc.put("HDF1:Capture", 1, notify=False)
    assert time.monotonic() - started < 0.3
    slow_ioc.wait_for("HDF1:Capture_RBV", 1)
    slow_ioc.put("HDF1:Capture", 0)


@pytest.mark.parametrize("suffix", ["AcquireTime", "AcquirePeriod"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_negative_nan_or_infinite_times_are_refused(det, suffix, value):
    det.put("cam1:" + suffix, 2.5)
    with pytest.raises(ErrorResponseReceived):
        det.put("cam1:" + suffix, value)
    assert det.get("cam1:" + suffix) == 2.5 and det.get("cam1:" + suffix + "_RBV") == 2.5


def test_negative_num_images_is_refused(det):
    with pytest.raises(ErrorResponseReceived):
        det.put("cam1:NumImages", -3)
    assert det.get("cam1:NumImages") >= 0


def test_external_trigger_arms_and_each_image_waits_for_a_trigger(det):
    det.put("cam1:TriggerMode", 1)  # External
    det.put("cam1:ImageMode", 0)
    before = det.get("cam1:ArrayCounter_RBV")
    det.put("cam1:Acquire", 1, notify=False)
    det.wait_for("cam1:DetectorState_RBV", 7)  # Waiting
    time.sleep(0.3)
    assert det.get("cam1:ArrayCounter_RBV") == before and det.get("cam1:Acquire_RBV") == 1
    det.put("cam1:SimTrigger", 1)
    det.wait_for("cam1:Acquire_RBV", 0)
    assert det.get("cam1:ArrayCounter_RBV") == before + 1


def test_plugins_have_the_ndpluginbase_pvs(det, ioc):
    rows, cols = ioc.region[2:]
    det.put("cam1:Acquire", 1)
    counter = det.get("cam1:ArrayCounter_RBV")
    for plugin in ("HDF1:", "Stats1:", "image1:"):
        assert det.get(plugin + "NDimensions_RBV") == 2
        assert list(det.get(plugin + "Dimensions_RBV")[:3]) == [cols, rows, 0]
        assert det.get(plugin + "UniqueId_RBV") == counter
        assert det.get(plugin + "TimeStamp_RBV") > 1e8  # seconds since 1990
        assert det.get(plugin + "QueueSize") > 0 and det.get(plugin + "DroppedArrays_RBV") == 0
        assert det.get(plugin + "ArrayCounter_RBV") > 0
    assert det.get("image1:ArraySize0_RBV") == cols and det.get("image1:ArraySize1_RBV") == rows
    assert det.get("image1:EnableCallbacks") == 1


def test_zlib_files_read_back_equal_and_image1_holds_the_last_frame(det, ioc):
    rows, cols = ioc.region[2:]
    det.put("HDF1:FilePath", str(det.write_path) + "/")
    det.put("HDF1:FileName", "zlib")
    det.put("HDF1:NumCapture", 2)
    det.put("HDF1:Compression", 3)  # zlib
    det.put("HDF1:ZLevel", 6)
    with pytest.raises(ErrorResponseReceived):
        det.put("HDF1:Compression", 7)  # jpeg: not simulated
    assert det.get("HDF1:Compression_RBV") == 3
    det.put("HDF1:Capture", 1, notify=False)
    det.wait_for("HDF1:Capture_RBV", 1)
    det.put("cam1:ImageMode", 1)
    det.put("cam1:NumImages", 2)
    det.put("cam1:Acquire", 1)
    det.wait_for("HDF1:Capture_RBV", 0)
    filename = bytes(det.get("HDF1:FullFileName_RBV")).rstrip(b"\0").decode()
    with h5py.File(filename, "r") as f:
        dataset = f["entry/data/data"]
        assert (dataset.compression, dataset.shuffle, dataset.fletcher32) == ("gzip", True, True)
        stored = dataset[()]
    handler = HDF5FrameHandler(filename)
    try:
        frames = [handler(0), handler(1)]
    finally:
        handler.close()
    assert np.array_equal(frames[0], stored[0]) and np.array_equal(frames[1], stored[1])
    live = np.asarray(det.get("image1:ArrayData")).reshape(rows, cols)
    assert np.array_equal(live, frames[1])
