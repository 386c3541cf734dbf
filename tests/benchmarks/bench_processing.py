"""Benchmark: on-the-fly processing of a full-frame projection (1536 x 1920, 9 + 9 steps).

Run: python tests/benchmarks/bench_processing.py [--repeat N] [--before-after-only]
Prints medians side by side:
- latency from the last sample frame's event to the derived images event, with the
  processor in the RunEngine's process (worker thread) and in another process behind
  bluesky's 0MQ proxy (`talbot-lau proxy` + `talbot-lau processor --publish`);
- the baseline: the retrieval and classification alone on the same frames;
- the RunEngine's time per document spent in subscribers: none, the in-process processor
  (it fills frames from HDF5 on the RunEngine's thread), the 0MQ publisher;
- before/after of the classification and the derived file of one projection, side by side:
  the classification with the numpy closing and the excess computed as before issue 17
  (scipy's grey opening and median filters, np.median of the blocks;
  tests/test_classification_speed_paths.py keeps that implementation) against now (the
  compiled closing, 3 x 3 median, opening and interpolation), and the derived file with
  every image gzip-compressed (before) against the float images plain.  The helpers made
  faster in place (interpolation weights, -ln) serve both, so "before" understates the
  gain a little.  Wall and CPU time (the thread's: the machine's other load does not
  count) are given, with the load average when the run started.
The twins run with time_scale 0 (no exposure waits) so the figures are the software's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bluesky import RunEngine

from acquisition.config import load_config
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing.analysis import analyse_projection
from acquisition.processing.live import darkfield_router
from acquisition.processing.offline import load_sets
from acquisition.processing.remote import by_origin, start_dispatcher
from acquisition.processing.remote import publisher as remote_publisher
from acquisition.storage.run_record import record_name
from acquisition.storage.run_record_reader import read_run_record
from acquisition.storage.run_recorder import run_recorder


def full_frame_config():
    config = load_config()
    detector = dataclasses.replace(config.setup.detector, region=None)
    return dataclasses.replace(config, setup=dataclasses.replace(config.setup, detector=detector),
                               simulation=dataclasses.replace(config.simulation, time_scale=0.0))


class Clock:
    """Times the last sample-frame event (RunEngine side) and the derived images event."""

    def __init__(self):
        self.last_frame = self.derived = None
        self.finished = False  # the derived run's stop document came
        self._primary = set()

    def raw(self, name, doc):
        if name == "descriptor" and doc["name"] == "primary":
            self._primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._primary:
            self.last_frame = time.perf_counter()

    def derived_doc(self, name, doc):
        if name in ("event", "event_page") and self.derived is None and self.last_frame is not None:
            self.derived = time.perf_counter()
        self.finished = self.finished or name == "stop"

    def wait(self, timeout_s=120.0, *, until_stop=False) -> float:
        """Seconds from the last frame to the first derived event, once it came (and, with
        ``until_stop``, the derived run's stop: a listener stopped earlier leaves the rest
        of the run to the next one, which has not seen its start)."""
        deadline = time.monotonic() + timeout_s
        while self.derived is None or (until_stop and not self.finished):
            if time.monotonic() > deadline:
                raise TimeoutError("no derived document")
            time.sleep(0.002)
        return self.derived - self.last_frame


def timed(callback, spent: list):
    """``callback`` wrapped to add the seconds each document costs to ``spent``."""
    def wrapper(name, doc):
        started = time.perf_counter()
        callback(name, doc)
        spent.append(time.perf_counter() - started)
    return wrapper


def run_once(instrument, out: Path, subscribers, clock: Clock | None) -> list[float]:
    engine = RunEngine({})
    spent: list[float] = []
    for callback in subscribers:
        engine.subscribe(timed(callback, spent))
    if clock is not None:
        engine.subscribe(clock.raw)
    engine(darkfield_projection(instrument, dark_frames=1, sample={"id": "bench"}))
    return spent


def clocked(function) -> tuple[float, float]:
    """Wall and thread-CPU seconds of one ``function()``."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    function()
    return time.perf_counter() - started, time.thread_time() - started_cpu


