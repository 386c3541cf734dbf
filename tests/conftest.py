"""Test environment: headless Qt, Channel Access on loopback only; fixtures shared by the
tests (helpers are in tests/support.py)."""

import os
import threading

# Before anything imports Qt or starts libca.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
os.environ["EPICS_CA_ADDR_LIST"] = "127.0.0.1"
os.environ["EPICS_CAS_INTF_ADDR_LIST"] = "127.0.0.1"

import pytest  # noqa: E402

pytest_plugins = ["ioc_fixture"]  # the session fixture ``ioc`` (it picks the CA port on import)

from support import run_engine, small_config  # noqa: E402


IOC_FIXTURES = {
    "ioc": "tests/ioc_fixture.py: the session's IOC",
    "slow_ioc": "tests/test_detector_twin.py: an IOC at time scale 0.05",
    "real_time_ioc": "tests/test_motor_record_twin.py: an IOC at time scale 1",
    "tl_iocs": "tests/test_docs.py: the rehearsal's two IOCs",
}
"""Fixtures that start a Channel Access IOC: a test that uses one is marked ``ioc``."""


def pytest_collection_modifyitems(items):
    """Mark ``ioc`` the tests that use an IOC fixture, ``qt`` those that use ``qtbot``."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & IOC_FIXTURES.keys():
            item.add_marker(pytest.mark.ioc)
        if "qtbot" in names:
            item.add_marker(pytest.mark.qt)


def _run_engine_threads() -> set:
    return {t for t in threading.enumerate() if t.name == "bluesky-run-engine" and t.is_alive()}


@pytest.fixture(scope="module", autouse=True)
def no_run_engine_left():
    """Every RunEngine a test module makes is closed by the module's end: bluesky's loop
    thread of a RunEngine never closed runs on (``acquisition.run_engine`` closes one)."""
    before = _run_engine_threads()
    yield
    left = _run_engine_threads() - before
    assert not left, f"{len(left)} RunEngine(s) left running: use acquisition.run_engine or the RE fixture"


@pytest.fixture
def RE():
    """A RunEngine({}) that the test owns, closed after it (acquisition.run_engine)."""
    with run_engine() as engine:
        yield engine


@pytest.fixture
def config_small():
    return small_config()
