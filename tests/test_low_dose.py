"""The low-dose protocol: a reference at its own exposure, or a stored reference fit
(issue 14, part 5)."""

import dataclasses
import time

import h5py
import numpy as np
import pytest
from support import small_config, validated_documents, run_engine

from acquisition.config import load_config
from acquisition.processing.derived_collector import DerivedCollector
from acquisition.storage.derived_store import derived_name
from acquisition.dose import dose_rate_mgy_per_s
from acquisition.instrument import simulated_instrument
from acquisition.plans import PlanArgumentError, darkfield_mosaic, darkfield_projection
from acquisition.plans.stubs import LAG_FLUSH_FRAMES
from acquisition.processing.live import darkfield_router
from acquisition.processing.analysis import ProjectionFrames, retrieve_projection
from acquisition.processing.offline import reconstruct_run, save_reference_fit
from acquisition.storage.reference_fit import ReferenceFit, read_reference_fit, write_reference_fit
from acquisition.storage.run_recorder import run_recorder
from reconstruction import SteppingFit
from simulators.physics import (
    Phantom,
    TissueSlab,
    TubeState,
    cluster_preset,
    expected_frame,
    sample_signals,
    simulate_frame,
    truth_labels,
)

SHORT_S = 0.3
"""A sample exposure per step (s) of about 2.5 mGy over 9 steps (0.9 mGy/s at 4.5 cm)."""


def _streams(documents) -> dict:
    names = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    counts = {}
    for name, doc in documents:
        if name == "event":
            counts[names[doc["descriptor"]]] = counts.get(names[doc["descriptor"]], 0) + 1
    return counts


def _exposure_of(documents, stream: str) -> float:
    """The detector's exposure per image (s) in the configuration of ``stream``'s descriptor."""
    descriptor = next(doc for name, doc in documents if name == "descriptor" and doc["name"] == stream)
    data = descriptor["configuration"]["detector"]["data"]
    return data["detector_cam_acquire_time"] * data["detector_cam_num_exposures"]


@pytest.fixture
def instrument(tmp_path):
    phantom = Phantom(TissueSlab(), (cluster_preset("pleomorphic", (0.0, 0.0), seed=5),))
    return simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw",
                                phantom=phantom)


@pytest.mark.slow
def test_reference_at_its_own_exposure_with_its_own_darks(RE, instrument, tmp_path):
    documents = validated_documents(RE)
    RE.subscribe(run_recorder(tmp_path))
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    RE.subscribe(processor)
    RE(darkfield_projection(instrument, dark_frames=3, exposure_s=SHORT_S))
    processor.wait()

    start = documents[0][1]
    stepping = start["phase_stepping"]
    assert stepping["exposure_s"] == SHORT_S and stepping["reference_exposure_s"] == 9.0  # the default
    assert stepping["streams"]["reference_dark"] == "reference_dark"
    assert start["total_frames"] == 3 + 3 + 9 + 9 + 2 * LAG_FLUSH_FRAMES
    assert _streams(documents) == {"dark": 3, "reference_dark": 3, "reference": 9, "primary": 9,
                                   "lag_flush": 2 * LAG_FLUSH_FRAMES, "dose": 1}
    assert _exposure_of(documents, "reference") == pytest.approx(9.0)
    assert _exposure_of(documents, "reference_dark") == pytest.approx(9.0)
    assert _exposure_of(documents, "primary") == pytest.approx(SHORT_S)
    assert _exposure_of(documents, "dark") == pytest.approx(SHORT_S)
    assert instrument.tube.shutter.get() == 0
    assert [s["exit_status"] for s in collector.stops] == ["success"]
    assert len(collector.clusters) == 1  # the one cluster of the phantom


@pytest.mark.slow
def test_darks_at_each_exposure_differ_by_the_dark_current(RE, instrument, tmp_path):
    """The processor must subtract the dark of the matching exposure: they differ by the
    panel's dark current times the exposure difference."""
    from acquisition.processing.offline import load_sets
    from acquisition.storage.run_record_reader import read_run_record

    RE.subscribe(run_recorder(tmp_path))
    (uid,) = RE(darkfield_projection(instrument, dark_frames=3, exposure_s=SHORT_S))
    (_, frames), = load_sets(read_run_record(tmp_path / f"run_{uid[:8]}.nxs"))
    assert frames.exposure_s == SHORT_S and frames.reference_exposure_s == 9.0
    current = instrument.config.setup.detector.dark_current_adu_per_s
    difference = np.mean(frames.reference_darks) - np.mean(frames.darks)
    assert difference == pytest.approx(current * (9.0 - SHORT_S), abs=1.0)


