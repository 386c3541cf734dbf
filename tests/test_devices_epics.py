"""The EPICS device classes: component names match the twins, PVs follow the prefix scheme.

No IOC runs here; these tests check what can be checked without one
(tests/test_ioc_twins.py runs the classes over Channel Access against the IOC twins).
"""

import pytest

import devices
from acquisition.instrument import InstrumentNotConnected, epics_instrument
from support import small_config
from simulators.twins import SimPaxScan, SimSampleStage, SimTube


def test_tube_pvs_and_names_match_the_twin():
    tube = devices.XRayTube("TL:tube:", name="tube")
    assert tube.shutter.pvname == "TL:tube:Shutter_RBV"
    assert tube.shutter.setpoint_pvname == "TL:tube:Shutter"
    assert tube.kv.setpoint_pvname == "TL:tube:kV" and tube.ma.pvname == "TL:tube:mA_RBV"
    assert tube.interlock.pvname == "TL:tube:Interlock_RBV"
    assert set(devices.XRayTube.component_names) == set(SimTube.component_names)
    assert set(tube.read_attrs) == {"kv", "ma", "hv_on", "shutter", "interlock", "fault"}


def test_motors_follow_the_prefix_scheme():
    g2 = devices.PiezoStepper("TL:g2", name="g2", tolerance_um=0.02)
    assert g2.user_readback.pvname == "TL:g2.RBV" and g2.user_readback.name == "g2"
    assert g2.retry_deadband.pvname == "TL:g2.RDBD" and g2.tolerance_um == 0.02
    stage = devices.SampleStage("TL:", name="stage")
    assert stage.x.user_setpoint.pvname == "TL:stage:x.VAL"
    assert stage.y.user_readback.pvname == "TL:stage:y.RBV"
    assert set(devices.SampleStage.component_names) == set(SimSampleStage.component_names)


def test_detector_has_the_twins_cam_and_plugin_layout():
    assert {"cam", "hdf1"} <= set(devices.PaxScanDetector.component_names)
    assert {"cam", "hdf1"} <= set(SimPaxScan.component_names)
    cam = devices.PaxScanCam  # areaDetector components connect lazily: check the class
    assert cam.acquire_time.suffix == "AcquireTime" and cam.num_exposures.suffix == "NumExposures"
    assert cam.gain_mode.suffix == "GainMode" and cam.offset_correction.suffix == "OffsetCorrection"
    assert devices.PaxScanDetector.cam.suffix == "det:cam1:"
    assert devices.PaxScanDetector.hdf1.suffix == "det:HDF1:"
    for name in ("acquire_time", "num_exposures", "acquire", "image_mode", "array_counter"):
        assert name in cam.component_names and name in SimPaxScan.cam.cls.component_names


@pytest.mark.slow
def test_epics_instrument_names_the_prefix_and_pvs_when_no_ioc_answers():
    with pytest.raises(InstrumentNotConnected, match=r"prefix 'NOBODY:'(.|\n)*NOBODY:tube:") as err:
        epics_instrument(small_config(), prefix="NOBODY:", connect_timeout_s=0.2)
    assert "is the IOC running?" in str(err.value)
