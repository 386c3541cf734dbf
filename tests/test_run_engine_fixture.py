"""The tests' RunEngine (tests/support.py ``run_engine``, the ``RE`` fixture) leaves nothing
behind: no plan still open, no subscription, no event loop or thread."""

import bluesky.plan_stubs as bps
import pytest
from bluesky.utils import RunEngineInterrupted

from support import run_engine


def test_the_fixture_engine_is_idle_and_runs_a_plan(RE):
    seen = []
    RE.subscribe(lambda name, doc: seen.append(name))
    RE(bps.open_run())  # a run left open is closed by the engine at the plan's end
    assert RE.state == "idle" and seen == ["start", "stop"]


def test_a_paused_engine_is_halted_and_its_loop_closed():
    with run_engine() as engine:
        engine.subscribe(lambda name, doc: None)
        with pytest.raises(RunEngineInterrupted):
            engine(bps.pause())
        assert engine.state == "paused"
        loop, thread = engine.loop, engine._th
    assert engine.state == "idle"
    assert not any(engine.dispatcher.cb_registry.callbacks.values())  # no subscription left
    assert loop.is_closed() and not thread.is_alive()