@pytest.mark.slow
def test_dose_is_unchanged_by_the_reference_exposure(instrument):
    def dose(**kwargs):
        with run_engine() as engine:
            documents = validated_documents(engine)
            engine(darkfield_projection(instrument, dark_frames=0, exposure_s=SHORT_S, **kwargs))
            start = documents[0][1]
            delivered = [doc for name, doc in documents if name == "event"][-1]["data"]["delivered_dose_mgy"]
            return start["planned_dose_mgy"], delivered

    planned, delivered = dose(reference_exposure_s=SHORT_S)
    assert dose(reference_exposure_s=9.0) == pytest.approx((planned, delivered), rel=1e-9)
    assert dose(reference_exposure_s=25.0) == pytest.approx((planned, delivered), rel=1e-9)
    assert delivered == pytest.approx(planned, rel=1e-6)


@pytest.mark.parametrize("value", [0.0, -1.0, 31.0, float("nan"), "9", True])
def test_a_wrong_reference_exposure_is_refused_by_name(instrument, value):
    with pytest.raises(PlanArgumentError, match="reference_exposure_s"):
        darkfield_projection(instrument, reference_exposure_s=value)
    with pytest.raises(PlanArgumentError, match="reference_exposure_s"):
        darkfield_mosaic(instrument, rows=1, columns=2, reference_exposure_s=value)


def _frames(setup, phantom, exposure_s, reference_exposure_s, stage, reference_stage, frame):
    """ProjectionFrames of one projection made by ``frame(setup, phantom, g2_um=..., ...)``."""
    period = setup.gratings.g2_period_um
    xs = [k * period / 9 for k in range(9)]
    on, off = TubeState(40.0, 70.0), TubeState(40.0, 70.0, shutter_open=False)

    def stack(position, tube, exposure, seed, count=9):
        return [frame(setup, phantom, g2_um=xs[k % 9], stage_mm=position, tube=tube, exposure_s=exposure,
                      **({} if seed is None else {"seed": seed + k})) for k in range(count)]

    def seed(base):
        return None if frame is expected_frame else base

    own = reference_exposure_s != exposure_s
    return ProjectionFrames(
        stack(stage, off, exposure_s, seed(100), 4),
        dict(enumerate(zip(xs, stack(reference_stage, on, reference_exposure_s, seed(200))))),
        dict(enumerate(zip(xs, stack(stage, on, exposure_s, seed(300))))),
        reference_darks=stack(stage, off, reference_exposure_s, seed(400), 4) if own else [],
        exposure_s=exposure_s, reference_exposure_s=reference_exposure_s)


def _setup(rows=48, cols=48):
    return small_config(rows=rows, cols=cols).setup


@pytest.mark.slow
def test_scaled_reference_equals_the_equal_exposure_retrieval_noise_free():
    setup = _setup()
    phantom = Phantom(TissueSlab(), (cluster_preset("fine", (0.0, 0.0), seed=3),))
    reference_stage = tuple(load_config().instrument.stage.reference_position_mm)
    period = setup.gratings.g2_period_um
    equal = retrieve_projection(_frames(setup, phantom, SHORT_S, SHORT_S, (0.0, 0.0), reference_stage,
                                        expected_frame), period)
    scaled = retrieve_projection(_frames(setup, phantom, SHORT_S, 9.0, (0.0, 0.0), reference_stage,
                                         expected_frame), period)
    for name in ("transmission", "dark_field", "differential_phase"):
        assert np.allclose(getattr(scaled, name), getattr(equal, name), rtol=1e-5, atol=1e-6), name
    assert np.nanmin(scaled.scattering) < 0.9 * np.nanmax(scaled.scattering)  # a real image


