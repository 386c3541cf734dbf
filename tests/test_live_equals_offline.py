"""Live results are right on every path (issue 13, part 1).

Over Channel Access with the monitor (``talbot-lau session --ioc P --monitor``), the live
processor's derived images equal ``talbot-lau reconstruct`` of the same run pixel for pixel,
and the monitor shows the frames the IOC wrote.  The cause of the wrong results was HDF5's
sharing of one open dataset among all the handles a process opens to it: with the monitor's
filler and the processor's worker both holding the IOC's growing SWMR file open, every frame
appended after the first open read as the first frame read (the dark frame), silently
(``acquisition/storage/frames.py``, module docstring).  The frame-level tests below show it with a
writer in another process, as the IOC is.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
from support import small_config
from ioc_fixture import REPO

from acquisition.storage.frames import (
    FRAME_DATASET,
    FrameLoader,
    FrameReadError,
    FrameRef,
    HDF5FrameHandler,
    open_frame_files,
)


SAMPLE_POSITION_MM = (4.5, 0.0)
"""Puts a cluster of the embedded phantom into the test IOC's 32 x 48 region."""
DERIVED_IMAGES = ("transmission", "dark_field", "differential_phase", "absorption", "scattering", "labels")

WRITER = r"""
import sys
import numpy as np
from simulators.shared.frame_file import append_frame, create_frame_file
file, dataset = create_frame_file(sys.argv[1], (8, 10))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "close":
        break
    append_frame(dataset, np.full((8, 10), int(line), np.uint16))
    print("appended", flush=True)
file.close()
print("closed", flush=True)
"""


