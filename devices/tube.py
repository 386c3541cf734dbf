"""The rotating-anode X-ray generator (Nonius FR 591) over EPICS, PVs under ``P + "tube:"``.

There is no public EPICS support for the FR 591; the PVs follow what generator IOCs expose:
kV and mA setpoints with readbacks, HV on/off, shutter, interlock chain, fault and arc
state, fault reset and the generator state.  Setpoints complete only when their readback
follows, so a command the generator refuses (shutter open while interlocked) fails its
Status instead of passing silently.
"""

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO

WRITE_TIMEOUT_S = 5.0


class ConfirmedSignal(EpicsSignal):
    """A setpoint whose ``set`` waits (at most WRITE_TIMEOUT_S) for the readback to follow."""

    def __init__(self, read_pv, write_pv=None, *, tolerance=0.5, **kwargs):
        super().__init__(read_pv, write_pv=write_pv, tolerance=tolerance, **kwargs)

    def set(self, value, *, timeout=WRITE_TIMEOUT_S, settle_time=None, **kwargs):
        return super().set(value, timeout=timeout, settle_time=settle_time, **kwargs)


class XRayTube(Device):
    """Tube voltage (kV), current (mA), HV, shutter (1 open), interlock (1 = chain closed, ok)."""

    kv = Cpt(ConfirmedSignal, "kV_RBV", write_pv="kV", tolerance=0.2, kind="normal")
    ma = Cpt(ConfirmedSignal, "mA_RBV", write_pv="mA", tolerance=0.2, kind="normal")
    hv_on = Cpt(ConfirmedSignal, "HVOn_RBV", write_pv="HVOn", kind="normal")
    shutter = Cpt(ConfirmedSignal, "Shutter_RBV", write_pv="Shutter", kind="normal")
    interlock = Cpt(EpicsSignalRO, "Interlock_RBV", kind="normal")
    fault = Cpt(EpicsSignalRO, "Fault_RBV", kind="normal")
    arc = Cpt(EpicsSignalRO, "Arc_RBV", kind="omitted")
    fault_reset = Cpt(EpicsSignal, "FaultReset", kind="omitted")
    state = Cpt(EpicsSignalRO, "State_RBV", string=True, kind="config")

    def stop(self, *, success=False):
        """Any stop of a plan touching the tube closes the shutter."""
        self.shutter.put(0)
        super().stop(success=success)
