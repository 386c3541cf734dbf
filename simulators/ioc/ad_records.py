"""Builders for areaDetector-style PVs: a setting with its ``_RBV`` readback, enums, strings.

Names, types and enum strings follow ADCore's templates (ADBase.template,
NDPluginBase.template, NDFile.template).
"""

from __future__ import annotations

import math

from caproto import ChannelType
from caproto.server import pvproperty

NO_YES = ("No", "Yes")
DISABLE_ENABLE = ("Disable", "Enable")
DATA_TYPES = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
              "Float32", "Float64")
DETECTOR_STATES = ("Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error",
                   "Waiting", "Initializing", "Disconnected", "Aborted")
PATH_LENGTH = 256


def _kwargs(value, enum_strings=None, text=False, **kwargs):
    if enum_strings is not None:
        kwargs.update(dtype=ChannelType.ENUM, enum_strings=enum_strings,
                      value=enum_strings[value] if isinstance(value, int) else value)
    elif text == "string":  # stringin/stringout records: DBR_STRING, 40 characters
        kwargs.update(dtype=ChannelType.STRING, value=value)
    elif text:  # waveform of CHAR read as a string (paths, file names, messages)
        kwargs.update(dtype=ChannelType.CHAR, max_length=PATH_LENGTH, value=value,
                      string_encoding="latin-1")
    else:
        kwargs.update(value=value)
    return kwargs


def readback(name, value, *, enum_strings=None, text=False, **kwargs):
    """A read-only PV (``*_RBV``)."""
    return pvproperty(name=name, read_only=True, **_kwargs(value, enum_strings, text, **kwargs))


def finite_non_negative(value) -> None:
    """Refuse (ValueError: a failed put, the old value kept) a negative, NaN or infinite value."""
    if not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{value!r} refused: must be finite and >= 0")


def setting(name, value, *, enum_strings=None, text=False, rbv_enum_strings=None, check=None,
            **kwargs):
    """A setting and its ``name + "_RBV"`` readback, which follows every accepted put.

    ``check(new_value)`` may raise to refuse a put (the client sees a failed put).
    Returns ``(setpoint, readback)`` pvproperties; assign both in the group's body.
    """

    async def put(group, instance, new_value):
        if check is not None:
            check(new_value)
        await group.pvdb[instance.pvname + "_RBV"].write(new_value)
        return new_value

    setpoint = pvproperty(name=name, put=put, **_kwargs(value, enum_strings, text, **kwargs))
    rbv = readback(name + "_RBV", value, enum_strings=rbv_enum_strings or enum_strings,
                   text=text, **kwargs)
    return setpoint, rbv
