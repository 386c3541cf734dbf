"""Tube conditioning: ramp kV and mA in the safe order, shutter closed throughout.

Going up, the voltage is raised first (at the present, low current) and then the current;
going down, the current is lowered first and then the voltage (a rotating-anode generator
must not carry a high current at a falling voltage).  Each step dwells ``dwell_s`` seconds
(``bps.sleep``: the RunEngine's time; a session on the simulated instrument runs the
RunEngine's sleeps at the simulation's time scale, :func:`honour_time_scale`).  A quantity
already at its target is not ramped, so a warm-up to the present operating point moves
nothing and only records that.  Each step taken is one event of the ``primary`` stream
(kV and mA read back at the end of its dwell); the start document's ``progress`` gives
the number of steps for the progress bar.
"""

from __future__ import annotations

import asyncio
import functools

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from ..instrument import Instrument
from .safety import close_shutter
from .settings import check, finite, whole

MAX_RAMP_STEPS = 100
MAX_DWELL_S = 3600.0
"""Longest dwell per ramp step (s): a conditioning ramp takes minutes to an hour, not days."""
AT_SETPOINT = 0.2
"""A quantity within this of its target (kV, mA) is there and is not ramped: the tolerance
within which the tube confirms a set (devices/tube.py)."""


def ramp(start: float, stop: float, steps: int) -> list[float]:
    """``steps`` equal increments from ``start`` to ``stop`` (the start itself excluded)."""
    return [float(v) for v in np.linspace(start, stop, steps + 1)[1:]]


def warmup_steps(kv_now: float, ma_now: float, kv: float, ma: float, steps: int,
                 tolerance: float = AT_SETPOINT) -> list[tuple[str, float]]:
    """The ramp from (kv_now, ma_now) to (kv, ma) as ("kv" | "ma", value) steps in the safe
    order (kV first going up, mA first going down); a quantity already within
    ``tolerance`` of its target takes no step."""
    order = [("kv", kv_now, kv), ("ma", ma_now, ma)] if kv >= kv_now else [("ma", ma_now, ma), ("kv", kv_now, kv)]
    return [(name, value) for name, start, stop in order if abs(stop - start) > tolerance
            for value in ramp(start, stop, steps)]


def tube_warmup(instrument: Instrument, *, kv: float | None = None, ma: float | None = None,
                steps: int = 5, dwell_s: float = 60.0):
    """Ramp the tube to (kv, ma) (defaults: the configured operating point) in ``steps`` per
    quantity, dwelling ``dwell_s`` after each; a quantity already at its target is not
    ramped.  Raises PlanArgumentError when called for anything out of range."""
    cfg = instrument.config.instrument.tube
    kv = cfg.kv if kv is None else kv
    ma = cfg.ma if ma is None else ma
    check(finite(kv) and 0 <= kv <= cfg.kv_max, f"kv={kv!r}: must be in [0, {cfg.kv_max}] kV")
    check(finite(ma) and 0 <= ma <= cfg.ma_max, f"ma={ma!r}: must be in [0, {cfg.ma_max}] mA")
    steps = whole(steps, "steps", 1, MAX_RAMP_STEPS)
    check(finite(dwell_s) and 0 <= dwell_s <= MAX_DWELL_S,
          f"dwell_s={dwell_s!r}: must be in [0, {MAX_DWELL_S:g}] s")
    kv, ma, dwell_s = float(kv), float(ma), float(dwell_s)
    tube = instrument.tube
    signals = {"kv": tube.kv, "ma": tube.ma}

    def body(ramp_steps):
        for name, value in ramp_steps:
            yield from bps.mv(signals[name], value)
            if dwell_s:
                yield from bps.sleep(dwell_s)
            yield from bps.trigger_and_read([tube.kv, tube.ma])

    def plan():
        yield from close_shutter(tube)
        kv_now = float((yield from bps.rd(tube.kv)))
        ma_now = float((yield from bps.rd(tube.ma)))
        ramp_steps = warmup_steps(kv_now, ma_now, kv, ma, steps)
        md = {"plan_name": "tube_warmup", "target": {"kv": kv, "ma": ma},
              "initial": {"kv": kv_now, "ma": ma_now}, "steps": steps, "dwell_s": dwell_s,
              "ramp": [[name, value] for name, value in ramp_steps],
              "at_target": not ramp_steps,
              "progress": {"total": len(ramp_steps), "unit": "step", "stream": "primary",
                           "note": "" if ramp_steps else f"at {kv_now:g} kV, {ma_now:g} mA already"}}
        yield from bpp.run_wrapper(body(ramp_steps), md=md)

    return bpp.finalize_wrapper(plan(), functools.partial(close_shutter, tube))


def honour_time_scale(engine, instrument: Instrument) -> None:
    """Run ``engine``'s ``sleep`` messages (a warm-up's dwell) at the simulated instrument's
    time scale, wall seconds per recorded second, as its twins run exposures and moves.
    The real instrument (no simulated world) leaves the engine as it is.  The wiring that
    builds a RunEngine for an instrument calls this; plans never do."""
    world = getattr(instrument, "world", None)
    if world is None:
        return

    async def scaled_sleep(msg):
        await asyncio.sleep(msg.args[0] * world.time_scale)

    engine.register_command("sleep", scaled_sleep)