class Writer:
    """A frame file appended to by another process, as the IOC's HDF5 plugin does (SWMR)."""

    def __init__(self, path):
        self.path = str(path)
        self.process = subprocess.Popen([sys.executable, "-c", WRITER, self.path], cwd=REPO, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == "ready"

    def append(self, value: int) -> None:
        self.process.stdin.write(f"{value}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "appended"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("close\n")
            self.process.stdin.flush()
            self.process.wait(timeout=10)
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def writer(tmp_path):
    w = Writer(tmp_path / "growing.h5")
    yield w
    w.close()


def test_two_readers_of_a_growing_file_in_one_process_read_every_frame(writer):
    """The monitor's filler keeps a handler open for the run while the processor's worker
    opens the file again for each set; both must see each frame as written."""
    writer.append(1)
    monitor = HDF5FrameHandler(writer.path)          # the filler's, open for the whole run
    assert monitor(0).max() == 1
    for value in range(2, 7):
        writer.append(value)
        assert monitor(value - 1).max() == value     # the newest frame, as the monitor shows it
        with FrameLoader() as loader:                # the worker's, one loader per set
            read = [int(loader(FrameRef(writer.path, point)).max()) for point in range(value)]
        assert read == list(range(1, value + 1))
    monitor.close()
    gc.collect()
    assert writer.path not in open_frame_files()


def test_a_reader_waits_for_a_frame_not_written_yet(writer):
    writer.append(3)
    handler = HDF5FrameHandler(writer.path)
    later = threading.Timer(0.3, writer.append, args=(4,))
    later.start()
    started = time.monotonic()
    assert handler(1).max() == 4
    assert time.monotonic() - started >= 0.25
    later.join()
    handler.close()


def test_the_wait_is_bounded_and_the_error_names_file_and_frame(writer):
    writer.append(5)
    handler = HDF5FrameHandler(writer.path, wait_s=0.3)
    started = time.monotonic()
    with pytest.raises(FrameReadError, match=rf"{writer.path}: frame 4 requested but the file holds "
                                             r"1 frames after waiting 0.3 s"):
        handler(4)
    assert 0.25 <= time.monotonic() - started < 3
    handler.close()


def _derived(path) -> tuple[dict, dict]:
    """The images and the cluster table of a derived file."""
    with h5py.File(path, "r") as f:
        images = {name: f[f"entry/{name}/data"][()] for name in DERIVED_IMAGES}
        clusters = {name: f["entry/clusters"][name][()] for name in f["entry/clusters"]
                    if isinstance(f["entry/clusters"][name], h5py.Dataset)}
    return images, clusters


def lag_behind(monitor, processor, timeout: float = 60.0) -> None:
    """Make the monitor fall behind as it does when drawing full frames: after the run's
    second frame (its filler has the frame file open and has read from it) it holds the Qt
    thread until the processor's worker has processed the set, so the processor opens and
    reads the file while the monitor's view of it is out of date."""
    shown = []
    original = monitor._raw_event

    def raw_event(doc, stream):
        if any(isinstance(value, np.ndarray) for value in doc["data"].values()):
            shown.append(stream)
            if len(shown) == 2:
                deadline = time.monotonic() + timeout
                while processor.worker.completed < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
        original(doc, stream)

    monitor._raw_event = raw_event  # the raw run's callback looks it up when the run starts


@pytest.mark.slow
def test_live_results_over_ca_with_the_monitor_equal_the_offline_reconstruction(ioc, tmp_path, qtbot,
                                                                                 monkeypatch):
    from acquisition.instrument import epics_instrument
    from acquisition.monitor import MonitorWindow
    from acquisition.processing.offline import reconstruct_run
    from acquisition.storage.run_record_reader import read_run_record
    from acquisition.session import session_namespace

    monkeypatch.setenv("TALBOT_LAU_STATE", str(tmp_path / "state"))
    config = small_config(*ioc.region[2:], time_scale=ioc.time_scale)
    assert config.setup.detector.region == ioc.region
    instrument = epics_instrument(config, prefix=ioc.prefix, write_path=ioc.write_path)
    monitor = MonitorWindow()
    qtbot.addWidget(monitor)
    live = tmp_path / "live"
    namespace = session_namespace(instrument, live, kind="EPICS", monitor=monitor, frames_dir=ioc.write_path)
    lag_behind(monitor, namespace["processor"])
    try:
        engine = namespace["RE"]
        (uid,) = engine(namespace["darkfield_projection"](
            instrument, steps=5, dark_frames=1, exposure_s=1.0, reference_exposure_s=1.0,
            sample_position_mm=SAMPLE_POSITION_MM,
            sample={"id": "live-vs-offline"}))
        assert namespace["flush"](60)
        qtbot.waitUntil(lambda: monitor.processing_status.text().startswith(("done", "failed")), timeout=20_000)
        assert monitor.processing_status.text().startswith("done"), monitor.processing_status.text()
    finally:
        namespace["session"].close(60)
    live_rows = list(namespace["derived"])

    record = live / f"run_{uid[:8]}.nxs"
    offline = tmp_path / "offline"
    offline.mkdir()
    offline_rows = reconstruct_run(record, offline)

    images, clusters = _derived(live / f"derived_{uid[:8]}.h5")
    offline_images, offline_clusters = _derived(offline / f"derived_{uid[:8]}.h5")
    for name in DERIVED_IMAGES:
        np.testing.assert_array_equal(images[name], offline_images[name], err_msg=name)
    assert clusters.keys() == offline_clusters.keys()
    for name in clusters:
        np.testing.assert_array_equal(clusters[name], offline_clusters[name], err_msg=name)
    # not the silent failure: an image with contrast, and clusters
    assert np.nanstd(images["transmission"]) > 1e-3 and np.nanstd(images["dark_field"]) > 1e-3
    assert len(live_rows) == len(offline_rows) >= 1
    assert [r["texture"] for r in live_rows] == [r["texture"] for r in offline_rows]
    assert [r["ratio"] for r in live_rows] == pytest.approx([r["ratio"] for r in offline_rows], abs=1e-4)
    assert {r["texture"] for r in live_rows} <= {"ultra-fine", "fine", "pleomorphic", "coarse"}
    assert monitor.cluster_rows == [{key: row[key] for key in monitor.cluster_rows[0]} for row in live_rows]

    # the monitor showed the frames the IOC wrote: its stepping curve holds the sample frames
    rows = read_run_record(record).frames
    sample = [(float(r["g2_um"]), str(r["file"]), int(r["point"])) for r in rows if r["stream"] == "primary"]
    with h5py.File(sample[0][1], "r") as f:
        written = f[FRAME_DATASET][()]
    assert sorted(monitor.stepping) == pytest.approx(sorted(g2 for g2, _, _ in sample))
    for g2, _, point in sample:
        np.testing.assert_array_equal(monitor.stepping[min(monitor.stepping, key=lambda x: abs(x - g2))],
                                      written[point])
    assert written[[p for _, _, p in sample]].mean() > 2 * written[0].mean()  # beam, not the dark frame
