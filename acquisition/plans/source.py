"""Tube conditioning: ramp kV and mA in the safe order, shutter closed throughout.

Going up, the voltage is raised first (at the present, low current) and then the current;
going down, the current is lowered first and then the voltage (a rotating-anode generator
must not carry a high current at a falling voltage).  Each step dwells ``dwell_s`` seconds.
"""

from __future__ import annotations

import functools

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from ..instrument import Instrument
from .safety import close_shutter
from .settings import check, finite, whole


def ramp(start: float, stop: float, steps: int) -> list[float]:
    """``steps`` equal increments from ``start`` to ``stop`` (the start itself excluded)."""
    return [float(v) for v in np.linspace(start, stop, steps + 1)[1:]]


def tube_warmup(instrument: Instrument, *, kv: float | None = None, ma: float | None = None,
                steps: int = 5, dwell_s: float = 60.0):
    """Ramp the tube to (kv, ma) (defaults: the configured operating point) in ``steps``."""
    cfg = instrument.config.instrument.tube
    kv = cfg.kv if kv is None else kv
    ma = cfg.ma if ma is None else ma
    check(finite(kv) and 0 <= kv <= cfg.kv_max, f"kv={kv!r}: must be in [0, {cfg.kv_max}] kV")
    check(finite(ma) and 0 <= ma <= cfg.ma_max, f"ma={ma!r}: must be in [0, {cfg.ma_max}] mA")
    whole(steps, "steps", 1)
    check(finite(dwell_s) and dwell_s >= 0, f"dwell_s={dwell_s!r}: must be >= 0 s")
    tube = instrument.tube

    def body():
        yield from close_shutter(tube)
        kv_now, ma_now = float(tube.kv.get()), float(tube.ma.get())
        order = ([(tube.kv, kv_now, kv), (tube.ma, ma_now, ma)] if kv >= kv_now
                 else [(tube.ma, ma_now, ma), (tube.kv, kv_now, kv)])
        for signal, start, stop in order:
            for value in ramp(start, stop, steps):
                yield from bps.mv(signal, value)
                yield from bps.sleep(dwell_s)

    plan = bpp.run_wrapper(body(), md={"plan_name": "tube_warmup", "target": {"kv": kv, "ma": ma},
                                       "steps": steps, "dwell_s": dwell_s})
    return bpp.finalize_wrapper(plan, functools.partial(close_shutter, tube))
