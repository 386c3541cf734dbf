"""Test environment: headless Qt, Channel Access on loopback only, small fast configs."""

import os

# Before anything imports Qt or starts libca.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
os.environ["EPICS_CA_ADDR_LIST"] = "127.0.0.1"
os.environ["EPICS_CAS_INTF_ADDR_LIST"] = "127.0.0.1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from event_model import DocumentNames, schema_validators  # noqa: E402

from acquisition.config import load_config  # noqa: E402


def small_config(rows: int = 96, cols: int = 112, time_scale: float = 0.0, **simulation):
    """The embedded configuration on a small detector region and with no wall-clock waits."""
    config = load_config()
    det = config.setup.detector
    region = ((det.rows - rows) // 2, (det.columns - cols) // 2, rows, cols)
    setup = dataclasses.replace(config.setup, detector=dataclasses.replace(det, region=region))
    sim = dataclasses.replace(config.simulation, time_scale=time_scale, **simulation)
    return dataclasses.replace(config, setup=setup, simulation=sim)


def validated_documents(engine) -> list:
    """Subscribe a collector to ``engine`` that validates every document against
    event-model's schemas; returns the list it fills with (name, doc)."""
    documents = []

    def collect(name, doc):
        schema_validators[DocumentNames[name]].validate(doc)
        documents.append((name, doc))

    engine.subscribe(collect)
    return documents


@pytest.fixture
def config_small():
    return small_config()
