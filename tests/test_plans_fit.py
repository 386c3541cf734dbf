"""Plans that fit what they promise (issue 13): a dose refusal says what would fit, the
documented plans run within the budget, and the warm-up takes simulated time, skips what
the tube already is and counts its steps."""

import ast
import io
import re
import time
from pathlib import Path

import pytest

import acquisition.plans as plans
from acquisition.instrument import simulated_instrument
from acquisition.plans import (PlanArgumentError, darkfield_mosaic, darkfield_projection,
                               tube_warmup)
from acquisition.plans.source import honour_time_scale
from acquisition.progress import PlanProgress
from support import run_engine

OPERATING = Path(__file__).resolve().parents[1] / "docs" / "operating.md"


@pytest.fixture(scope="module")
def instrument(tmp_path_factory):
    """The embedded configuration as it is (time scale 0.002, dose budget 200 mGy)."""
    return simulated_instrument(write_path=tmp_path_factory.mktemp("raw"))


SUGGESTION = re.compile(r"\b(exposure_s|steps|ma) <= ([0-9.]+)|\b(overlap)=0\b|\b(rows)=1\b")


def suggestions(message: str) -> list[dict]:
    """The single changes a refusal names, as keyword arguments."""
    found = []
    for name, value, overlap, rows in SUGGESTION.findall(message):
        if name:
            found.append({name: int(value) if name == "steps" else float(value)})
        elif overlap:
            found.append({"overlap": 0.0})
        elif rows:
            found.append({"rows": 1})
    return found


CASES = [  # (plan, arguments planning more than the budget, suggestions expected at least)
    (darkfield_mosaic, dict(rows=4, columns=4, overlap=0.1,
                            sample={"id": "mastectomy-3", "thickness_mm": 45}),
     {"exposure_s", "steps", "ma", "overlap", "rows"}),
    (darkfield_mosaic, dict(rows=2, columns=2, overlap=0.1,
                            sample={"id": "phantom", "thickness_mm": 10}),
     {"exposure_s", "ma", "overlap"}),
    (darkfield_projection, dict(sample={"id": "slice", "breast_thickness_mm": 1}, exposure_s=12.0),
     {"exposure_s", "steps", "ma"}),
]


@pytest.mark.parametrize("plan, kwargs, expected", CASES)
def test_a_dose_refusal_names_settings_that_fit(instrument, plan, kwargs, expected):
    with pytest.raises(PlanArgumentError) as refused:
        plan(instrument, **kwargs)
    message = str(refused.value)
    assert "budget of 200 mGy" in message and "dose.budget_mgy" in message
    assert "configs/instrument.yaml" in message
    fits = suggestions(message)
    assert {name for fit in fits for name in fit} >= expected, message
    for fit in fits:  # each suggestion alone, applied, is accepted
        plan(instrument, **(kwargs | fit)).close()


def test_the_suggested_values_are_the_largest_on_their_grid(instrument):
    kwargs = dict(rows=4, columns=4, overlap=0.1, sample={"id": "m", "thickness_mm": 45})
    with pytest.raises(PlanArgumentError) as refused:
        darkfield_mosaic(instrument, **kwargs)
    message = str(refused.value)
    assert "295.1 mGy" in message  # 4 x 9 steps x 9 s x 0.911 mGy/s: the corners of four tiles
    assert "exposure_s <= 6.1 s" in message and "steps <= 6" in message and "ma <= 47 mA" in message
    for fit in ({"exposure_s": 6.2}, {"steps": 7}, {"ma": 48.0}):  # one grid step more is refused
        with pytest.raises(PlanArgumentError):
            darkfield_mosaic(instrument, **(kwargs | fit))


def documented_plan_calls(text: str) -> list[str]:
    """The source of every ``RE(<plan>)`` argument in the page's python blocks."""
    calls = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RE" and node.args:
                calls.append(ast.get_source_segment(block, node.args[0]))
    return calls


def test_every_documented_plan_is_accepted_as_written(instrument):
    calls = documented_plan_calls(OPERATING.read_text())
    assert any(call.startswith("darkfield_mosaic(") for call in calls)
    assert any(call.startswith("tube_warmup(") for call in calls)
    namespace = {name: getattr(plans, name) for name in plans.__all__} | {"instrument": instrument}
    for call in calls:
        eval(call, namespace).close()  # made (every argument checked, the dose too), never run


