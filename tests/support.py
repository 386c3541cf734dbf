"""Helpers shared by the tests (imported as ``from support import ...``; tests/conftest.py
holds fixtures only)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from bluesky import RunEngine
from bluesky.utils import TransitionError
from event_model import DocumentNames, schema_validators

from acquisition.config import load_config


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


@contextlib.contextmanager
def run_engine(**kwargs):
    """A ``RunEngine({})`` on an event loop of its own (``kwargs`` go to RunEngine); on exit
    it halts a plan still running, drops every subscription, stops the loop, joins the
    loop's thread and closes the loop (as bluesky's own ``RE`` test fixture does)."""
    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop, **kwargs)
    try:
        yield engine
    finally:
        if engine.state not in ("idle", "panicked"):
            with contextlib.suppress(TransitionError):
                engine.halt()
        engine.dispatcher.unsubscribe_all()
        loop.call_soon_threadsafe(loop.stop)
        engine._th.join(timeout=10)
        loop.close()
