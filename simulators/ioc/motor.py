"""A motor record served by caproto: the G2 piezo and the sample-stage axes over CA.

Every field ophyd's ``EpicsMotor`` and pyepics' ``epics.Motor`` use exists (caproto's
``MotorFields``) and behaves as in the EPICS motor record (motorRecord.cc of
epics-modules/motor), so stock clients (pyepics, ophyd, ophyd-async, caput, CSS/Phoebus,
pydm) work unchanged:

- **Coordinates.** user = dial x (DIR Neg ? -1 : 1) + OFF; raw = dial / MRES.  VAL/DVAL/RVAL
  are the setpoints, RBV/DRBV/RRBV the readbacks, DIFF = DVAL - DRBV.  The user limits
  HLM/LLM derive from the dial limits DHLM/DLLM (a put to either side updates both) and are
  published as VAL's control limits (``EpicsMotor.limits``).  A put of OFF or DIR moves
  nothing: it changes VAL, RBV and the user limits (DIR with FOFF Variable keeps VAL, OFF
  follows).
- **Moves** (a put to VAL, DVAL, RVAL, RLV, TWF/TWR by TWV) run at VELO (egu per recorded
  s, ``time_scale`` wall s per recorded s), the last BDST egu at BVEL from BDST's side
  (backlash takeout), then settle DLY.  DMOV pulses 1 -> 0 -> 1 on every move (a null move
  too), MOVN is 1 while the axis moves, TDIR gives the direction.  RBV (DRBV, RRBV, DIFF)
  posts every 0.1 s of wall time while moving (the record's 10 Hz moving poll) and at
  the end.  A new target while moving retargets the move.
- **Put completion.** A put with callback (``caput -c``, pyepics ``wait=True``, ophyd
  ``put_complete``) to a field that starts motion completes when the motion ends (DMOV 1),
  also when a STOP or SPMG Stop ends it; a retarget completes the earlier callbacks with
  the retargeted move, as the record does.  Puts without callback (``EpicsMotor``) return
  at once and DMOV tells the end.
- **Soft limits.** A target beyond the dial limits (the backlash leg included; moving
  back towards the range is allowed) sets LVIO = 1, restores VAL/DVAL/RVAL with no DMOV
  pulse and raises the record's alarm (STAT SOFT, SEVR = HLSV, MAJOR by default); the next
  legal move clears both.  DHLM = DLLM = 0 means no soft limits.  LVIO is 0 at start-up.
- **Limit switches.** Hardware switches sit ``switch_margin`` of the travel beyond the
  configured limits: motion into one stops there, HLS/LLS = 1 and the alarm is HIGH/LOW
  with HLSV severity; MSTA PLUS_LS/MINUS_LS.
- **Calibration.** SET = Set: a put to VAL changes OFF (FOFF Variable) or redefines the dial
  position (FOFF Frozen); a put to DVAL/RVAL redefines the dial position.  Nothing moves;
  DMOV pulses.  ``EpicsMotor.set_current_position`` therefore changes OFF only.
- **STOP / SPMG.** STOP (or SPMG Stop) stops the motion, VAL := RBV, DMOV 1.  SPMG Pause
  stops and keeps the target (DMOV stays 0); Go resumes; a target put while stopped or
  paused waits for Go.  SPMG Move makes one move, then sets Pause.
- **Homing.** HOMF/HOMR move (ignoring soft limits) at HVEL to the home switch (dial 0, or
  ``home``), then VAL := RBV, HOMF/HOMR := 0, MSTA HOMED and ATHM 1 (at the home switch).
- **Jog.** JOGF/JOGR = 1 moves at JVEL towards the soft limit (or switch) until put back to
  0 (then VAL := RBV) or until the limit (LVIO 1).
- **MSTA** carries the controller bits: DIRECTION, DONE, PLUS_LS, HOME, PROBLEM, MOVING,
  MINUS_LS, HOMED.  The record's STAT/SEVR are shared by every field (ophyd reads the
  alarm of RBV after a move).  VAL, RBV and the other position/speed fields carry PREC and
  EGU (speeds egu/s, times s).

Bad field values are refused, not stored: a put of a NaN, infinite or out-of-range VAL,
DVAL, RLV, TWV, VELO/BVEL/JVEL/HVEL (0 < v <= VMAX), VMAX, BDST (|BDST| below the travel
HLM - LLM), DLY (0..10 s), HLM/LLM/DHLM/DLLM (finite, high >= low), OFF or PREC fails (the
putter raises, caproto answers a failed write) and the field keeps its old value.

``position`` (what the physics engine sees) is the physical axis position: it follows
motion, not a calibration (OFF, DIR or a redefined dial position).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from caproto import AlarmSeverity, AlarmStatus, SkipWrite, SubscriptionType
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble, PvpropertyReadOnlyData

UPDATE_PERIOD_S = 0.1
"""Wall seconds between readback posts while moving (a motor record's moving poll rate,
10 Hz); never faster whatever the time scale."""
MAX_SETTLE_S = 10.0
"""Longest settle delay DLY the twin accepts (s)."""
VMAX_FACTOR = 10.0
"""VMAX is published as this many times the configured velocity."""
CALLBACK_FLUSH_S = 0.02
"""Wall seconds a put-callback waits after DMOV 1 so the monitors it posted (DMOV, RBV) reach
the client first (caproto batches subscription updates for up to 10 ms)."""
MRES = 1e-6
"""Motor resolution (egu per raw step) the record starts with."""
RAW_LIMIT = 2**31 - 1

# MSTA bits (motor.h, msta_field)
MSTA_DIRECTION = 1 << 0
MSTA_DONE = 1 << 1
MSTA_PLUS_LS = 1 << 2
MSTA_HOME = 1 << 3
MSTA_PROBLEM = 1 << 9
MSTA_MOVING = 1 << 10
MSTA_MINUS_LS = 1 << 13
MSTA_HOMED = 1 << 14

_EGU_FIELDS = ("user_readback_value", "dial_readback_value", "dial_desired_value",
               "user_offset", "user_high_limit", "user_low_limit", "dial_high_limit",
               "dial_low_limit", "retry_deadband", "bl_distance", "tweak_step_size",
               "relative_value", "difference_dval_drbv", "motor_step_size",
               "encoder_step_size", "readback_step_size", "setpoint_deadband",
               "last_user_des_val", "last_dial_des_val", "last_rel_value")
_SPEED_FIELDS = ("velocity", "base_velocity", "max_velocity", "bl_velocity", "jog_velocity",
                 "home_velocity")
_TIME_FIELDS = ("seconds_to_velocity", "bl_seconds_to_velocity", "readback_settle_time")


class RefusedPut(ValueError):
    """A field put the record refuses; caproto turns it into a failed write."""


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise RefusedPut(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(value):
        raise RefusedPut(f"{name}: {value!r} is not a finite number")
    return value


def _raw(value: float, mres: float) -> int:
    return int(max(-RAW_LIMIT, min(RAW_LIMIT, round(value / mres))))


class MotorValue(PvpropertyDouble):
    """VAL: limits are the record's business (LVIO), not caproto's CannotExceedLimits."""

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        """A client's put: a non-finite VAL fails before it reaches ``write`` (which would
        leave a WRITE alarm on the record)."""
        try:
            value = float(data[0])
        except (TypeError, ValueError, IndexError):
            value = 0.0
        if not math.isfinite(value):
            raise RefusedPut(f"VAL: {value!r} is not a finite number")
        return await super().write_from_dbr(data, data_type, metadata, flags=flags)

    async def verify_value(self, value):
        if self.putter is not None:
            return await self.putter(self, value)
        return value


@dataclass(eq=False)
class _Request:
    """What the axis was asked to do: ``move`` to a dial target, ``home`` or ``jog``."""

    kind: str
    target: float  # dial
    field: str | None = None  # the button (HOMF, JOGR, ...) reset when it ends


class MotorAxis(PVGroup):
    """One motor record at the group's prefix (``P + "g2"`` serves ``P g2.VAL`` ...).

    ``limits`` (low, high) in ``egu``; ``velocity`` egu/s; ``settle_s`` the DLY field;
    ``retry_deadband`` the RDBD field; ``start`` the position at start-up; ``home`` the
    dial position of the home switch; ``switch_margin`` where the limit switches sit,
    beyond the limits, as a fraction of the travel; ``precision`` the PREC field.
    """

    motor = pvproperty(value=0.0, name="", record="motor", dtype=MotorValue, precision=4)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configure()

    def configure(self, *, limits=(0.0, 0.0), egu="mm", velocity=1.0, settle_s=0.0,
                  retry_deadband=0.001, start=0.0, time_scale=1.0, home=0.0,
                  switch_margin=0.02, precision=4) -> None:
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
        if not _finite("switch_margin", switch_margin) > 0:
            raise ValueError(f"switch_margin must be > 0, got {switch_margin}")
        if int(precision) != precision or not 0 <= precision <= 15:
            raise ValueError(f"precision must be an integer in 0..15, got {precision}")
        self.limits = (low, high)
        self.egu, self.velocity, self.settle_s = egu, float(velocity), float(settle_s)
        self.retry_deadband, self.start = float(retry_deadband), _finite("start", start)
        self.time_scale = float(time_scale)
        self.home = _finite("home", home)
        self.precision = int(precision)
        margin = switch_margin * (high - low) if high > low else math.inf
        self.switches = (low - margin, high + margin)
        """Physical positions of the minus and plus limit switches."""
        self._dial = self.start  # the controller's position counter (DRBV)
        self._shift = 0.0  # dial - physical position, changed by a redefinition (Set mode)
        self._request: _Request | None = None
        self._stop_flag = False
        self._busy = False
        self._spmg = "Go"
        self._lvio_alarm = False
        self._homed = False
        self.problem = False
        """The controller's PROBLEM bit (MSTA, alarm STATE/MAJOR); for tests."""
        self._moving = False
        self._last_dir = 1
        self._dmov = 1
        self._msta = None
        self._wake: asyncio.Event | None = None
        self._interrupt: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self._f = None

    # --- state the physics and the tests see -------------------------------------------

    @property
    def position(self) -> float:
        """The physical axis position in egu (the readback while uncalibrated)."""
        return self._dial - self._shift

    @property
    def user_position(self) -> float:
        """RBV in egu."""
        return float(self.motor.field_inst.user_readback_value.value)

    # --- start-up and the motion loop ------------------------------------------------

    @motor.startup
    async def motor(self, instance, async_lib):
        f = self._f = instance.field_inst
        self._wake, self._interrupt, self._done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._done.set()
        for field in instance.fields.values():  # one record, one alarm (STAT/SEVR)
            if isinstance(field, PvpropertyReadOnlyData):  # RBV, DMOV, MSTA, SEVR ...
                field.alarm = instance.alarm
        low, high = self.limits
        await f.user_direction.write("Pos", verify_value=False)
        await f.set_use_switch.write("Use", verify_value=False)
        await f.offset_freeze_switch.write("Variable", verify_value=False)
        await f.stop_pause_move_go.write("Go", verify_value=False)
        await f.last_spmg.write("Go", verify_value=False)
        await f.hw_limit_violation_svr.write("MAJOR", verify_value=False)
        await f.user_offset.write(0.0, verify_value=False)
        await f.motor_step_size.write(MRES, verify_value=False)
        await f.dial_high_limit.write(high, verify_value=False)
        await f.dial_low_limit.write(low, verify_value=False)
        await f.engineering_units.write(self.egu)
        await f.max_velocity.write(self.velocity * VMAX_FACTOR, verify_value=False)
        for name in ("velocity", "jog_velocity", "home_velocity"):
            await getattr(f, name).write(self.velocity, verify_value=False)
        await f.bl_velocity.write(self.velocity / 10, verify_value=False)
        await f.tweak_step_size.write(1.0, verify_value=False)
        await f.readback_settle_time.write(self.settle_s, verify_value=False)
        await f.retry_deadband.write(self.retry_deadband, verify_value=False)
        await self._publish_precision(self.precision)
        await self._publish_setpoint(self._dial)
        await self._publish_limits()
        await self._publish_readback()
        await f.limit_violation.write(0)
        await f.motor_is_moving.write(0)
        await f.done_moving_to_value.write(1)
        await self._publish_status()
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                await self._execute()
            finally:
                self._busy = False

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._interrupt.set()

    async def _execute(self) -> None:
        """Carry out the request until it ends, is stopped, paused or replaced."""
        while True:
            self._interrupt.clear()
            request = self._request
            if self._stop_flag:
                self._stop_flag = False
                self._request = None
                await self._finish(None, "stopped")
                return
            if request is None:
                if not self._dmov:  # a jog released, a request withdrawn
                    await self._finish(None, "stopped")
                return
            if self._spmg in ("Stop", "Pause"):
                await self._set_moving(False)  # held; Go resumes
                return
            outcome = await self._travel(request)
            if outcome == "interrupted":
                continue
            await self._set_moving(False)
            if await self._settle(request):
                continue
            await self._finish(request, outcome)
            return

    def _plan(self, request: _Request) -> list[tuple[float, float]]:
        f = self._f
        if request.kind == "home":
            return [(request.target, self._speed(f.home_velocity))]
        if request.kind == "jog":
            return [(request.target, self._speed(f.jog_velocity))]
        return self._legs(self._dial, request.target)

    @staticmethod
    def _speed(field) -> float:
        return max(float(field.value), 1e-12)

    def _legs(self, start: float, target: float) -> list[tuple[float, float]]:
        """(dial end point, speed) of a move: with a backlash distance BDST the final
        approach is the last BDST egu in BDST's direction at BVEL, as the motor record does."""
        f = self._f
        velocity = self._speed(f.velocity)
        bdst = float(f.bl_distance.value)
        if bdst == 0 or target == start:
            return [(target, velocity)]
        slow = self._speed(f.bl_velocity)
        same_way = (target - start) * bdst > 0
        if same_way and abs(target - start) <= abs(bdst):
            return [(target, slow)]
        return [(target - bdst, velocity), (target, slow)]

    async def _travel(self, request: _Request) -> str:
        """Move along the request's legs; "arrived", "switch" (a limit switch stopped the
        axis), "limit" (a jog reached the soft limit) or "interrupted"."""
        loop = asyncio.get_running_loop()
        for end, speed in self._plan(request):
            begin = self._dial
            if end == begin:
                continue
            direction = 1 if end > begin else -1
            switch = self.switches[1 if direction > 0 else 0] + self._shift
            stop_at, hits_switch = end, (end - switch) * direction >= 0
            if hits_switch:
                stop_at = switch
            self._last_dir = 1 if direction > 0 else 0
            await self._f.direction_of_travel.write(self._last_dir)
            if (stop_at - begin) * direction <= 0:  # already on the switch
                await self._publish_readback()
                return "switch"
            await self._set_moving(True)
            duration = abs(stop_at - begin) / speed * self.time_scale
            started = loop.time()
            while True:  # post every UPDATE_PERIOD_S, at the end and when interrupted
                remaining = duration - (loop.time() - started)
                if remaining > 0 and not self._interrupted(request):
                    await self._sleep(min(UPDATE_PERIOD_S, remaining))
                elapsed = loop.time() - started
                if elapsed >= duration:
                    self._dial = stop_at
                else:
                    self._dial = begin + (stop_at - begin) * elapsed / duration
                await self._publish_readback()
                if self._dial == stop_at:
                    break
                if self._interrupted(request):
                    return "interrupted"
            if hits_switch:
                return "switch"
        return "limit" if request.kind == "jog" else "arrived"

    def _interrupted(self, request: _Request) -> bool:
        """A STOP, SPMG Stop/Pause, or another request (a retarget, a jog released)."""
        return (self._stop_flag or self._request is not request
                or self._spmg in ("Stop", "Pause"))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, woken early by a new request, STOP or SPMG."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._interrupt.wait(), seconds)
            except TimeoutError:
                pass
        self._interrupt.clear()

    async def _settle(self, request: _Request) -> bool:
        """Wait DLY; True if a new request or a STOP arrived meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self._f.readback_settle_time.value) * self.time_scale
        while True:
            if self._stop_flag or self._request is not request:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self._sleep(remaining)

    async def _finish(self, request: _Request | None, outcome: str) -> None:
        """The end of a motion: drive fields, buttons, LVIO, alarm, MSTA, then DMOV 1."""
        f = self._f
        if request is None or request.kind in ("home", "jog"):
            await self._publish_setpoint(self._dial)  # VAL := RBV
        if request is not None and request.kind == "home":
            self._homed = True
            await self._publish_status()
        if outcome == "limit":
            await f.limit_violation.write(1)
            self._lvio_alarm = True
        for button in ("home_forward", "home_reverse", "jog_motor_forward", "jog_motor_reverse"):
            if getattr(f, button).value:
                await getattr(f, button).write(0, verify_value=False)
        if self._request is request:
            self._request = None
        if self._request is not None:  # a new request arrived meanwhile
            self._kick()
            return
        await self._set_moving(False)
        await self._update_alarm()
        if self._spmg == "Move" and outcome == "arrived":
            await self._set_spmg("Pause")
        await self._set_dmov(1)

    # --- field helpers -------------------------------------------------------------

    def _sign(self) -> float:
        return -1.0 if self._f.user_direction.value in ("Neg", 1) else 1.0

    def _offset(self) -> float:
        return float(self._f.user_offset.value)

    def _mres(self) -> float:
        return float(self._f.motor_step_size.value) or MRES

    def _user(self, dial: float) -> float:
        return self._sign() * dial + self._offset()

    def _to_dial(self, user: float) -> float:
        return (user - self._offset()) * self._sign()

    def _user_limits(self) -> tuple[float, float]:
        f, off = self._f, self._offset()
        dhlm, dllm = float(f.dial_high_limit.value), float(f.dial_low_limit.value)
        if self._sign() > 0:
            return dllm + off, dhlm + off
        return -dhlm + off, -dllm + off

    def _no_limits(self) -> bool:
        f = self._f
        return float(f.dial_high_limit.value) == 0 == float(f.dial_low_limit.value)

    async def _publish_limits(self) -> None:
        """VAL's control limits first, then HLM/LLM (ophyd re-reads VAL's on their change)."""
        f = self._f
        low, high = self._user_limits()
        self.limits = (low, high)
        ctrl = (0.0, 0.0) if self._no_limits() else (low, high)
        await f.parent.write_metadata(lower_ctrl_limit=ctrl[0], upper_ctrl_limit=ctrl[1],
                                      lower_disp_limit=ctrl[0], upper_disp_limit=ctrl[1])
        await f.user_high_limit.write(high, verify_value=False)
        await f.user_low_limit.write(low, verify_value=False)

    async def _publish_precision(self, precision: int) -> None:
        f = self._f
        await f.parent.write_metadata(precision=precision, units=self.egu)
        for name in _EGU_FIELDS:
            await getattr(f, name).write_metadata(precision=precision, units=self.egu)
        for name in _SPEED_FIELDS:
            await getattr(f, name).write_metadata(precision=precision, units=f"{self.egu}/s")
        for name in _TIME_FIELDS:
            await getattr(f, name).write_metadata(precision=3, units="s")

    async def _publish_setpoint(self, dval: float, val: float | None = None) -> None:
        """DVAL, VAL (``val`` or the user value of ``dval``), RVAL; then the readbacks."""
        f = self._f
        await f.parent.write(self._user(dval) if val is None else val, verify_value=False)
        await f.dial_desired_value.write(dval, verify_value=False)
        await f.raw_desired_value.write(_raw(dval, self._mres()), verify_value=False)
        await self._publish_readback()

    async def _publish_readback(self) -> None:
        """DRBV, RBV, RRBV, DIFF/RDIF when they change (as the record posts them); the
        switches, ATHM and MSTA when they change."""
        f = self._f
        diff = float(f.dial_desired_value.value) - self._dial
        for field, value in ((f.dial_readback_value, self._dial),
                             (f.user_readback_value, self._user(self._dial)),
                             (f.raw_readback_value, _raw(self._dial, self._mres())),
                             (f.difference_dval_drbv, diff),
                             (f.difference_rval_rrbv, _raw(diff, self._mres()))):
            if field.value != value:
                await field.write(value)
        await self._publish_status()

    def _switch(self) -> int:
        """+1 on the plus limit switch, -1 on the minus one, 0 between (physical)."""
        position = self.position
        if position >= self.switches[1]:
            return 1
        if position <= self.switches[0]:
            return -1
        return 0

    def _at_home(self) -> bool:
        return abs(self.position - self.home) <= self._mres()

    async def _publish_status(self) -> None:
        f = self._f
        switch = self._switch()
        plus, minus = int(switch > 0), int(switch < 0)
        high, low = (plus, minus) if self._sign() > 0 else (minus, plus)
        for field, value in ((f.user_high_limit_switch, high), (f.user_low_limit_switch, low),
                             (f.raw_high_limit_switch, plus), (f.raw_low_limit_switch, minus),
                             (f.at_home, int(self._at_home()))):
            if field.value != value:
                await field.write(value)
        msta = ((MSTA_DIRECTION if self._last_dir else 0)
                | (MSTA_MOVING if self._moving else MSTA_DONE)
                | (MSTA_PLUS_LS if plus else 0) | (MSTA_MINUS_LS if minus else 0)
                | (MSTA_HOME if self._at_home() else 0) | (MSTA_HOMED if self._homed else 0)
                | (MSTA_PROBLEM if self.problem else 0))
        if msta != self._msta:
            self._msta = msta
            await f.motor_status.write(msta)

    async def _update_alarm(self) -> None:
        """The record's alarm: a limit switch (HIGH/LOW), a soft-limit violation (SOFT),
        both with HLSV's severity; a controller problem (STATE, MAJOR); else none."""
        f = self._f
        hlsv = f.hw_limit_violation_svr.value
        if isinstance(hlsv, str):
            hlsv = f.hw_limit_violation_svr.enum_strings.index(hlsv)
        hlsv = AlarmSeverity(int(hlsv))
        status, severity = AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM
        high, low = int(f.user_high_limit_switch.value), int(f.user_low_limit_switch.value)
        if hlsv and (high or low):
            status, severity = (AlarmStatus.HIGH if high else AlarmStatus.LOW), hlsv
        elif hlsv and self._lvio_alarm:
            status, severity = AlarmStatus.SOFT, hlsv
        elif self.problem:
            status, severity = AlarmStatus.STATE, AlarmSeverity.MAJOR_ALARM
        alarm = f.parent.alarm
        if (alarm.status, alarm.severity) != (status, severity):
            # Every field reads the record's alarm; the change is posted (DBE_ALARM) on
            # VAL, the readbacks and STAT/SEVR, not on DMOV (no spurious DMOV event).
            await alarm.write(status=status, severity=severity, publish=False)
            for channel in (f.parent, f.user_readback_value, f.dial_readback_value,
                            f.raw_readback_value, f):
                await channel.publish(SubscriptionType.DBE_ALARM)

    async def _set_moving(self, moving: bool) -> None:
        if self._moving != moving:
            self._moving = moving
            await self._f.motor_is_moving.write(int(moving))
            await self._publish_status()

    async def _set_dmov(self, value: int) -> None:
        if self._dmov != value:
            self._dmov = value
            await self._f.done_moving_to_value.write(value)
        if value:
            self._done.set()
        else:
            self._done.clear()

    async def _set_spmg(self, value: str) -> None:
        self._spmg = value
        await self._f.stop_pause_move_go.write(value, verify_value=False)
        await self._f.last_spmg.write(value, verify_value=False)

    # --- commands ------------------------------------------------------------------

    def _violates(self, dval: float) -> bool:
        """The record's soft-limit test of a new dial target (do_work)."""
        f = self._f
        if self._no_limits():
            return False
        dhlm, dllm = float(f.dial_high_limit.value), float(f.dial_low_limit.value)
        if dllm > dhlm:
            return True
        last = float(f.dial_desired_value.value)
        if (dval > dhlm and dval < last) or (dval < dllm and dval > last):
            return False  # back towards the range
        ends = [end for end, _ in self._legs(self._dial, dval)]
        return not all(dllm <= end <= dhlm for end in ends)

    async def _refuse_target(self) -> None:
        """LVIO: restore the drive fields (posted, no DMOV pulse) and raise the alarm."""
        f = self._f
        await f.limit_violation.write(1)
        self._lvio_alarm = True
        await self._publish_setpoint(float(f.dial_desired_value.value),
                                     val=float(f.parent.value))
        await self._update_alarm()

    async def _accept(self, request: _Request, *, dval: float | None = None,
                      val: float | None = None) -> None:
        """Start ``request``: clear LVIO and its alarm, post the new drive fields, DMOV 0."""
        f = self._f
        if int(f.limit_violation.value):
            await f.limit_violation.write(0)
        self._lvio_alarm = False
        if dval is not None:
            await self._publish_setpoint(dval, val=val)
        self._stop_flag = False
        self._request = request
        await self._set_dmov(0)
        await self._update_alarm()
        self._kick()

    async def _wait_done(self) -> None:
        """Until DMOV is 1 again (the put-callback of the field that started the motion)."""
        if not self._dmov:
            await self._done.wait()
            await asyncio.sleep(CALLBACK_FLUSH_S)

    async def _move_user(self, user: float) -> bool:
        """A new user target (VAL, RLV, TWF/TWR): calibrate in Set mode, else move."""
        if self._f.set_use_switch.value in ("Set", 1):
            await self._calibrate(user)
            return False
        return await self._move_dial(self._to_dial(user), val=user)

    async def _move_dial(self, dval: float, *, val: float | None = None) -> bool:
        if self._violates(dval):
            await self._refuse_target()
            return False
        await self._accept(_Request("move", dval), dval=dval, val=val)
        return True

    async def _calibrate(self, user: float) -> None:
        """SET = Set and a new VAL: change OFF (FOFF Variable) or redefine the dial
        position (FOFF Frozen); nothing moves; DMOV pulses."""
        f = self._f
        await self._set_dmov(0)
        if f.offset_freeze_switch.value in ("Frozen", 1):
            await self._load_position(self._to_dial(user), pulse=False)
        else:
            dval = float(f.dial_desired_value.value)
            await f.user_offset.write(user - self._sign() * dval, verify_value=False)
            await f.parent.write(user, verify_value=False)
            await self._publish_limits()
            await self._publish_readback()
        await self._set_dmov(1)

    async def _load_position(self, dval: float, *, pulse: bool = True) -> None:
        """Redefine the controller's position as ``dval`` (load_pos): the axis stays where
        it is; FOFF Frozen keeps OFF (VAL follows), Variable keeps VAL (OFF follows)."""
        f = self._f
        if pulse:
            await self._set_dmov(0)
        self._shift += dval - self._dial
        self._dial = dval
        if f.offset_freeze_switch.value in ("Frozen", 1):
            await self._publish_setpoint(dval)
        else:
            val = float(f.parent.value)
            await f.user_offset.write(val - self._sign() * dval, verify_value=False)
            await self._publish_setpoint(dval, val=val)
            await self._publish_limits()
        await self._publish_readback()
        if pulse:
            await self._set_dmov(1)

    async def _stop(self) -> None:
        """STOP: end the motion; VAL := RBV; DMOV 1 (pending put-callbacks complete)."""
        if self._busy:
            self._stop_flag = True
            self._interrupt.set()
        else:
            self._request = None
            await self._finish(None, "stopped")

    def _in_set_mode(self) -> bool:
        return self._f.set_use_switch.value in ("Set", 1)

    # --- putters -------------------------------------------------------------------

    @motor.putter
    async def motor(self, instance, value):
        value = _finite("VAL", value)
        if await self._move_user(value):
            await self._wait_done()
        raise SkipWrite  # the fields are posted already

    @motor.fields.dial_desired_value.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        await group._dial_put(_finite("DVAL", value))
        raise SkipWrite

    @motor.fields.raw_desired_value.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        await group._dial_put(int(value) * group._mres())
        raise SkipWrite

    async def _dial_put(self, dval: float) -> None:
        if self._in_set_mode():
            await self._load_position(dval)
        elif await self._move_dial(dval):
            await self._wait_done()

    @motor.fields.relative_value.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        value = _finite("RLV", value)
        if await group._move_user(float(fields.parent.value) + value):
            await group._wait_done()
        raise SkipWrite  # RLV reads 0 again, as the record resets it

    @motor.fields.tweak_motor_forward.putter
    async def motor(fields, instance, value):
        await fields.parent.group._tweak(value, +1)
        raise SkipWrite

    @motor.fields.tweak_motor_reverse.putter
    async def motor(fields, instance, value):
        await fields.parent.group._tweak(value, -1)
        raise SkipWrite

    async def _tweak(self, value, sign: int) -> None:
        if value:
            step = float(self._f.tweak_step_size.value)
            if await self._move_user(float(self._f.parent.value) + sign * step):
                await self._wait_done()

    @motor.fields.tweak_step_size.putter
    async def motor(fields, instance, value):
        return abs(_finite("TWV", value))

    @motor.fields.home_forward.putter
    async def motor(fields, instance, value):
        await fields.parent.group._home(instance, value, "home_forward")
        raise SkipWrite

    @motor.fields.home_reverse.putter
    async def motor(fields, instance, value):
        await fields.parent.group._home(instance, value, "home_reverse")
        raise SkipWrite

    async def _home(self, instance, value, field: str) -> None:
        if not value or (self._request is not None and self._request.kind == "home"):
            return
        await instance.write(1, verify_value=False)  # HOMF reads 1 until home is found
        await self._accept(_Request("home", self.home + self._shift, field))
        await self._wait_done()

    @motor.fields.jog_motor_forward.putter
    async def motor(fields, instance, value):
        await fields.parent.group._jog(instance, value, +1, "jog_motor_forward")
        raise SkipWrite

    @motor.fields.jog_motor_reverse.putter
    async def motor(fields, instance, value):
        await fields.parent.group._jog(instance, value, -1, "jog_motor_reverse")
        raise SkipWrite

    async def _jog(self, instance, value, user_sign: int, field: str) -> None:
        """JOGF/JOGR 1: move at JVEL towards the soft limit (or the switch) until 0."""
        request = self._request
        if not value:
            await instance.write(0, verify_value=False)
            if request is not None and request.field == field:
                self._request = None
                self._kick()
            return
        if request is not None and request.kind == "jog":
            return
        f = self._f
        jvel = float(f.jog_velocity.value)
        low, high = self._user_limits()
        val = float(f.parent.value)
        if not self._no_limits():
            if (user_sign > 0 and val > high - jvel) or (user_sign < 0 and val < low + jvel):
                await self._refuse_target()
                return
            end = self._to_dial(high if user_sign > 0 else low)
        else:
            dial_sign = user_sign * self._sign()
            end = self.switches[1 if dial_sign > 0 else 0] + self._shift
        await instance.write(1, verify_value=False)  # JOGF reads 1 while jogging
        await self._accept(_Request("jog", end, field))

    @motor.fields.stop.putter
    async def motor(fields, instance, value):
        if value:
            await fields.parent.group._stop()
        return 0

    @motor.fields.stop_pause_move_go.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        if value not in ("Stop", "Pause", "Move", "Go"):
            raise RefusedPut(f"SPMG: {value!r} is not Stop, Pause, Move or Go")
        await group._set_spmg(value)
        if value == "Stop":
            await group._stop()
        elif value in ("Move", "Go") and group._request is not None:
            group._kick()
        elif value == "Pause":
            group._interrupt.set()
        raise SkipWrite

    @motor.fields.user_offset.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        value = _finite("OFF", value)
        await instance.write(value, verify_value=False)
        await group._recalculate_user(keep_val=False)
        raise SkipWrite

    @motor.fields.user_direction.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        if value not in ("Pos", "Neg"):
            raise RefusedPut(f"DIR: {value!r} is not Pos or Neg")
        await instance.write(value, verify_value=False)
        frozen = fields.offset_freeze_switch.value in ("Frozen", 1)
        await group._recalculate_user(keep_val=not frozen)
        raise SkipWrite

    async def _recalculate_user(self, *, keep_val: bool) -> None:
        """After OFF or DIR: VAL, RBV and the user limits from the dial values (or, with
        ``keep_val``, OFF from VAL and DVAL)."""
        f = self._f
        dval = float(f.dial_desired_value.value)
        if keep_val:
            await f.user_offset.write(float(f.parent.value) - self._sign() * dval,
                                      verify_value=False)
        await self._publish_setpoint(dval)
        await self._publish_readback()
        await self._publish_limits()

    @motor.fields.user_high_limit.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        value = _finite("HLM", value)
        if value < fields.user_low_limit.value:
            raise RefusedPut(f"HLM: {value} is below LLM {fields.user_low_limit.value}")
        dial = group._to_dial(value)
        target = fields.dial_high_limit if group._sign() > 0 else fields.dial_low_limit
        await target.write(dial, verify_value=False)
        await group._publish_limits()
        raise SkipWrite

    @motor.fields.user_low_limit.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        value = _finite("LLM", value)
        if value > fields.user_high_limit.value:
            raise RefusedPut(f"LLM: {value} is above HLM {fields.user_high_limit.value}")
        dial = group._to_dial(value)
        target = fields.dial_low_limit if group._sign() > 0 else fields.dial_high_limit
        await target.write(dial, verify_value=False)
        await group._publish_limits()
        raise SkipWrite

    @motor.fields.dial_high_limit.putter
    async def motor(fields, instance, value):
        value = _finite("DHLM", value)
        if value < fields.dial_low_limit.value:
            raise RefusedPut(f"DHLM: {value} is below DLLM {fields.dial_low_limit.value}")
        await instance.write(value, verify_value=False)
        await fields.parent.group._publish_limits()
        raise SkipWrite

    @motor.fields.dial_low_limit.putter
    async def motor(fields, instance, value):
        value = _finite("DLLM", value)
        if value > fields.dial_high_limit.value:
            raise RefusedPut(f"DLLM: {value} is above DHLM {fields.dial_high_limit.value}")
        await instance.write(value, verify_value=False)
        await fields.parent.group._publish_limits()
        raise SkipWrite

    @motor.fields.display_precision.putter
    async def motor(fields, instance, value):
        if int(value) != value or not 0 <= value <= 15:
            raise RefusedPut(f"PREC: {value!r} must be an integer in 0..15")
        group = fields.parent.group
        group.precision = int(value)
        await group._publish_precision(int(value))
        return int(value)

    @motor.fields.velocity.putter
    async def motor(fields, instance, value):
        return _speed("VELO", value, fields)

    @motor.fields.bl_velocity.putter
    async def motor(fields, instance, value):
        return _speed("BVEL", value, fields)

    @motor.fields.jog_velocity.putter
    async def motor(fields, instance, value):
        return _speed("JVEL", value, fields)

    @motor.fields.home_velocity.putter
    async def motor(fields, instance, value):
        return _speed("HVEL", value, fields)

    @motor.fields.max_velocity.putter
    async def motor(fields, instance, value):
        value = _finite("VMAX", value)
        if value <= 0:
            raise RefusedPut(f"VMAX: {value} must be > 0")
        return value

    @motor.fields.motor_step_size.putter
    async def motor(fields, instance, value):
        value = _finite("MRES", value)
        if value <= 0:
            raise RefusedPut(f"MRES: {value} must be > 0")
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


def _speed(name: str, value, fields) -> float:
    """VELO, BVEL, JVEL or HVEL: finite, > 0 and at most VMAX."""
    value = _finite(name, value)
    vmax = float(fields.max_velocity.value)
    if not 0 < value <= vmax:
        raise RefusedPut(f"{name}: {value} must be in (0, VMAX={vmax:g}]")
    return value
