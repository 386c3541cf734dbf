"""The in-process twins: stepping curves, files and documents, time scaling, refusals."""

import time

import h5py
import numpy as np
import pytest
from bluesky import plans as bp
from ophyd.utils import LimitError

from support import validated_documents, run_engine
from simulators.physics import Detector, Interferometer, Setup
from simulators.twins import RefusedCommand, build_twins

SETUP = Setup(detector=Detector(region=(700, 900, 32, 48)),
              interferometer=Interferometer(visibility_variation=0.0, moire_periods=0.0))


@pytest.fixture
def twins(tmp_path):
    twins = build_twins(SETUP, None, write_path=tmp_path, time_scale=0.0, seed=3)
    twins.tube.kv.put(40.0)
    twins.tube.ma.put(70.0)
    twins.tube.shutter.put(1)
    return twins


def run(plan):
    with run_engine() as engine:
        documents = validated_documents(engine)
        engine(plan)
        return documents


def test_g2_scan_traces_the_stepping_curve_into_hdf5(twins):
    steps = np.arange(9) * 4.8 / 9
    documents = run(bp.list_scan([twins.detector], twins.g2, list(steps)))
    (resource,) = [doc for name, doc in documents if name == "resource"]
    datums = [doc for name, doc in documents if name == "datum"]
    events = [doc for name, doc in documents if name == "event"]
    assert resource["spec"] == "AD_HDF5" and resource["resource_kwargs"] == {"frame_per_point": 1}
    assert [d["datum_kwargs"]["point_number"] for d in datums] == list(range(9))
    assert [e["data"]["detector_image"] for e in events] == [d["datum_id"] for d in datums]
    assert [e["data"]["g2"] for e in events] == pytest.approx(steps)
    descriptor = next(doc for name, doc in documents if name == "descriptor")
    assert descriptor["data_keys"]["detector_image"]["external"] == "FILESTORE:"
    assert descriptor["configuration"]["detector"]["data"]["detector_cam_acquire_time"] == 9.0

    with h5py.File("/" + resource["resource_path"], "r") as f:
        frames = f["entry/data/data"][()].astype(float)
    assert frames.shape == (9, 32, 48)
    # one period of a cosine: the first harmonic carries the signal, the rest is noise
    spectrum = np.abs(np.fft.rfft(frames.mean(axis=(1, 2))))
    assert spectrum[1] > 20 * spectrum[2:].max()
    assert 0.15 < 2 * spectrum[1] / spectrum[0] < 0.4  # visibility of a lab Talbot-Lau setup


def test_closed_shutter_gives_dark_frames(twins):
    twins.tube.shutter.put(0)
    documents = run(bp.count([twins.detector], num=2))
    (resource,) = [doc for name, doc in documents if name == "resource"]
    with h5py.File("/" + resource["resource_path"], "r") as f:
        frames = f["entry/data/data"][()]
    assert frames.shape[0] == 2 and abs(frames.mean() - (100 + 2 * 9)) < 1


def test_exposure_is_recorded_at_full_length_and_waited_for_scaled(tmp_path):
    twins = build_twins(SETUP, None, write_path=tmp_path, time_scale=0.05, seed=1)
    twins.detector.cam.acquire_time.put(1.0)
    twins.detector.stage()
    try:
        started = time.monotonic()
        twins.detector.trigger().wait(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        twins.detector.unstage()
    assert 0.045 < elapsed < 0.5
    assert twins.world.clock_s == 1.0


def test_limits_and_refused_commands(twins):
    with pytest.raises(LimitError):
        twins.g2.move(20.0)
    with pytest.raises(LimitError):
        twins.stage.x.move(-151.0)
    with pytest.raises(RefusedCommand):
        twins.tube.kv.put(80.0)
    twins.tube.trip_interlock()
    assert twins.tube.shutter.get() == 0
    status = twins.tube.shutter.set(1)
    with pytest.raises(RefusedCommand, match="interlock"):
        status.wait(timeout=2)
    twins.tube.clear_interlock()
    twins.tube.shutter.set(1).wait(timeout=2)
    assert twins.tube.shutter.get() == 1


def test_same_seed_same_frames(tmp_path):
    frames = []
    for run_dir in ("a", "b"):
        twins = build_twins(SETUP, None, write_path=tmp_path / run_dir, time_scale=0.0, seed=9)
        twins.tube.kv.put(40.0)
        twins.tube.ma.put(70.0)
        twins.tube.shutter.put(1)
        documents = run(bp.count([twins.detector], num=1))
        resource = next(doc for name, doc in documents if name == "resource")
        with h5py.File("/" + resource["resource_path"], "r") as f:
            frames.append(f["entry/data/data"][0])
    assert np.array_equal(*frames)
