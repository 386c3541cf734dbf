"""A motor record served by caproto: the G2 piezo and the sample-stage axes over CA.

Every field ophyd's ``EpicsMotor`` connects exists (caproto's ``MotorFields``); this adds
the record's behaviour the twins need: the readback moves at VELO (egu per recorded s,
``time_scale`` wall s per recorded s), the final BDST egu of a move at BVEL (backlash
takeout), DMOV pulses 1 -> 0 -> 1 on every move (also a null move), MOVN, a settle of DLY s,
STOP (VAL := RBV), and soft limits HLM/LLM published as
the control limits of VAL.  A put beyond them sets LVIO = 1 and restores VAL with no
DMOV pulse, as the motor record does (also when the backlash leg would leave them).

Bad field values are refused, not stored: a put of a NaN, infinite or out-of-range VAL,
VELO or BVEL (0 < v <= VMAX), VMAX, BDST (|BDST| below the travel HLM - LLM), DLY
(0..10 s), HLM or LLM (finite, HLM >= LLM) fails (the putter raises, caproto answers a
failed write) and the field keeps its old value, so the motion loop never sees one.
"""

from __future__ import annotations

import asyncio
import math

from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble

TICK_S = 0.01
"""Wall seconds between readback updates while moving."""
MAX_SETTLE_S = 10.0
"""Longest settle delay DLY the twin accepts (s)."""
VMAX_FACTOR = 10.0
"""VMAX is published as this many times the configured velocity."""


class RefusedPut(ValueError):
    """A field put the record refuses; caproto turns it into a failed write."""


def _finite(name: str, value) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise RefusedPut(f"{name}: {value!r} is not a finite number")
    return value


class MotorValue(PvpropertyDouble):
    """VAL: limits are the record's business (LVIO), not caproto's CannotExceedLimits."""

    async def verify_value(self, value):
        if self.putter is not None:
            return await self.putter(self, value)
        return value


