"""The rotating-anode generator served over CA (PVs ``P + "tube:"``), like ``SimTube``.

Setpoints ``kV``, ``mA``, ``HVOn``, ``Shutter`` have readbacks ``*_RBV`` that follow only
what the generator accepts: kV within 0..kv_max and mA within 0..ma_max (control limits,
a put beyond them is a failed write); HV on refused while interlocked or faulted; the
shutter opens only with HV on, the interlock chain closed (``Interlock_RBV`` 1) and no
fault (``Fault_RBV`` 0) -- a refused open reverts the ``Shutter`` setpoint to 0 and the
readback stays closed.  ``FaultReset`` clears an arc unless interlocked.  Test hooks
``SimTripInterlock``, ``SimClearInterlock`` and ``SimTripArc`` (put 1) break the source
the way the hardware breaks; tripping closes the shutter at once.

The exposure timer (``simulators.twins.generator.ExposureTimer``, shared with the
in-process twin) closes the shutter by itself when no put to ``Heartbeat`` (s) re-arms it
in time, and raises ``WatchdogTripped_RBV`` (MAJOR alarm) until the shutter next opens.
"""

from __future__ import annotations

import asyncio

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty

from simulators.physics import TubeState
from simulators.twins.generator import ExposureTimer, generator_state, refusal


class TubeGroup(PVGroup):
    """Tube voltage (kV), current (mA), HV, shutter (1 open), interlock (1 = closed, ok)."""

    kv = pvproperty(name="kV", value=0.0, precision=2, units="kV")
    kv_rbv = pvproperty(name="kV_RBV", value=0.0, precision=2, units="kV", read_only=True)
    ma = pvproperty(name="mA", value=0.0, precision=2, units="mA")
    ma_rbv = pvproperty(name="mA_RBV", value=0.0, precision=2, units="mA", read_only=True)
    hv_on = pvproperty(name="HVOn", value=1)
    hv_on_rbv = pvproperty(name="HVOn_RBV", value=1, read_only=True)
    shutter = pvproperty(name="Shutter", value=0)
    shutter_rbv = pvproperty(name="Shutter_RBV", value=0, read_only=True)
    interlock = pvproperty(name="Interlock_RBV", value=1, read_only=True)
    fault = pvproperty(name="Fault_RBV", value=0, read_only=True)
    arc = pvproperty(name="Arc_RBV", value=0, read_only=True)
    fault_reset = pvproperty(name="FaultReset", value=0)
    state = pvproperty(name="State_RBV", value="ready", dtype=ChannelType.STRING, read_only=True)
    sim_trip_interlock = pvproperty(name="SimTripInterlock", value=0)
    sim_clear_interlock = pvproperty(name="SimClearInterlock", value=0)
    sim_trip_arc = pvproperty(name="SimTripArc", value=0)
    heartbeat = pvproperty(name="Heartbeat", value=0.0, precision=1, units="s")
    watchdog_tripped = pvproperty(name="WatchdogTripped_RBV", value=0, read_only=True)

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
                         shutter_open=bool(self.shutter_rbv.value), hv_on=bool(self.hv_on_rbv.value))

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
        await self.kv_rbv.write(value)
        return value

    @ma.putter
    async def ma(self, instance, value):
        await self.ma_rbv.write(value)
        return value

    def _refusal(self, command: str, value) -> str | None:
        return refusal(command, value, interlock=bool(self.interlock.value),
                       fault=bool(self.fault.value), hv_on=bool(self.hv_on_rbv.value),
                       kv_max=self.kv_max, ma_max=self.ma_max)

    @hv_on.putter
    async def hv_on(self, instance, value):
        if self._refusal("hv_on", value):
            return self.hv_on_rbv.value  # refused: the command does not stick
        await self.hv_on_rbv.write(1 if value else 0)
        await self._update_state()
        return value

    @shutter.putter
    async def shutter(self, instance, value):
        if self._refusal("shutter", value):
            return 0  # refused: setpoint reverts, readback stays closed
        await self.shutter_rbv.write(1 if value else 0)
        if value:
            await self.watchdog_tripped.write(0, status=AlarmStatus.NO_ALARM,
                                              severity=AlarmSeverity.NO_ALARM)
        self.timer.shutter_changed(bool(value))
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
        if self.shutter_rbv.value:
            await self._close_shutter()
            await self.watchdog_tripped.write(1, status=AlarmStatus.TIMEOUT,
                                              severity=AlarmSeverity.MAJOR_ALARM)

    @fault_reset.putter
    async def fault_reset(self, instance, value):
        if value and not self._refusal("fault_reset", value):
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
        await self.shutter.write(0, verify_value=False)
        await self.shutter_rbv.write(0)

    async def _update_state(self) -> None:
        state = generator_state(interlock=bool(self.interlock.value), fault=bool(self.fault.value),
                                hv_on=bool(self.hv_on_rbv.value))
        if self.state.value != state:
            await self.state.write(state)
