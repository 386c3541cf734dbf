"""Helpers shared by the tests (imported as ``from support import ...``; tests/conftest.py
holds fixtures only)."""

from __future__ import annotations

import dataclasses

from event_model import DocumentNames, schema_validators

from acquisition.config import load_config
from acquisition.run_engine import run_engine  # noqa: F401  (the package's own, for the RE fixture)


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
