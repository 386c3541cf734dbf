"""Benchmark: on-the-fly processing of a full-frame projection (1536 x 1920, 9 + 9 steps).

Run: python tests/benchmarks/bench_processing.py [--repeat N]
Prints medians side by side:
- latency from the last sample frame's event to the derived images event, with the
  processor in the RunEngine's process (worker thread) and in another process behind
  bluesky's 0MQ proxy (`talbot-lau proxy` + `talbot-lau processor --publish`);
- the baseline: the retrieval and classification alone on the same frames;
- the RunEngine's time per document spent in subscribers: none, the in-process processor
  (it fills frames from HDF5 on the RunEngine's thread), the 0MQ publisher.
The twins run with time_scale 0 (no exposure waits) so the figures are the software's.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from acquisition.processing.live import darkfield_router
from acquisition.processing.analysis import analyse_projection
from acquisition.processing.offline import load_sets
from acquisition.processing.remote import by_origin, start_dispatcher
from acquisition.processing.remote import publisher as remote_publisher
from acquisition.storage.run_record import read_run_record, record_name, run_recorder


def full_frame_config():
    config = load_config()
    detector = dataclasses.replace(config.setup.detector, region=None)
    return dataclasses.replace(config, setup=dataclasses.replace(config.setup, detector=detector),
                               simulation=dataclasses.replace(config.simulation, time_scale=0.0))


class Clock:
    """Times the last sample-frame event (RunEngine side) and the derived images event."""

    def __init__(self):
        self.last_frame = self.derived = None
        self._primary = set()

    def raw(self, name, doc):
        if name == "descriptor" and doc["name"] == "primary":
            self._primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._primary:
            self.last_frame = time.perf_counter()

    def derived_doc(self, name, doc):
        if name in ("event", "event_page") and self.derived is None and self.last_frame is not None:
            self.derived = time.perf_counter()

    def wait(self, timeout_s=120.0) -> float:
        deadline = time.monotonic() + timeout_s
        while self.derived is None:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-processing-"))
    instrument = simulated_instrument(full_frame_config(), write_path=out / "raw")

    bare = []
    for _ in range(args.repeat):
        bare += run_once(instrument, out, [lambda name, doc: None], None)

    local_latency, local_spent = [], []
    for _ in range(args.repeat):
        clock = Clock()
        router = darkfield_router(out / "local", publish=clock.derived_doc)
        local_spent += run_once(instrument, out, [router], clock)
        local_latency.append(clock.wait())
        router.wait(timeout=300)

    in_port, out_port, processes = start_remote(out)
    remote_latency, remote_spent = [], []
    try:
        for _ in range(args.repeat):
            clock = Clock()
            stop = start_dispatcher(("127.0.0.1", out_port), [by_origin(lambda n, d: None, clock.derived_doc)])
            publisher = remote_publisher(("127.0.0.1", in_port))
            time.sleep(0.5)  # 0MQ connections
            remote_spent += run_once(instrument, out, [publisher], clock)
            remote_latency.append(clock.wait())
            publisher.close()
            stop()
    finally:
        for process in processes:
            process.kill()

    engine = RunEngine({})
    engine.subscribe(run_recorder(out / "record"))
    (uid,) = engine(darkfield_projection(instrument, dark_frames=1))
    record = read_run_record(out / "record" / record_name(uid))
    sets, period = load_sets(record), record.start["phase_stepping"]["period_um"]
    analysis_s = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        analyse_projection(sets[-1][1], period)
        analysis_s.append(time.perf_counter() - started)

    med = statistics.median
    print(f"full-frame projection, 1536 x 1920, 9 + 9 steps + 1 dark; medians of {args.repeat} runs")
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


if __name__ == "__main__":
    main()
