"""Faults injected into a real Channel Access IOC while a projection runs over CA.

Each test starts ``talbot-lau ioc`` on a port of its own and a client process
(tests/fault_client.py), breaks the IOC the way a lab's IOC breaks (killed and restarted
mid-set, killed for good, stopped past the CA echo timeout, its disk full) and asserts
what docs/reliability.md promises: the shutter closed, every frame recorded readable, an
honest exit status whose reason names the cause, no hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import pytest
from ioc_fixture import REPO, _free_port, caget, spawn_ioc, stop_ioc

pytestmark = [pytest.mark.faults, pytest.mark.ioc]  # each test starts an IOC of its own
TIME_SCALE = 0.05
CLIENT = Path(__file__).with_name("fault_client.py")


class Scenario:
    """One IOC on its own port and one client process running a projection against it."""

    def __init__(self, tmp_path: Path, *, write_path: Path | None = None):
        self.prefix = f"F{uuid.uuid4().hex[:6]}:"
        self.port = _free_port()
        self.write_path = write_path or tmp_path / "frames"
        self.write_path.mkdir(exist_ok=True)
        self.logs = tmp_path
        self.report = tmp_path / "report.json"
        self.ioc = self.start_ioc()
        self.env = dict(os.environ, EPICS_CA_ADDR_LIST=f"127.0.0.1:{self.port}",
                        EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_CONN_TMO="2",
                        EPICS_CA_REPEATER_PORT=str(_free_port()))

    def start_ioc(self) -> subprocess.Popen:
        return spawn_ioc(self.prefix, self.port, self.write_path, time_scale=TIME_SCALE)

    def run(self, on_line, *, timeout_s: float = 120.0, **options) -> dict:
        """Run the client; ``on_line(self, line)`` sees each line it prints."""
        command = [sys.executable, str(CLIENT), self.prefix, str(self.write_path), str(self.report)]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        with open(self.logs / "client.log", "wb") as log, subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True) as client:
            deadline = time.monotonic() + timeout_s
            try:
                for line in client.stdout:
                    on_line(self, line.strip())
                    if time.monotonic() > deadline:
                        break
                client.wait(timeout=max(deadline - time.monotonic(), 1))
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
                    pytest.fail(f"client hung (log: {self.logs / 'client.log'})")
        assert self.report.exists(), (self.logs / "client.log").read_text()[-3000:]
        return json.loads(self.report.read_text())

    def shutter_readback(self) -> int:
        return int(caget(self.prefix + "tube:Shutter_RBV", self.port))

    def close(self) -> None:
        if self.ioc.poll() is None:
            os.kill(self.ioc.pid, signal.SIGCONT)
        stop_ioc(self.ioc)


@pytest.fixture
def scenario(tmp_path):
    made = []

    def make(**kwargs):
        made.append(Scenario(tmp_path, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def frames_readable(report: dict) -> None:
    """Every frame in a file reads back (checksums verified by h5py) and is not empty; a
    frame an event refers to but no file holds is a rejected one (not written), never one
    of a kept set: the last complete sets are checked by :func:`sample_sets_complete`."""
    for event in report["events"]:
        if event["frame"] is None:
            continue
        path, point = event["frame"]
        with h5py.File(path, "r", swmr=True) as f:
            data = f["entry/data/data"]
            if point < data.shape[0]:
                assert data[point].mean() > 0, f"{event}: an empty frame in {path}"
            else:
                event["missing"] = True


def dose_is_what_was_exposed(report: dict) -> None:
    """The recorded dose is that of every sample event with the shutter open, repeats included."""
    exposed = [e for e in report["events"] if e["stream"] == "primary" and e["shutter"]]
    recorded = [e["dose_mgy"] for e in report["events"] if e["stream"] == "dose"]
    assert recorded, "no dose event"
    assert recorded[-1] == pytest.approx(len(exposed) * report["dose_rate_mgy_per_s"]
                                         * report["exposure_s"], rel=0.01)


def sample_sets_complete(report: dict, steps: int) -> None:
    """The last ``steps`` sample events form one complete set taken with the beam."""
    frames_readable(report)
    sample = [e for e in report["events"] if e["stream"] == "primary"]
    assert len(sample) >= steps
    assert [e["shutter"] for e in sample[-steps:]] == [1] * steps
    assert not any(e.get("missing") for e in sample[-steps:])


@pytest.mark.parametrize("when", ["EVENT primary 2", "EVENT reference 5"],
                         ids=["mid-exposure", "mid-move-to-sample"])
@pytest.mark.slow
def test_ioc_restart_mid_set_repeats_the_set_at_the_planned_settings(scenario, when):
    """SIGKILL and a restart: the restarted IOC has its defaults (AcquireTime 9 s, no file,
    axes at 0); the plan suspends, re-applies and checks the settings, repeats the set."""
    run = scenario()
    state = {"killed": False}

    def restart_in_sample_set(run, line):
        if not state["killed"] and line.startswith(when):
            state["killed"] = True
            run.ioc.kill()
            run.ioc.wait()
            time.sleep(1.0)
            run.ioc = run.start_ioc()

    report = run.run(restart_in_sample_set, steps=5)
    assert state["killed"]
    assert report["exit_status"] == "success", report
    sample_sets_complete(report, 5)
    frames_readable(report)
    dose_is_what_was_exposed(report)
    assert report["shutter_after"] == 0 and run.shutter_readback() == 0


@pytest.mark.slow
def test_ioc_lost_for_good_fails_naming_the_ioc(scenario):
    run = scenario()

    def kill_in_reference_set(run, line):
        if line.startswith("EVENT reference 2") and run.ioc.poll() is None:
            run.ioc.kill()

    started = time.monotonic()
    report = run.run(kill_in_reference_set, steps=5, lost_timeout=5)
    assert time.monotonic() - started < 60
    assert report["exit_status"] == "fail"
    assert "IOC lost" in report["reason"] and run.prefix in report["reason"]
    frames_readable(report)
    dose_is_what_was_exposed(report)


@pytest.mark.slow
def test_ioc_hung_past_the_echo_timeout_leaves_the_shutter_closed(scenario):
    """SIGSTOP for longer than the CA echo timeout (2 s here), then SIGCONT: ophyd's channels
    may come back read-only; the shutter is closed through a fresh channel or by the
    IOC's exposure timer, and the run ends honestly."""
    run = scenario()
    state = {"stopped": False}

    def hang_in_sample_set(run, line):
        if not state["stopped"] and line.startswith("EVENT primary 2"):
            state["stopped"] = True
            os.kill(run.ioc.pid, signal.SIGSTOP)
            time.sleep(12.0)
            os.kill(run.ioc.pid, signal.SIGCONT)

    report = run.run(hang_in_sample_set, steps=5, lost_timeout=30)
    assert state["stopped"]
    if report["exit_status"] == "success":
        sample_sets_complete(report, 5)
    else:
        assert report["reason"], report
    frames_readable(report)
    deadline = time.monotonic() + 15  # the exposure timer's floor, at most
    while run.shutter_readback() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.shutter_readback() == 0


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_at_the_ioc_fails_the_run_with_the_reason_and_no_hang(scenario, small_disk):
    """A 32 x 48 frame is 3 kB: 160 kB fill up within the run."""
    (small_disk / "ballast").write_bytes(b"\0" * 120_000)
    run = scenario(write_path=small_disk)
    report = run.run(lambda run, line: None, steps=9, timeout_s=90)
    assert report["exit_status"] == "fail", report
    assert "errno = 28" in report["reason"] or "No space" in report["reason"], report
    assert report["shutter_after"] == 0 and run.shutter_readback() == 0
    frames_readable(report)


@pytest.mark.slow
def test_unwritable_write_path_fails_before_any_xray(scenario, tmp_path):
    """The detector's write path is outside the IOC's write root: staging fails with the
    IOC's reason, before the run opens and before the shutter opens."""
    run = scenario()
    run.write_path = tmp_path / "elsewhere"
    report = run.run(lambda run, line: None, steps=3, timeout_s=60)
    assert report["exit_status"] is None and report["events"] == []  # no run was opened
    assert "FilePath" in report["error"] or "file_path" in report["error"], report
    assert run.shutter_readback() == 0
