"""Mosaics, the dose model, and suspension on the source's interlock."""

import threading
import time

import pytest

from acquisition.config import DoseConfig
from acquisition.dose import dose_rate_mgy_per_s, planned_dose_mgy
from acquisition.instrument import simulated_instrument
from acquisition.plans import (
    PlanArgumentError, darkfield_mosaic, darkfield_projection, source_suspenders, tile_positions,
)
from support import small_config


@pytest.fixture
def instrument(tmp_path):
    return simulated_instrument(small_config(rows=32, cols=40), write_path=tmp_path / "raw")


def collect(engine):
    documents = []
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    return documents


def events_by_stream(documents):
    streams = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    out = {}
    for name, doc in documents:
        if name == "event":
            out.setdefault(streams[doc["descriptor"]], []).append(doc)
    return out


def test_tile_grid_snakes_and_is_centred():
    tiles = tile_positions(2, 3, (10.0, 20.0), origin_mm=(5.0, 0.0), snake=True)
    assert [(t["row"], t["column"]) for t in tiles] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    assert [t["x_mm"] for t in tiles[:3]] == [-15.0, 5.0, 25.0]
    assert {t["y_mm"] for t in tiles} == {-5.0, 5.0}


@pytest.mark.slow
def test_mosaic_reads_tile_and_stage_in_every_event(RE, instrument):
    documents = collect(RE)
    RE(darkfield_mosaic(instrument, rows=2, columns=2, overlap=0.2, steps=3, dark_frames=1,
                            reference_every=2, exposure_s=1.0))
    start = documents[0][1]
    assert start["plan_name"] == "darkfield_mosaic" and len(start["mosaic"]["tiles"]) == 4
    events = events_by_stream(documents)
    assert len(events["primary"]) == 4 * 3 and len(events["reference"]) == 2 * 3
    tiles = [e["data"]["tile"] for e in events["primary"]]
    assert tiles == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    planned = {t["tile"]: (t["x_mm"], t["y_mm"]) for t in start["mosaic"]["tiles"]}
    for event in events["primary"]:
        x, y = planned[event["data"]["tile"]]
        assert event["data"]["stage_x"] == pytest.approx(x) and event["data"]["stage_y"] == pytest.approx(y)
    assert instrument.tube.shutter.get() == 0
    assert start["total_frames"] == sum(len(v) for k, v in events.items() if k != "dose")
    rate = dose_rate_mgy_per_s(instrument.config.instrument.dose, 40.0, 70.0)  # 0.91 mGy/s, 4.5 cm
    assert events["dose"][0]["data"]["delivered_dose_mgy"] == pytest.approx(4 * 3 * 1.0 * rate)


@pytest.mark.slow
def test_a_refreshed_reference_is_labelled_with_the_tile_it_serves(RE, instrument, tmp_path):
    """reference_every=2 on a 2 x 2 mosaic: the reference scan taken before tile 2 says
    tile=2 (not 1, the tile before it), in its events and in the run record's frame table."""
    from acquisition.storage.run_record import record_name
    from acquisition.storage.run_record_reader import read_run_record
    from acquisition.storage.run_recorder import run_recorder

    documents = collect(RE)
    RE.subscribe(run_recorder(tmp_path / "record"))
    (uid,) = RE(darkfield_mosaic(instrument, rows=2, columns=2, overlap=0.2, steps=3, dark_frames=1,
                                     reference_every=2, exposure_s=1.0, reference_exposure_s=1.0))
    events = events_by_stream(documents)
    assert [e["data"]["tile"] for e in events["reference"]] == [0, 0, 0, 2, 2, 2]
    # in time order: the refreshed reference comes after tile 1's sample set, before tile 2's
    order = sorted((e["time"], name, e["data"]["tile"]) for name in ("reference", "primary")
                   for e in events[name])
    assert [(name, tile) for _, name, tile in order[6:12]] == [("primary", 1)] * 3 + [("reference", 2)] * 3
    frames = read_run_record(tmp_path / "record" / record_name(uid)).frames
    streams = [s.decode() if isinstance(s, bytes) else s for s in frames["stream"]]
    assert [int(t) for s, t in zip(streams, frames["tile"]) if s == "reference"] == [0, 0, 0, 2, 2, 2]
    assert [int(t) for s, t in zip(streams, frames["tile"]) if s == "primary"] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_mosaic_beyond_the_stage_is_refused_before_anything_moves(instrument):
    with pytest.raises(PlanArgumentError, match=r"tile \d+ \(row \d, column \d\).*outside the stage limits"):
        darkfield_mosaic(instrument, rows=2, columns=2, origin_mm=(149.0, 0.0))
    with pytest.raises(PlanArgumentError, match="overlap=0.7"):
        darkfield_mosaic(instrument, overlap=0.7)
    assert instrument.stage.x.position == 0.0 and instrument.tube.shutter.get() == 0


