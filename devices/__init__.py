"""ophyd classes of the real instrument over EPICS (pyepics); nothing else of ours.

The simulated twins in ``simulators.twins`` expose the same component names.

Importing this package gives every EpicsSignal of the process a write timeout of
WRITE_TIMEOUT_S (ophyd's ``EpicsSignalBase.set_defaults``; its default waits forever), so
no put in a plan, in ``stage`` or in ``unstage`` hangs on a lost IOC.  ophyd allows that
only before the first EpicsSignal exists: import ``devices`` first.
"""

import logging

from ophyd.signal import EpicsSignalBase

WRITE_TIMEOUT_S = 10.0
"""Longest any put may wait for its completion or readback (s)."""

try:
    EpicsSignalBase.set_defaults(write_timeout=WRITE_TIMEOUT_S)
except RuntimeError:  # EpicsSignals made before this import keep ophyd's defaults
    logging.getLogger(__name__).warning(
        "devices imported after the first EpicsSignal: puts keep ophyd's default (no timeout)")

from .paxscan import PaxScanCam, PaxScanDetector
from .piezo import PiezoStepper
from .positioner import CheckedMotor, NotInPosition
from .stage import SampleStage
from .tube import ShutterNotClosed, XRayTube

__all__ = ["CheckedMotor", "NotInPosition", "PaxScanCam", "PaxScanDetector", "PiezoStepper",
           "SampleStage", "ShutterNotClosed", "XRayTube"]
