"""The rotating-anode generator served over CA (PVs ``P + "tube:"``), like ``SimTube``.

Setpoints ``kV``, ``mA``, ``HVOn`` (enum Off/On), ``Shutter`` (enum Closed/Open) have
readbacks ``*_RBV`` (the same types) that follow only what the generator accepts: kV
within 0..kv_max and mA within 0..ma_max (also the control limits); HV on refused while
interlocked or faulted; the shutter opens only with HV on, the interlock chain closed
(``Interlock_RBV`` 1) and no fault (``Fault_RBV`` 0).  A refused command is a failed put
(the putter raises: ``caput -c`` reports an error, a put-callback completes with
ECA_PUTFAIL): the setpoint keeps its old value and the readback stays put.  An enum put
outside its states (``Shutter=-3``) is refused likewise.  ``FaultReset`` clears an arc
unless interlocked (refused then).  An open interlock, a fault and an arc carry a MAJOR
alarm (STATE) on ``Interlock_RBV``, ``Fault_RBV``, ``Arc_RBV`` and ``State_RBV``.  Test
hooks ``SimTripInterlock``, ``SimClearInterlock`` and ``SimTripArc`` (put 1) break the
source the way the hardware breaks; tripping closes the shutter at once.

The exposure timer (``simulators.shared.generator.ExposureTimer``, shared with the
in-process twin) closes the shutter by itself when no put to ``Heartbeat`` (s) re-arms it
in time, and raises ``WatchdogTripped_RBV`` (MAJOR alarm) until the shutter next opens.
"""

from __future__ import annotations

import asyncio

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty

from simulators.physics import TubeState
from simulators.shared.generator import ExposureTimer, generator_state, refusal

HV_STATES = ("Off", "On")
SHUTTER_STATES = ("Closed", "Open")


class RefusedCommand(ValueError):
    """The generator refuses the command; caproto answers the put with a failed write."""


def _state(value, states: tuple[str, str], name: str) -> bool:
    """The enum ``value`` (a state string, or an index caproto did not map) as a bool."""
    if value in states:
        return value == states[1]
    raise RefusedCommand(f"{name}: {value!r} is not one of {', '.join(states)}")