class MotorAxis(PVGroup):
    """One motor record at the group's prefix (``P + "g2"`` serves ``P g2.VAL`` ...).

    ``limits`` (low, high) in ``egu``; ``velocity`` egu/s; ``settle_s`` the DLY field;
    ``retry_deadband`` the RDBD field; ``on_move`` is called with each new readback.
    """

    motor = pvproperty(value=0.0, name="", record="motor", dtype=MotorValue, precision=4)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configure()

    def configure(self, *, limits=(0.0, 0.0), egu="mm", velocity=1.0, settle_s=0.0,
                  retry_deadband=0.001, start=0.0, time_scale=1.0) -> None:
        """Set the record's fields before the server starts (SubGroups take no arguments)."""
        low, high = _finite("limits", limits[0]), _finite("limits", limits[1])
        if low > high:
            raise ValueError(f"limits: low {low} > high {high}")
        if not _finite("velocity", velocity) > 0:
            raise ValueError(f"velocity must be > 0, got {velocity}")
        if not 0 <= _finite("settle_s", settle_s) <= MAX_SETTLE_S:
            raise ValueError(f"settle_s must be in [0, {MAX_SETTLE_S:g}] s, got {settle_s}")
        if not _finite("time_scale", time_scale) >= 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.limits = (low, high)
        self.egu, self.velocity, self.settle_s = egu, float(velocity), float(settle_s)
        self.retry_deadband, self.start = float(retry_deadband), float(start)
        self.time_scale = float(time_scale)
        self._target = self.start
        self._wake: asyncio.Event | None = None
        self._stop_requested = False
        self._moving = False

    @property
    def position(self) -> float:
        """The readback (RBV) in egu."""
        return float(self.motor.field_inst.user_readback_value.value)

    @motor.startup
    async def motor(self, instance, async_lib):
        fields = instance.field_inst
        self._wake = asyncio.Event()
        low, high = self.limits
        await instance.write(self.start, verify_value=False)
        await instance.write_metadata(lower_ctrl_limit=low, upper_ctrl_limit=high,
                                      units=self.egu)
        await fields.user_low_limit.write(low, verify_value=False)
        await fields.user_high_limit.write(high, verify_value=False)
        await fields.engineering_units.write(self.egu)
        await fields.max_velocity.write(self.velocity * VMAX_FACTOR)
        await fields.velocity.write(self.velocity)
        await fields.bl_velocity.write(self.velocity / 10)
        await fields.readback_settle_time.write(self.settle_s)
        await fields.retry_deadband.write(self.retry_deadband)
        await fields.motor_step_size.write(1e-6)
        await self._publish_readback(fields, self.start)
        await fields.done_moving_to_value.write(1)
        await fields.motor_is_moving.write(0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._run_move(instance)

    @motor.putter
    async def motor(self, instance, value):
        fields = instance.field_inst
        value = _finite("VAL", value)
        low, high = fields.user_low_limit.value, fields.user_high_limit.value
        ends = [end for end, _ in self._legs(fields, self.position, value)]
        if low != high and not all(low <= end <= high for end in ends):
            await fields.limit_violation.write(1)
            return instance.value  # VAL restored, no DMOV pulse
        await fields.limit_violation.write(0)
        self._target = float(value)
        self._stop_requested = False
        await fields.done_moving_to_value.write(0)
        if self._wake is not None:
            self._wake.set()
        return value

    @motor.fields.stop.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        if value:
            group._stop_requested = True
            if not group._moving:
                await fields.parent.write(group.position, verify_value=False)
        return 0

    @motor.fields.user_high_limit.putter
    async def motor(fields, instance, value):
        value = _finite("HLM", value)
        if value < fields.user_low_limit.value:
            raise RefusedPut(f"HLM: {value} is below LLM {fields.user_low_limit.value}")
        await fields.parent.write_metadata(upper_ctrl_limit=value)
        fields.parent.group.limits = (fields.parent.group.limits[0], value)
        return value

    @motor.fields.user_low_limit.putter
    async def motor(fields, instance, value):
        value = _finite("LLM", value)
        if value > fields.user_high_limit.value:
            raise RefusedPut(f"LLM: {value} is above HLM {fields.user_high_limit.value}")
        await fields.parent.write_metadata(lower_ctrl_limit=value)
        fields.parent.group.limits = (value, fields.parent.group.limits[1])
        return value

    @motor.fields.velocity.putter
    async def motor(fields, instance, value):
        return _speed("VELO", value, fields)

    @motor.fields.bl_velocity.putter
    async def motor(fields, instance, value):
        return _speed("BVEL", value, fields)

    @motor.fields.max_velocity.putter
    async def motor(fields, instance, value):
        value = _finite("VMAX", value)
        if value <= 0:
            raise RefusedPut(f"VMAX: {value} must be > 0")
        return value

    @motor.fields.bl_distance.putter
    async def motor(fields, instance, value):
        value = _finite("BDST", value)
        low, high = fields.user_low_limit.value, fields.user_high_limit.value
        if low != high and abs(value) >= high - low:
            raise RefusedPut(f"BDST: |{value}| must be below the travel {high - low} (HLM - LLM)")
        return value

    @motor.fields.readback_settle_time.putter
    async def motor(fields, instance, value):
        value = _finite("DLY", value)
        if not 0 <= value <= MAX_SETTLE_S:
            raise RefusedPut(f"DLY: {value} s must be in [0, {MAX_SETTLE_S:g}] s")
        return value

    async def _publish_readback(self, fields, value: float) -> None:
        await fields.user_readback_value.write(value)
        await fields.dial_readback_value.write(value)
        await fields.raw_readback_value.write(round(value / 1e-6))

    def _legs(self, fields, rbv: float, target: float) -> list[tuple[float, float]]:
        """(end point, speed) of a move: with a backlash distance BDST the final approach
        is the last BDST egu in BDST's direction at BVEL, as the motor record does."""
        velocity = max(float(fields.velocity.value), 1e-12)
        bdst = float(fields.bl_distance.value)
        if bdst == 0 or target == rbv:
            return [(target, velocity)]
        slow = max(float(fields.bl_velocity.value), 1e-12)
        same_way = (target - rbv) * bdst > 0
        if same_way and abs(target - rbv) <= abs(bdst):
            return [(target, slow)]
        return [(target - bdst, velocity), (target, slow)]

    async def _run_move(self, instance) -> None:
        """Move the readback to the target at VELO (backlash: BDST at BVEL), settle DLY,
        then DMOV 1; a new target or STOP while moving takes effect at the next tick."""
        fields = instance.field_inst
        self._moving = True
        await fields.motor_is_moving.write(1)
        target = self._target
        legs = self._legs(fields, self.position, target)
        while legs:
            rbv = self.position
            if self._stop_requested:
                self._stop_requested = False
                self._target = rbv
                await instance.write(rbv, verify_value=False)
                break
            if self._target != target:  # retargeted while moving
                target = self._target
                legs = self._legs(fields, rbv, target)
            end, speed = legs[0]
            diff = end - rbv
            if diff == 0.0:
                legs.pop(0)
                continue
            await fields.direction_of_travel.write(1 if diff > 0 else 0)
            step = speed * TICK_S / self.time_scale if self.time_scale > 0 else abs(diff)
            rbv = end if abs(diff) <= step else rbv + step * (1 if diff > 0 else -1)
            await self._publish_readback(fields, rbv)
            if rbv != end:
                await asyncio.sleep(TICK_S)
        settle = float(fields.readback_settle_time.value) * self.time_scale
        if settle > 0:
            await asyncio.sleep(settle)
        self._moving = False
        if self._wake.is_set():  # a new target arrived while settling: keep moving
            return
        await fields.motor_is_moving.write(0)
        await fields.done_moving_to_value.write(1)


def _speed(name: str, value, fields) -> float:
    """VELO or BVEL: finite, > 0 and at most VMAX."""
    value = _finite(name, value)
    vmax = float(fields.max_velocity.value)
    if not 0 < value <= vmax:
        raise RefusedPut(f"{name}: {value} must be in (0, VMAX={vmax:g}]")
    return value
