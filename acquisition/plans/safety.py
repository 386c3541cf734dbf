"""Shutter stubs and the suspenders that keep a plan safe while the source misbehaves."""

from __future__ import annotations

import bluesky.plan_stubs as bps
from bluesky.suspenders import SuspendBoolHigh, SuspendBoolLow, SuspendWhenOutsideBand


def close_shutter(tube):
    """Close the tube shutter and wait for the readback."""
    yield from bps.abs_set(tube.shutter, 0, wait=True)


def open_shutter(tube):
    """Open the tube shutter; fails (and so ends the plan) if the tube refuses."""
    yield from bps.abs_set(tube.shutter, 1, wait=True)


def source_suspenders(tube, *, kv: float, ma: float, tolerance: float = 0.05, sleep_s: float = 1.0):
    """Suspenders for a RunEngine: the interlock chain opening or a fault (suspend; the
    shutter is closed on suspension), and tube voltage or current leaving +-``tolerance``
    of the set values.  A resumed plan rewinds to its last checkpoint, i.e. it repeats the
    whole phase-stepping set that was interrupted.  Recovery (fault reset, HV on) is left
    to the operator or the IOC (EPICS-NOTES: no recovery in post-plans)."""

    def shutter_closed():
        yield from close_shutter(tube)

    return [
        SuspendBoolLow(tube.interlock, sleep=sleep_s, pre_plan=shutter_closed,
                       tripped_message="X-ray interlock open"),
        SuspendBoolHigh(tube.fault, sleep=sleep_s, pre_plan=shutter_closed,
                        tripped_message="generator fault"),
        SuspendWhenOutsideBand(tube.kv, kv * (1 - tolerance), kv * (1 + tolerance), sleep=sleep_s,
                               pre_plan=shutter_closed, tripped_message="tube voltage out of band"),
        SuspendWhenOutsideBand(tube.ma, ma * (1 - tolerance), ma * (1 + tolerance), sleep=sleep_s,
                               pre_plan=shutter_closed, tripped_message="tube current out of band"),
    ]
