"""G2 alignment, stock bluesky plans on our devices, pause and abort."""

import threading

import h5py
import numpy as np
import pytest
from bluesky import plans as bp
from bluesky.utils import RunEngineInterrupted

from acquisition.instrument import simulated_instrument
from acquisition.plans import PlanArgumentError, alignment_report, darkfield_projection, g2_alignment
from support import small_config


@pytest.fixture
def instrument(tmp_path):
    return simulated_instrument(small_config(rows=32, cols=40), write_path=tmp_path / "raw")


def frames_of(documents):
    resource = next(doc for name, doc in documents if name == "resource")
    with h5py.File("/" + resource["resource_path"], "r") as f:
        return f["entry/data/data"][()]


def test_alignment_finds_the_visibility_and_the_working_point(RE, instrument):
    documents = []
    RE.subscribe(lambda name, doc: documents.append((name, doc)))
    RE(g2_alignment(instrument, steps=12, periods=2, exposure_s=1.0))
    start = documents[0][1]
    report = alignment_report(frames_of(documents), start["positions_um"], start["period_um"], dark=102.0)
    assert 0.15 < report["visibility_median"] < 0.35
    # stepping from the working point puts the mean fringe phase at zero
    shifted = np.array(start["positions_um"]) - report["working_point_um"]
    again = alignment_report(frames_of(documents), shifted, start["period_um"], dark=102.0)
    assert abs(again["fringe_phase_rad"]) < 1e-6
    assert instrument.tube.shutter.get() == 0
    with pytest.raises(PlanArgumentError, match="exceed the G2 limits"):
        g2_alignment(instrument, steps=8, periods=5)


def test_stock_plans_work_with_our_devices(RE, instrument):
    instrument.tube.shutter.put(1)
    uids = [RE(bp.count([instrument.detector], num=2)),
            RE(bp.scan([instrument.detector], instrument.g2, 0.0, 4.0, 3)),
            RE(bp.grid_scan([instrument.detector], instrument.stage.x, -1.0, 1.0, 2,
                                instrument.stage.y, -1.0, 1.0, 2))]
    assert all(len(u) == 1 for u in uids)
    assert instrument.stage.x.position == 1.0 and instrument.g2.position == 4.0


def test_pause_then_abort_closes_the_shutter(RE, instrument):
    count = {"events": 0}

    def pause_in_reference(name, doc):
        if name == "event":
            count["events"] += 1
            if count["events"] == 4:  # as Ctrl-C would, from another thread
                threading.Thread(target=RE.request_pause).start()

    RE.subscribe(pause_in_reference)
    with pytest.raises(RunEngineInterrupted):
        RE(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0))
    assert RE.state == "paused"
    RE.abort(reason="operator")
    assert instrument.tube.shutter.get() == 0