def test_a_long_reference_raises_the_eps_signal_to_noise_at_2_5_mgy():
    """At 2.5 mGy (0.3 s x 9 steps) the eps noise of a 0.3 s reference is a large part of
    the whole; a 9 s reference removes it (measured: SNR x1.31-1.33, eps noise 0.048 ->
    0.036 over the tissue around an ultra-fine cluster)."""
    config = load_config()
    setup = _setup(64, 64)
    exposure = 2.5 / (9 * dose_rate_mgy_per_s(config.instrument.dose, 40.0, 70.0))
    assert 0.2 < exposure < 0.4  # the paper's 0.89 mGy/s at 4.5 cm
    phantom = Phantom(TissueSlab(), (cluster_preset("ultra-fine", (0.0, 0.0), seed=1),))
    cluster = truth_labels(setup, phantom, (0.0, 0.0)) > 0
    reference_stage = tuple(config.instrument.stage.reference_position_mm)
    snr, noise = {}, {}
    for reference_exposure in (9.0, exposure):
        eps = retrieve_projection(_frames(setup, phantom, exposure, reference_exposure, (0.0, 0.0),
                                          reference_stage, simulate_frame),
                                  setup.gratings.g2_period_um).scattering
        noise[reference_exposure] = np.nanstd(eps[~cluster])
        snr[reference_exposure] = (np.nanmean(eps[cluster]) - np.nanmean(eps[~cluster])) / noise[reference_exposure]
    assert cluster.sum() > 50
    assert snr[9.0] > 1.2 * snr[exposure]
    assert noise[exposure] > 1.2 * noise[9.0]


# --- a stored reference fit -------------------------------------------------------------

def _stored(instrument, **changes) -> ReferenceFit:
    det = instrument.config.setup.detector
    rows, cols = det.region[2], det.region[3]
    fit = SteppingFit(a0=np.full((rows, cols), 2.0e4), a1=np.full((rows, cols), 6.0e3),
                      phi=np.zeros((rows, cols)))
    values = {"fit": fit, "exposure_s": 9.0, "kv": 40.0, "ma": 70.0, "region": tuple(det.region),
              "binning": det.binning, "period_um": 4.8, "positions_um": tuple(k * 4.8 / 9 for k in range(9)),
              "time": time.time(), "source_uid": "abc"}
    values.update(changes)
    return ReferenceFit(**values)


def test_stored_fit_round_trip(instrument, tmp_path):
    stored = _stored(instrument)
    path = write_reference_fit(tmp_path / "reference_fit.h5", stored)
    back = read_reference_fit(path)
    assert dataclasses.replace(back, fit=None) == dataclasses.replace(stored, fit=None)
    for name in ("a0", "a1", "phi"):
        assert np.array_equal(getattr(back.fit, name), getattr(stored.fit, name))


@pytest.mark.slow
def test_a_run_with_a_stored_reference_skips_the_reference_scan(RE, instrument, tmp_path):
    RE.subscribe(run_recorder(tmp_path))
    (uid,) = RE(darkfield_projection(instrument, dark_frames=3))
    path = tmp_path / "reference_fit.h5"
    stored = save_reference_fit(tmp_path / f"run_{uid[:8]}.nxs", path)
    assert stored.source_uid == uid and stored.exposure_s == 9.0 and stored.kv == 40.0
    assert stored.region == tuple(instrument.config.setup.detector.region)
    assert np.nanmedian(stored.fit.a1 / stored.fit.a0) > 0.1  # fringes, dark-subtracted

    documents = validated_documents(RE)
    collector, derived = DerivedCollector(), []
    processor = darkfield_router(out_dir=tmp_path, publish=lambda name, doc: (
        derived.append((name, doc)), collector(name, doc)))
    RE.subscribe(processor)
    RE(darkfield_projection(instrument, dark_frames=3, exposure_s=SHORT_S, reference=str(path)))
    processor.wait()
    start = documents[0][1]
    assert _streams(documents) == {"dark": 3, "lag_flush": LAG_FLUSH_FRAMES, "primary": 9, "dose": 1}
    assert start["total_frames"] == 3 + 9 + LAG_FLUSH_FRAMES
    assert start["phase_stepping"]["reference_fit"]["source_uid"] == uid
    assert start["phase_stepping"]["reference_exposure_s"] == 9.0
    assert [s["exit_status"] for s in collector.stops] == ["success"]
    derived_start = next(doc for name, doc in derived if name == "start")
    assert derived_start["reference_fit"]["path"] == str(path.resolve())
    assert derived_start["exposure_s"] == SHORT_S and derived_start["reference_exposure_s"] == 9.0
    assert len(collector.clusters) == 1

    # the stored 9 s fit, scaled to 0.3 s, gives the tissue's noise-free T and V within 1 %;
    # the full 9 s run within 3 % (its first sample frame carries the panel's lag of the last
    # reference frame: the standard protocol has no lag flush)
    reconstruct_run(tmp_path / f"run_{uid[:8]}.nxs", tmp_path / "full")
    (second,) = [doc["uid"] for name, doc in documents if name == "start"]
    config = instrument.config
    truth = sample_signals(config.setup, instrument.world.phantom, config.instrument.stage.sample_position_mm,
                           TubeState(kv=config.instrument.tube.kv, ma=config.instrument.tube.ma))
    for key, file, tolerance in (("full", tmp_path / "full" / derived_name(uid), 0.03),
                                 ("stored", tmp_path / derived_name(second), 0.01)):
        with h5py.File(file, "r") as f:
            for name in ("transmission", "dark_field"):
                measured = np.nanmedian(f[f"entry/{name}/data"][()])
                assert measured == pytest.approx(np.nanmedian(getattr(truth, name)), rel=tolerance), (key, name)