class TubeGroup(PVGroup):
    """Tube voltage (kV), current (mA), HV (Off/On), shutter (Closed/Open), interlock
    (1 = closed, ok)."""

    kv = pvproperty(alarm_group="kv", name="kV", value=0.0, precision=2, units="kV")
    kv_rbv = pvproperty(alarm_group="kv_rbv", name="kV_RBV", value=0.0, precision=2, units="kV", read_only=True)
    ma = pvproperty(alarm_group="ma", name="mA", value=0.0, precision=2, units="mA")
    ma_rbv = pvproperty(alarm_group="ma_rbv", name="mA_RBV", value=0.0, precision=2, units="mA", read_only=True)
    hv_on = pvproperty(alarm_group="hv_on", name="HVOn", value="On", dtype=ChannelType.ENUM, enum_strings=HV_STATES)
    hv_on_rbv = pvproperty(alarm_group="hv_on_rbv", name="HVOn_RBV", value="On", dtype=ChannelType.ENUM,
                           enum_strings=HV_STATES, read_only=True)
    shutter = pvproperty(alarm_group="shutter", name="Shutter", value="Closed", dtype=ChannelType.ENUM,
                         enum_strings=SHUTTER_STATES)
    shutter_rbv = pvproperty(alarm_group="shutter_rbv", name="Shutter_RBV", value="Closed", dtype=ChannelType.ENUM,
                             enum_strings=SHUTTER_STATES, read_only=True)
    interlock = pvproperty(alarm_group="interlock", name="Interlock_RBV", value=1, read_only=True)
    fault = pvproperty(alarm_group="fault", name="Fault_RBV", value=0, read_only=True)
    arc = pvproperty(alarm_group="arc", name="Arc_RBV", value=0, read_only=True)
    fault_reset = pvproperty(alarm_group="fault_reset", name="FaultReset", value=0)
    state = pvproperty(alarm_group="state", name="State_RBV", value="ready", dtype=ChannelType.STRING, read_only=True)
    sim_trip_interlock = pvproperty(alarm_group="sim_trip_interlock", name="SimTripInterlock", value=0)
    sim_clear_interlock = pvproperty(alarm_group="sim_clear_interlock", name="SimClearInterlock", value=0)
    sim_trip_arc = pvproperty(alarm_group="sim_trip_arc", name="SimTripArc", value=0)
    heartbeat = pvproperty(alarm_group="heartbeat", name="Heartbeat", value=0.0, precision=1, units="s")
    watchdog_tripped = pvproperty(alarm_group="watchdog_tripped", name="WatchdogTripped_RBV", value=0, read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configure()

    def configure(self, *, kv_max=50.0, ma_max=100.0, kv=0.0, ma=0.0, time_scale=1.0,
                  watchdog_s=30.0) -> None:
        """Limits, the initial operating point (kV, mA) and the exposure timer's default
        (s, recorded time at ``time_scale``), before the server starts."""
        if kv_max <= 0 or ma_max <= 0:
            raise ValueError(f"kv_max and ma_max must be > 0, got {kv_max}, {ma_max}")
        if not 0 <= kv <= kv_max:
            raise ValueError(f"kv: {kv} kV is outside 0..{kv_max} kV")
        if not 0 <= ma <= ma_max:
            raise ValueError(f"ma: {ma} mA is outside 0..{ma_max} mA")
        self.kv_max, self.ma_max = float(kv_max), float(ma_max)
        self._initial = (float(kv), float(ma))
        self.timer = ExposureTimer(self._watchdog_expired, time_scale=time_scale,
                                   default_s=watchdog_s)
        self._loop = None

    def tube_state(self) -> TubeState:
        """The operating point the physics engine sees (readbacks, not setpoints)."""
        return TubeState(kv=float(self.kv_rbv.value), ma=float(self.ma_rbv.value),
                         shutter_open=self._shutter_open(), hv_on=self._hv_on())

    def _shutter_open(self) -> bool:
        return self.shutter_rbv.value == SHUTTER_STATES[1]

    def _hv_on(self) -> bool:
        return self.hv_on_rbv.value == HV_STATES[1]

    @kv.startup
    async def kv(self, instance, async_lib):
        kv, ma = self._initial
        self._loop = asyncio.get_running_loop()
        await self.kv.write_metadata(lower_ctrl_limit=0.0, upper_ctrl_limit=self.kv_max)
        await self.ma.write_metadata(lower_ctrl_limit=0.0, upper_ctrl_limit=self.ma_max)
        await self.kv.write(kv, verify_value=False)
        await self.kv_rbv.write(kv)
        await self.ma.write(ma, verify_value=False)
        await self.ma_rbv.write(ma)

    @kv.putter
    async def kv(self, instance, value):
        await self._accept(instance, "kv", value)
        await self.kv_rbv.write(value)
        return value

    @ma.putter
    async def ma(self, instance, value):
        await self._accept(instance, "ma", value)
        await self.ma_rbv.write(value)
        return value

    async def _accept(self, instance, command: str, value) -> None:
        """Refuse (raise) or accept ``command``; an accepted put clears the WRITE alarm a
        refused one left on ``instance`` (each PV has an alarm of its own)."""
        self._check(command, value)
        if instance.alarm.severity != AlarmSeverity.NO_ALARM:
            await instance.alarm.write(status=AlarmStatus.NO_ALARM,
                                       severity=AlarmSeverity.NO_ALARM, publish=False)

    def _check(self, command: str, value) -> None:
        """Raise RefusedCommand (a failed put) when the generator refuses ``command``."""
        reason = refusal(command, value, interlock=bool(self.interlock.value),
                         fault=bool(self.fault.value), hv_on=self._hv_on(),
                         kv_max=self.kv_max, ma_max=self.ma_max)
        if reason:
            raise RefusedCommand(f"{self.prefix}: {reason}")

    @hv_on.putter
    async def hv_on(self, instance, value):
        on = _state(value, HV_STATES, "HVOn")
        await self._accept(instance, "hv_on", on)
        await self.hv_on_rbv.write(value)
        await self._update_state()
        return value

    @shutter.putter
    async def shutter(self, instance, value):
        is_open = _state(value, SHUTTER_STATES, "Shutter")
        await self._accept(instance, "shutter", is_open)
        await self.shutter_rbv.write(value)
        if is_open:
            await self.watchdog_tripped.write(0, status=AlarmStatus.NO_ALARM,
                                              severity=AlarmSeverity.NO_ALARM)
        self.timer.shutter_changed(is_open)
        return value

    @heartbeat.putter
    async def heartbeat(self, instance, value):
        self.timer.beat(value)
        return value

    def _watchdog_expired(self) -> None:
        """The timer's thread: close the shutter on the server's loop."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._watchdog_close(), self._loop)

    async def _watchdog_close(self) -> None:
        if self._shutter_open():
            await self._close_shutter()
            await self.watchdog_tripped.write(1, status=AlarmStatus.TIMEOUT,
                                              severity=AlarmSeverity.MAJOR_ALARM)

    @fault_reset.putter
    async def fault_reset(self, instance, value):
        if value:
            await self._accept(instance, "fault_reset", value)
            await self.fault.write(0)
            await self.arc.write(0)
            await self._update_state()
        return 0

    @sim_trip_interlock.putter
    async def sim_trip_interlock(self, instance, value):
        if value:
            await self.interlock.write(0)
            await self._close_shutter()
            await self._update_state()
        return 0

    @sim_clear_interlock.putter
    async def sim_clear_interlock(self, instance, value):
        if value:
            await self.interlock.write(1)
            await self._update_state()
        return 0

    @sim_trip_arc.putter
    async def sim_trip_arc(self, instance, value):
        if value:
            await self.arc.write(1)
            await self.fault.write(1)
            await self._close_shutter()
            await self._update_state()
        return 0

    async def _close_shutter(self) -> None:
        self.timer.shutter_changed(False)
        await self.shutter.write(SHUTTER_STATES[0], verify_value=False)
        await self.shutter_rbv.write(SHUTTER_STATES[0])

    async def _update_state(self) -> None:
        """State_RBV from the interlock, fault and HV; the alarms of the source's faults."""
        interlock, fault = bool(self.interlock.value), bool(self.fault.value)
        state = generator_state(interlock=interlock, fault=fault, hv_on=self._hv_on())
        await _alarm(self.interlock, not interlock)
        await _alarm(self.fault, fault)
        await _alarm(self.arc, bool(self.arc.value))
        if self.state.value != state:
            await self.state.write(state)
        await _alarm(self.state, state in ("interlocked", "fault"))


async def _alarm(channel, alarmed: bool) -> None:
    """MAJOR (STATE) on ``channel`` while ``alarmed``, else no alarm; posted on change."""
    status, severity = ((AlarmStatus.STATE, AlarmSeverity.MAJOR_ALARM) if alarmed
                        else (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM))
    if (channel.alarm.status, channel.alarm.severity) != (status, severity):
        await channel.alarm.write(status=status, severity=severity)