def test_the_session_help_screen_plans_are_accepted(instrument):
    from acquisition.session import HELP

    calls = re.findall(r"(?:darkfield_mosaic|tube_warmup)\(instrument[^)]*\)", HELP)
    assert len(calls) == 2, HELP
    namespace = {name: getattr(plans, name) for name in plans.__all__} | {"instrument": instrument}
    for call in calls:
        eval(call, namespace).close()


def run_warmup(instrument, **kwargs):
    """(wall s, [(signal, value) set], [sleep s], documents, progress text) of one warm-up run."""
    with run_engine() as engine:
        honour_time_scale(engine, instrument)
        documents, sets, sleeps = [], [], []
        engine.subscribe(lambda name, doc: documents.append((name, doc)))
        bar = io.StringIO()
        engine.subscribe(PlanProgress(file=bar))

        def hook(msg):
            if msg.command == "set":
                sets.append((msg.obj.name, msg.args[0]))
            elif msg.command == "sleep":
                sleeps.append(msg.args[0])

        engine.msg_hook = hook
        started = time.monotonic()
        engine(tube_warmup(instrument, **kwargs))
        return time.monotonic() - started, sets, sleeps, documents, bar.getvalue()


@pytest.mark.slow
def test_warmup_takes_simulated_time_and_skips_a_signal_at_its_target(instrument):
    assert instrument.config.simulation.time_scale == 0.002  # the embedded time scale
    instrument.tube.kv.put(40.0)
    instrument.tube.ma.put(0.0)
    wall, sets, sleeps, _, _ = run_warmup(instrument, kv=40, ma=70, steps=5, dwell_s=60)
    assert not [s for s in sets if s[0] == "tube_kv"]  # already at 40 kV: no mv
    assert [s for s in sets if s[0] == "tube_ma"] == [("tube_ma", v) for v in (14.0, 28.0, 42.0, 56.0, 70.0)]
    assert sleeps == [60.0] * 5
    assert wall < 5.0  # 300 recorded seconds
    instrument.tube.kv.put(0.0)
    instrument.tube.ma.put(0.0)
    wall, _, sleeps, _, _ = run_warmup(instrument, kv=40, ma=70, steps=5, dwell_s=60)
    assert len(sleeps) == 10 and wall < 5.0  # the documented warm-up from cold: 600 s recorded
    assert (instrument.tube.kv.get(), instrument.tube.ma.get(), instrument.tube.shutter.get()) == (40.0, 70.0, 0)


def test_warmup_to_the_current_point_moves_nothing_and_records_it(instrument):
    instrument.tube.kv.put(40.0)
    instrument.tube.ma.put(70.0)
    _, sets, sleeps, documents, bar = run_warmup(instrument, kv=40, ma=70, steps=5, dwell_s=60)
    assert not [s for s in sets if s[0] in ("tube_kv", "tube_ma")] and not sleeps
    assert {s[0] for s in sets} == {"tube_shutter"}  # closed, as on every way out
    start = documents[0][1]
    assert start["at_target"] is True and start["ramp"] == []
    assert start["initial"] == {"kv": 40.0, "ma": 70.0} and start["progress"]["total"] == 0
    assert documents[-1][1]["exit_status"] == "success"
    assert not [doc for name, doc in documents if name == "event"]
    assert "at 40 kV, 70 mA already" in bar


def test_warmup_progress_counts_ramp_steps(instrument):
    instrument.tube.kv.put(20.0)
    instrument.tube.ma.put(10.0)
    _, sets, _, documents, bar = run_warmup(instrument, kv=40, ma=70, steps=4, dwell_s=1)
    ramp_sets = [s for s in sets if s[0] in ("tube_kv", "tube_ma")]
    start = documents[0][1]
    assert start["progress"] == {"total": 8, "unit": "step", "stream": "primary", "note": ""}
    assert len(ramp_sets) == start["progress"]["total"] == len(start["ramp"])
    assert len([doc for name, doc in documents if name == "event"]) == 8
    assert "8/8" in bar and "step" in bar and "frame" not in bar