@pytest.mark.parametrize("change, message", [
    ({"region": (0, 0, 64, 64)}, "detector region"),
    ({"binning": 2}, "binning"),
    ({"kv": 35.0}, "kv 35"),
    ({"period_um": 4.0}, "G2 period"),
    ({"time": time.time() - 3 * 3600}, "reference_max_age_h = 2 h"),
])
def test_a_mismatched_or_stale_stored_fit_is_refused_before_anything_moves(instrument, tmp_path,
                                                                          change, message):
    path = write_reference_fit(tmp_path / "reference_fit.h5", _stored(instrument, **change))
    opened = []
    instrument.tube.shutter.subscribe(lambda value, **kw: opened.append(value), run=False)
    with pytest.raises(PlanArgumentError, match=f"reference=.*{message}"):
        darkfield_projection(instrument, exposure_s=SHORT_S, reference=str(path))
    assert not any(opened) and instrument.tube.shutter.get() == 0


def test_an_unreadable_stored_fit_is_refused_by_name(instrument, tmp_path):
    (tmp_path / "not_a_fit.h5").write_text("text")
    for path in (tmp_path / "missing.h5", tmp_path / "not_a_fit.h5"):
        with pytest.raises(PlanArgumentError, match="reference="):
            darkfield_projection(instrument, reference=str(path))
    with pytest.raises(PlanArgumentError, match="give one"):
        darkfield_projection(instrument, reference=str(path), reference_exposure_s=9.0)


@pytest.mark.slow
def test_a_mosaic_takes_its_references_at_their_own_exposure(RE, instrument, tmp_path):
    documents = validated_documents(RE)
    collector = DerivedCollector()
    processor = darkfield_router(out_dir=tmp_path, publish=collector)
    RE.subscribe(processor)
    RE(darkfield_mosaic(instrument, rows=1, columns=2, dark_frames=2, exposure_s=SHORT_S,
                            reference_every=1, max_phase_drift_rad=1.0))
    processor.wait()
    counts = _streams(documents)
    assert counts["reference"] == 18 and counts["primary"] == 18 and counts["reference_dark"] == 2
    assert counts["lag_flush"] == 3 * LAG_FLUSH_FRAMES  # before the darks and each tile
    assert sum(counts.values()) - 1 == documents[0][1]["total_frames"]
    assert _exposure_of(documents, "reference") == pytest.approx(9.0)
    assert _exposure_of(documents, "primary") == pytest.approx(SHORT_S)
    assert documents[0][1]["phase_stepping"]["reference_exposure_s"] == 9.0
    assert [s["exit_status"] for s in collector.stops] == ["success"] * 3


@pytest.mark.slow
def test_the_lag_of_the_long_reference_is_flushed_before_the_short_sample(tmp_path):
    """The panel's lag (the twin: 1 % of the previous frame) of a 9 s reference frame is 30 %
    of a 0.3 s sample frame; the lag_flush frames read it out, so the cluster's mu/eps is
    that of a lag-free panel (same seeds: only the lag differs).  Measured: 0.562 against
    0.555 (the lag within each set remains, as in the 9 s protocol: 0.576 against 0.585);
    without the flush 0.261, a class off."""
    phantom = Phantom(TissueSlab(), (cluster_preset("pleomorphic", (0.0, 0.0), seed=5),))
    ratios = []
    for lag in (0.01, 0.0):
        config = small_config(rows=64, cols=64)
        detector = dataclasses.replace(config.setup.detector, lag_fraction=lag)
        config = dataclasses.replace(config, setup=dataclasses.replace(config.setup, detector=detector))
        instrument = simulated_instrument(config, write_path=tmp_path / f"raw{lag}", phantom=phantom)
        collector = DerivedCollector()
        with run_engine() as engine:
            engine.subscribe(darkfield_router(out_dir=tmp_path / f"out{lag}", publish=collector, background=False))
            engine(darkfield_projection(instrument, dark_frames=2, exposure_s=SHORT_S))
            (cluster,) = collector.clusters
            ratios.append(cluster["ratio"])
    assert ratios[0] == pytest.approx(ratios[1], rel=0.03)
