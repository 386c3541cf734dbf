"""The dark-field projection plan on the in-process twins."""

import h5py
import numpy as np
import pytest

from acquisition.instrument import simulated_instrument
from acquisition.plans import PlanArgumentError, darkfield_projection
from support import small_config, validated_documents


@pytest.fixture
def instrument(tmp_path):
    return simulated_instrument(small_config(), write_path=tmp_path / "raw")


@pytest.mark.slow
def test_projection_takes_darks_reference_and_sample_sets(RE, instrument):
    documents = validated_documents(RE)
    RE(darkfield_projection(instrument, dark_frames=2, sample="biopsy-17", operator="lb"))

    start = next(doc for name, doc in documents if name == "start")
    assert start["sample"] == {"id": "biopsy-17"} and start["operator"] == "lb"
    assert start["planned_dose_mgy"] == pytest.approx(72.0, abs=2.0)  # paper: 72 mGy (4.5 cm)
    assert start["geometry"]["magnification"] == pytest.approx(1.49, abs=0.01)
    assert start["phase_stepping"]["positions_um"] == pytest.approx([k * 4.8 / 9 for k in range(9)])

    streams = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    events = [doc for name, doc in documents if name == "event"]
    counts = {s: sum(streams[e["descriptor"]] == s for e in events) for s in set(streams.values())}
    assert counts == {"dark": 2, "reference": 9, "primary": 9, "dose": 1}
    (dose,) = [e for e in events if streams[e["descriptor"]] == "dose"]
    assert dose["data"]["delivered_dose_mgy"] == pytest.approx(start["planned_dose_mgy"], rel=1e-6)
    assert all(e["data"]["tube_shutter"] == 0 for e in events if streams[e["descriptor"]] == "dark")
    assert all(e["data"]["tube_shutter"] == 1 for e in events if streams[e["descriptor"]] in ("reference", "primary"))
    sample_g2 = [e["data"]["g2"] for e in events if streams[e["descriptor"]] == "primary"]
    assert sample_g2 == pytest.approx([k * 4.8 / 9 for k in range(9)], abs=0.02)
    assert instrument.tube.shutter.get() == 0
    assert next(doc for name, doc in documents if name == "stop")["exit_status"] == "success"

    # frames are in HDF5 files referenced by the documents, never inline
    resources = [doc for name, doc in documents if name == "resource"]
    assert {r["spec"] for r in resources} == {"AD_HDF5"}
    assert all(isinstance(e["data"]["detector_image"], str) for e in events if "detector_image" in e["data"])
    with h5py.File("/" + resources[0]["resource_path"].lstrip("/"), "r") as f:
        frames = f["entry/data/data"][()]
    assert frames.shape == (20, 96, 112) and frames.dtype == np.uint16
    dark, reference = frames[:2].mean(), frames[2:11].mean(axis=(1, 2))
    assert reference.min() > 20 * dark  # beam on in the stepping sets, off for the darks


def test_shutter_ends_closed_when_the_scan_fails(RE, instrument):
    seen = []

    def fail_during_reference(name, doc):
        seen.append(name)
        if seen.count("event") == 4:
            raise RuntimeError("detector cable pulled")

    RE.subscribe(fail_during_reference)
    with pytest.raises(RuntimeError, match="cable pulled"):
        RE(darkfield_projection(instrument, dark_frames=1))
    assert instrument.tube.shutter.get() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 2}, "steps=2: must be a whole number >= 3"),
        ({"steps": 4.5}, "steps=4.5"),
        ({"exposure_s": 0}, "exposure_s=0"),
        ({"exposure_s": -9.0}, "exposure_s=-9.0"),
        ({"exposure_s": 31.0}, "exposure_s=31.0"),
        ({"kv": 80.0}, "kv=80.0"),
        ({"ma": float("nan")}, "ma=nan"),
        ({"sample_position_mm": (0.0, 400.0)}, "outside the stage limits"),
        ({"reference_position_mm": (-151.0, 0.0)}, "outside the stage limits"),
        ({"exposure_s": 30.0}, "exceeds the budget"),
        ({"sample": {"id": "b1", "breast_thickness_mm": 2.0}, "exposure_s": 12.0},
         "exceeds the budget"),  # thin breast: more MGD (45 mm at 12 s is 98 mGy)
        ({"sample": {"id": "b1", "breast_thickness_mm": 400.0}}, "breast_thickness_mm=400.0"),
        ({"sample": {"id": "b1", "thickness_mm": -5.0}}, "thickness_mm=-5.0"),
        ({"sample": 17}, "sample=17"),
    ],
)
def test_bad_arguments_are_refused_before_anything_moves(instrument, kwargs, message):
    g2_before = instrument.g2.position
    stage_before = (instrument.stage.x.position, instrument.stage.y.position)
    with pytest.raises(PlanArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        darkfield_projection(instrument, **kwargs)
    assert instrument.g2.position == g2_before
    assert (instrument.stage.x.position, instrument.stage.y.position) == stage_before
    assert instrument.tube.shutter.get() == 0