@contextlib.contextmanager
def before_issue_17():
    """The classification and derived-file paths as they were: the numpy closing, the excess
    computed by the implementation that read each image six times, every image gzipped."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_classification_speed_paths import reference_excess_bands

    from acquisition.storage import derived_store, nexus
    from reconstruction import segmentation

    saved = os.environ.get("TALBOT_LAU_KERNEL"), segmentation.excess_bands, derived_store.nx_image
    os.environ["TALBOT_LAU_KERNEL"] = "numpy"
    segmentation.excess_bands = reference_excess_bands
    derived_store.nx_image = lambda *args, compress=True, **kwargs: nexus.nx_image(*args, **kwargs)
    try:
        yield
    finally:
        kernel, segmentation.excess_bands, derived_store.nx_image = saved
        if kernel is None:
            os.environ.pop("TALBOT_LAU_KERNEL", None)
        else:
            os.environ["TALBOT_LAU_KERNEL"] = kernel


def before_and_after(frames, period_um, out: Path, repeat: int) -> dict:
    """(wall, cpu) medians of classification and derived-file writing, before and after."""
    from acquisition.processing.analysis import classify_image, retrieve_projection
    from acquisition.processing.process_record import write_derived_file

    retrieval = retrieve_projection(frames, period_um)
    analysis = classify_image(retrieval)  # compiles the closing (cached for later processes)

    def write():
        write_derived_file(out / "derived_bench.h5", analysis, "bench", run_record=None,
                           tissue_calibration=None, start=None)

    rounds = {when: {"classification": [], "derived file": []} for when in ("before", "after")}
    figures = {when: {} for when in rounds}
    for _ in range(repeat):  # interleaved, so a change of the machine's load hits both alike
        for when, steps in rounds.items():
            with before_issue_17() if when == "before" else contextlib.nullcontext():
                steps["classification"].append(clocked(lambda: classify_image(retrieval)))
                steps["derived file"].append(clocked(write))
                figures[when]["file MB"] = (out / "derived_bench.h5").stat().st_size / 1e6
    for when, steps in rounds.items():
        for step, times in steps.items():
            figures[when][step] = tuple(statistics.median(column) for column in zip(*times))
    return figures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_remote(out: Path):
    in_port, out_port = free_port(), free_port()
    cli = [sys.executable, "-m", "acquisition.cli"]
    proxy = subprocess.Popen(cli + ["proxy", "--in-port", str(in_port), "--out-port", str(out_port)])
    for port in (in_port, out_port):
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            time.sleep(0.05)
    processor = subprocess.Popen(cli + ["processor", "--zmq", f"127.0.0.1:{out_port}", "--publish",
                                        f"127.0.0.1:{in_port}", "--out", str(out / "remote")],
                                 stdout=subprocess.PIPE, text=True)
    processor.stdout.readline()
    return in_port, out_port, (proxy, processor)


def latencies(instrument, out: Path, repeat: int) -> dict:
    """Per-document RunEngine time and last frame -> derived latency, each path."""
    bare = []
    for _ in range(repeat):
        bare += run_once(instrument, out, [lambda name, doc: None], None)

    local_latency, local_spent = [], []
    for _ in range(repeat):
        clock = Clock()
        router = darkfield_router(out / "local", publish=clock.derived_doc)
        local_spent += run_once(instrument, out, [router], clock)
        local_latency.append(clock.wait())
        router.wait(timeout=300)

    in_port, out_port, processes = start_remote(out)
    remote_latency, remote_spent = [], []
    try:
        for _ in range(repeat):
            clock = Clock()
            stop = start_dispatcher(("127.0.0.1", out_port), [by_origin(lambda n, d: None, clock.derived_doc)])
            publisher = remote_publisher(("127.0.0.1", in_port))
            time.sleep(0.5)  # 0MQ connections
            remote_spent += run_once(instrument, out, [publisher], clock)
            remote_latency.append(clock.wait(until_stop=True))
            publisher.close()
            stop()
    finally:
        for process in processes:
            process.kill()
    return {"bare": bare, "local": (local_latency, local_spent), "remote": (remote_latency, remote_spent)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before-after-only", action="store_true",
                        help="only the one-projection before/after table, no latency runs")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    out = Path(tempfile.mkdtemp(prefix="bench-processing-"))
    instrument = simulated_instrument(full_frame_config(), write_path=out / "raw")
    runs = None if args.before_after_only else latencies(instrument, out, args.repeat)

    engine = RunEngine({})
    engine.subscribe(run_recorder(out / "record"))
    (uid,) = engine(darkfield_projection(instrument, dark_frames=1))
    record = read_run_record(out / "record" / record_name(uid))
    sets, period = load_sets(record), record.start["phase_stepping"]["period_um"]
    analysis_s = []
    for _ in range(0 if runs is None else args.repeat):
        started = time.perf_counter()
        analyse_projection(sets[-1][1], period)
        analysis_s.append(time.perf_counter() - started)

    figures = before_and_after(sets[-1][1], period, out, args.repeat)

    med = statistics.median
    print(f"full-frame projection, 1536 x 1920, 9 + 9 steps + 1 dark; medians of {args.repeat} runs; "
          f"load average at the start {load:.2f} (2 cores)")
    if runs is not None:
        bare, (local_latency, local_spent), (remote_latency, remote_spent) = (
            runs["bare"], runs["local"], runs["remote"])
        print(f"{'path':<44}{'last frame -> derived (s)':>28}{'RE per document (ms)':>24}")
        print(f"{'no processor (a no-op subscriber)':<44}{'-':>28}{1e3 * med(bare):>24.3f}")
        print(f"{'processor in process (worker thread)':<44}{med(local_latency):>28.3f}"
              f"{1e3 * med(local_spent):>24.3f}")
        print(f"{'processor in another process (0MQ proxy)':<44}{med(remote_latency):>28.3f}"
              f"{1e3 * med(remote_spent):>24.3f}")
        print(f"{'baseline: retrieval + classification alone':<44}{med(analysis_s):>28.3f}{'-':>24}")
        print(f"RE per document, mean (frame-filling events dominate): in process "
              f"{1e3 * statistics.mean(local_spent):.2f} ms, 0MQ {1e3 * statistics.mean(remote_spent):.2f} ms, "
              f"none {1e3 * statistics.mean(bare):.3f} ms")
    print(f"\n{'one projection, medians (s)':<32}{'before wall':>12}{'cpu':>8}{'after wall':>12}{'cpu':>8}")
    for step in ("classification", "derived file"):
        (bw, bc), (aw, ac) = figures["before"][step], figures["after"][step]
        print(f"{step:<32}{bw:>12.3f}{bc:>8.3f}{aw:>12.3f}{ac:>8.3f}")
    print(f"{'derived file size (MB)':<32}{figures['before']['file MB']:>12.1f}{'':>8}"
          f"{figures['after']['file MB']:>12.1f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
