"""Session fixture: the Channel Access twins in a subprocess on a private loopback port.

libca reads ``EPICS_CA_ADDR_LIST`` when it creates its first channel and never again, and
pyepics starts it lazily.  The port is therefore chosen and written to ``os.environ``
when this module is imported, i.e. when tests/conftest.py loads it as a plugin, before any
test of the session creates a channel (conftest itself only sets the address without a
port).  The fixture checks that nobody changed it since.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REGION = (752, 936, 32, 48)
"""Detector read-out region of the test IOC (first row, first column, rows, columns): the
region of ``small_config(32, 48)``, so in-process twins can run the same configuration."""
TIME_SCALE = 0.001
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free TCP/UDP port on 127.0.0.1")


CA_PORT = _free_port()
ADDR_LIST = f"127.0.0.1:{CA_PORT}"
os.environ["EPICS_CA_ADDR_LIST"] = ADDR_LIST
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"


@dataclass(frozen=True)
class RunningIOC:
    prefix: str
    port: int
    write_path: Path
    region: tuple[int, int, int, int]
    time_scale: float
    process: subprocess.Popen

    def pv(self, suffix: str) -> str:
        return self.prefix + suffix


@contextlib.contextmanager
def searching_port(port: int):
    """caproto's sync client searches ``EPICS_CA_ADDR_LIST`` as it is at each call (libca
    read it once, at its start): point it at ``port`` for the calls inside."""
    saved = os.environ["EPICS_CA_ADDR_LIST"]
    os.environ["EPICS_CA_ADDR_LIST"] = f"127.0.0.1:{port}"
    try:
        yield
    finally:
        os.environ["EPICS_CA_ADDR_LIST"] = saved


def wait_for(condition, timeout_s=3.0, what="condition"):
    """Poll ``condition()`` until true (CA monitors arrive asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def caget(pvname: str, port: int, timeout: float = 10.0):
    """One value of ``pvname`` from the server on ``port`` (caproto's sync client)."""
    from caproto.sync.client import read

    with searching_port(port):
        return read(pvname, timeout=timeout, repeater=False, force_int_enums=True).data[0]


def _wait_until_serving(pvname: str, process: subprocess.Popen, log_path, port: int = CA_PORT,
                        timeout_s: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"IOC exited with {process.returncode} (log: {log_path})")
        try:
            caget(pvname, port, timeout=0.5)
            return time.monotonic() - started
        except TimeoutError:
            continue
    raise TimeoutError(f"IOC did not answer {pvname} within {timeout_s} s")


def spawn_ioc(prefix: str, port: int, write_path: Path, *, time_scale: float = TIME_SCALE,
              region=REGION, log_name: str = "ioc.log", extra_args=()) -> subprocess.Popen:
    """``talbot-lau ioc`` on loopback port ``port`` (``extra_args``: more of its options),
    answering; its log in ``write_path``."""
    env = dict(os.environ, EPICS_CA_SERVER_PORT=str(port), EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
               EPICS_CA_REPEATER_PORT=str(_free_port()))
    command = [sys.executable, "-m", "acquisition.cli", "ioc", "--prefix", prefix,
               "--time-scale", str(time_scale), "--write-path", str(write_path),
               "--region", ",".join(map(str, region)), *extra_args]
    with open(write_path / log_name, "ab") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(prefix + "tube:State_RBV", process, write_path / log_name, port)
    except BaseException:
        stop_ioc(process)
        raise
    return process


def stop_ioc(process: subprocess.Popen) -> None:
    """SIGINT, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def ioc(tmp_path_factory):
    """The twins' IOC: ``ioc.prefix``, ``ioc.write_path``; stopped with SIGINT at the end."""
    if os.environ.get("EPICS_CA_ADDR_LIST") != ADDR_LIST:
        pytest.fail(f"EPICS_CA_ADDR_LIST changed after tests/ioc_fixture.py chose {ADDR_LIST}")
    prefix = f"T{uuid.uuid4().hex[:6]}:"
    write_path = tmp_path_factory.mktemp("ioc-frames")
    process = spawn_ioc(prefix, CA_PORT, write_path)
    try:
        yield RunningIOC(prefix, CA_PORT, write_path, REGION, TIME_SCALE, process)
    finally:
        stop_ioc(process)
