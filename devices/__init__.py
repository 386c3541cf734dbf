"""ophyd classes of the real instrument over EPICS (pyepics); nothing else of ours.

The simulated twins in ``simulators.twins`` expose the same component names.
"""

from .paxscan import PaxScanCam, PaxScanDetector
from .piezo import NotInPosition, PiezoStepper
from .stage import SampleStage
from .tube import XRayTube

__all__ = ["NotInPosition", "PaxScanCam", "PaxScanDetector", "PiezoStepper", "SampleStage", "XRayTube"]