@pytest.mark.slow
def test_dose_model_scales_with_current_voltage_and_thickness():
    dose = DoseConfig()
    paper = planned_dose_mgy(dose, 40, 70, 81)
    assert paper == pytest.approx(72.0, abs=2.0)  # paper: 72 mGy
    assert planned_dose_mgy(dose, 40, 35, 81) == pytest.approx(paper / 2)
    assert planned_dose_mgy(dose, 28, 70, 81) < paper / 2  # the spectrum's kerma falls fast with kV
    assert planned_dose_mgy(dose, 40, 70, 81, thickness_mm=45.0) == pytest.approx(paper)
    thin, thick = (planned_dose_mgy(dose, 40, 70, 81, thickness_mm=t) for t in (20.0, 70.0))
    assert thin > paper > thick  # a thicker breast shields its deeper glandular tissue


@pytest.mark.slow
def test_interlock_trip_suspends_repeats_the_set_and_keeps_every_frame(RE, instrument):
    for suspender in source_suspenders(instrument.tube, kv=40.0, ma=70.0, sleep_s=0.05):
        RE.install_suspender(suspender)
    documents = collect(RE)
    seen = {"reference": 0}
    streams = {}

    def trip_once(name, doc):
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        if name == "event" and streams[doc["descriptor"]] == "reference":
            seen["reference"] += 1
            if seen["reference"] == 4:  # the door opens mid-set, and closes again

                def door():
                    instrument.tube.trip_interlock()
                    time.sleep(0.3)
                    instrument.tube.clear_interlock()

                threading.Thread(target=door).start()
                time.sleep(0.05)  # the trip lands while the set is under way

    RE.subscribe(trip_once)
    RE(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0))
    events = events_by_stream(documents)
    assert len(events["reference"]) >= 5 + 4  # the interrupted set was repeated in full
    assert len(events["primary"]) == 5
    stop = documents[-1][1]
    assert stop["exit_status"] == "success"
    assert instrument.tube.shutter.get() == 0
    # every frame measured is in the file, the repeated ones too
    assert instrument.detector.hdf1.num_captured.get() == sum(len(v) for k, v in events.items() if k != "dose")


def test_warmup_ramps_in_the_safe_order(RE, instrument):
    from acquisition.plans import tube_warmup

    instrument.tube.kv.put(20.0)
    instrument.tube.ma.put(10.0)
    changes = []
    RE.msg_hook = lambda msg: changes.append((msg.obj.name, msg.args[0])) if msg.command == "set" else None
    RE(tube_warmup(instrument, kv=40.0, ma=70.0, steps=2, dwell_s=0.0))
    # shutter closed first and last (finalize), voltage up before current
    assert changes[0] == changes[-1] == ("tube_shutter", 0)
    assert changes[1:-1] == [("tube_kv", 30.0), ("tube_kv", 40.0), ("tube_ma", 40.0), ("tube_ma", 70.0)]
    changes.clear()
    RE(tube_warmup(instrument, kv=20.0, ma=10.0, steps=1, dwell_s=0.0))
    assert changes[1:-1] == [("tube_ma", 10.0), ("tube_kv", 20.0)]  # current down before voltage
    assert instrument.tube.shutter.get() == 0


def test_progress_counts_every_frame_of_the_plan(RE, instrument):
    import io

    from acquisition.progress import PlanProgress

    out = io.StringIO()
    RE.subscribe(PlanProgress(file=out))
    RE(darkfield_projection(instrument, dark_frames=2, steps=4, exposure_s=1.0, reference_exposure_s=1.0,
                                sample="s1"))
    text = out.getvalue()
    assert "darkfield_projection s1" in text and "10/10" in text and "success" in text


def drifting_instrument(tmp_path, drift_rad_per_s):
    import dataclasses

    config = small_config(rows=32, cols=40)
    interferometer = dataclasses.replace(config.setup.interferometer, phase_drift_rad_per_s=drift_rad_per_s)
    config = dataclasses.replace(config, setup=dataclasses.replace(config.setup, interferometer=interferometer))
    return simulated_instrument(config, write_path=tmp_path / f"raw{drift_rad_per_s}")


@pytest.mark.slow
@pytest.mark.parametrize("drift, references", [(0.0, 1), (0.05, 4)])
def test_mosaic_refreshes_the_reference_when_the_fringes_drift(RE, tmp_path, drift, references):
    instrument = drifting_instrument(tmp_path, drift)
    documents = collect(RE)
    # each tile takes 3 x 1 s + a 3 s probe: 0.05 rad/s drifts 0.3 rad between probes
    RE(darkfield_mosaic(instrument, rows=2, columns=2, overlap=0.1, steps=3, dark_frames=1,
                            exposure_s=1.0, max_phase_drift_rad=0.2))
    events = events_by_stream(documents)
    assert len(events["reference"]) == references * 3
    assert len(events["phase_probe"]) == 3 * (references + 3)
    assert len(events["primary"]) == 4 * 3
    assert instrument.tube.shutter.get() == 0
