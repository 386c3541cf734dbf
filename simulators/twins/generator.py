"""The X-ray generator's command rules, shared by the in-process tube twin and the IOC twin.

What a generator accepts: kV within 0..kv_max, mA within 0..ma_max; high voltage on only
with the interlock chain closed and no fault; the shutter open only with high voltage on,
the chain closed and no fault; a fault reset only with the chain closed.
"""

from __future__ import annotations


def refusal(command: str, value, *, interlock: bool, fault: bool, hv_on: bool,
            kv_max: float, ma_max: float) -> str | None:
    """Why the generator refuses ``command`` (kv, ma, hv_on, shutter, fault_reset) set to
    ``value``; None when it accepts it."""
    if command == "kv" and not 0 <= value <= kv_max:
        return f"{value} kV is outside 0..{kv_max} kV"
    if command == "ma" and not 0 <= value <= ma_max:
        return f"{value} mA is outside 0..{ma_max} mA"
    if command in ("hv_on", "shutter", "fault_reset") and value:
        if not interlock:
            return f"{command.replace('_', ' ')} refused, interlock open"
        if command != "fault_reset" and fault:
            return f"{command.replace('_', ' ')} refused, generator fault"
        if command == "shutter" and not hv_on:
            return "shutter refused, high voltage off"
    return None


def generator_state(*, interlock: bool, fault: bool, hv_on: bool) -> str:
    """The generator's state string: interlocked, fault, ready (HV on) or standby."""
    if not interlock:
        return "interlocked"
    if fault:
        return "fault"
    return "ready" if hv_on else "standby"
