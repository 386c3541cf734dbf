"""`talbot-lau session --sim`: IPython with the instrument, magics and plans, run as a user would;
the session's namespace in process (stock bluesky habits); its exits and its start time."""

import dataclasses
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from docs_snippets import write_configs
from support import small_config

from acquisition.instrument import simulated_instrument
from acquisition.plans import PlanArgumentError, alignment_report
from acquisition.session import session_namespace
from acquisition.storage.catalogue import (
    BackgroundCatalogue,
    CatalogueNotReady,
    catalogue_writer,
    find_runs,
    last_run,
    open_catalogue,
)


@pytest.fixture(scope="module")
def small_simulation(tmp_path_factory):
    """The embedded simulation.yaml on small_config's 96 x 112 pixel region (two clusters)
    with no wall-clock waits: the sessions' ``--simulation``."""
    region = small_config().setup.detector.region
    return write_configs(tmp_path_factory.mktemp("configs"), region=region, time_scale=0.0) / "simulation.yaml"


def session_command(out, simulation) -> list[str]:
    """``talbot-lau session --sim`` on the small simulation, writing into ``out``."""
    return [sys.executable, "-m", "acquisition.cli", "session", "--sim", "--simulation", str(simulation),
            "--out", str(out)]


@pytest.mark.slow
def test_session_runs_a_plan_through_ipython_and_the_magics(tmp_path, small_simulation):
    lines = "\n".join([
        "%mov g2 1.6",
        "%wa",
        "%ct",
        "RE.md['operator'] = 'tester'",
        "print('PLOTS', bec.enable_plots())",  # Qt off screen (conftest): a display of sorts
        "RE(bp.scan([detector], g2, 0, 4.8, 9))",
        "import matplotlib.pyplot as plt",
        "print('FIGURES', len(plt.get_fignums()), sorted(bec.peaks['cen']))",
        "RE(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0, sample='s-1'))",
        "print('SHUTTER', tube.shutter.get(), 'RUNS', RE.md['scan_id'])",
        "print('FLUSHED', flush())",  # recorder, catalogue and processor caught up
        "print('CATALOGUED', len(find_runs(catalogue, 's-1')), len(find_runs(catalogue, 's-1', derived=True)))",
    ])
    env = dict(os.environ, TALBOT_LAU_STATE=str(tmp_path / "state"))
    command = session_command(tmp_path / "data", small_simulation) + ["-c", lines]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "talbot-lau session: simulated instrument" in out  # the help screen
    assert "g2                             1.6" in out  # %wa after %mov
    assert re.search(r"^\s*stage_x\s+0\.0\s+-150\.0\s+150\.0", out, re.M)  # the stage's axes, labelled
    assert re.search(r"^detector_stats1_mean_value\s+\d+\.\d+$", out, re.M)  # %ct: the mean ADU
    assert "PLOTS True" in out and "FIGURES 1 ['detector_stats1_mean_value']" in out
    assert "SHUTTER 0 RUNS 2" in out
    assert "FLUSHED True" in out
    assert "CATALOGUED 1 1" in out  # the raw run and the processor's derived run
    assert list((tmp_path / "data").glob("run_*.nxs")) and list((tmp_path / "data" / "raw").glob("*.h5"))
    # metadata persists into the next session
    # the exit keeps its own references: names deleted in IPython do not break it
    # a session that takes no run never opens its catalogue (nor waits for it at the exit)
    again = subprocess.run(command[:-1] + ["print('OPERATOR', RE.md['operator']); "
                                           "print('OPENED', catalogue.ready, repr(catalogue)); "
                                           "del processor, catalogue, session, flush"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert "OPERATOR tester" in again.stdout
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert re.search(r"^OPENED False <catalogue \S+ \(not opened yet", again.stdout, re.M), again.stdout[-2000:]


# -- the session's namespace in process (no IPython): stock bluesky habits ------------------


class Documents:
    """Every document of a RunEngine, by run."""

    def __init__(self):
        self.docs = []

    def __call__(self, name, doc):
        self.docs.append((name, doc))

    def run(self, uid):
        """(start, {stream: [events]}, {datum_id: (file, point)}) of run ``uid``."""
        start = next(doc for name, doc in self.docs if name == "start" and doc["uid"] == uid)
        streams = {doc["uid"]: doc["name"] for name, doc in self.docs
                   if name == "descriptor" and doc["run_start"] == uid}
        resources = {doc["uid"]: "/" + doc["resource_path"].lstrip("/") for name, doc in self.docs
                     if name == "resource" and doc["run_start"] == uid}
        datums = {doc["datum_id"]: (resources[doc["resource"]], doc["datum_kwargs"]["point_number"])
                  for name, doc in self.docs if name == "datum" and doc["resource"] in resources}
        events = {}
        for name, doc in self.docs:
            if name == "event" and doc["descriptor"] in streams:
                events.setdefault(streams[doc["descriptor"]], []).append(doc)
        return start, events, datums


def frames(events, datums):
    out = []
    for event in events:
        path, point = datums[event["data"]["detector_image"]]
        with h5py.File(path, "r") as f:
            out.append(f["entry/data/data"][point].astype(float))
    return np.array(out)


@pytest.fixture(scope="module")
def ns(tmp_path_factory):
    """One session namespace on the twins (96 x 112 pixels: two clusters; no wall-clock waits)."""
    tmp = tmp_path_factory.mktemp("ns")
    saved = os.environ.get("TALBOT_LAU_STATE")
    os.environ["TALBOT_LAU_STATE"] = str(tmp / "state")
    instrument = simulated_instrument(small_config(rows=96, cols=112), write_path=tmp / "data" / "raw")
    namespace = session_namespace(instrument, tmp / "data", suspend_sleep_s=0.05)
    namespace["catalogue ready at start"] = namespace["catalogue"].ready
    documents = Documents()
    namespace["RE"].subscribe(documents)
    namespace["documents"] = documents
    try:
        yield namespace
    finally:
        assert namespace["session"].close(60)
        if saved is None:
            os.environ.pop("TALBOT_LAU_STATE", None)
        else:
            os.environ["TALBOT_LAU_STATE"] = saved


@pytest.mark.slow
def test_the_catalogue_opens_at_its_first_use_and_is_used_as_the_client(ns):
    catalogue = ns["catalogue"]
    assert isinstance(catalogue, BackgroundCatalogue)
    assert ns["catalogue ready at start"] is False  # tiled is not started with the session
    assert catalogue.wait(60) is not None and catalogue.ready  # the first use (or run) opens it
    assert len(catalogue) == len(list(catalogue))  # forwarded to tiled's client


def test_a_catalogue_never_used_closes_at_once(tmp_path):
    """A session that took no run and never looked at its catalogue: nothing was opened, so
    the exit does not wait for tiled, and a late use says the catalogue is closed."""
    catalogue = BackgroundCatalogue(tmp_path / "catalogue", timeout=30)
    started = time.monotonic()
    catalogue.close(30)
    assert time.monotonic() - started < 1.0
    assert not (tmp_path / "catalogue").exists()
    with pytest.raises(CatalogueNotReady, match="not open \\(closed\\)"):
        catalogue.wait(1)


@pytest.mark.slow
def test_a_catalogue_that_cannot_open_fails_its_users_not_the_writer(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    catalogue = BackgroundCatalogue(tmp_path / "file" / "catalogue", timeout=5)
    write = catalogue_writer(catalogue)
    catalogue.open()  # in the session: the catalogue buffer's thread
    assert not catalogue.ready and "could not be opened" in caplog.text
    with pytest.raises(CatalogueNotReady, match="not open: (FileExistsError|NotADirectoryError)"):
        find_runs(catalogue, "S-1")
    write("start", {"uid": "u", "time": 0.0})  # logged, never raised into the RunEngine
    assert "not written" in caplog.text
    catalogue.close(1)


@pytest.mark.slow
def test_string_sample_metadata_runs_and_is_found(ns):
    """Stock bluesky's ``RE(plan, sample='S-1')``: no AttributeError anywhere (progress bar,
    table, recorder, catalogue), and find_runs finds it next to a run with a sample dict."""
    engine, detector = ns["RE"], ns["detector"]
    (text,) = engine(bp.count([detector]), sample="M-1")
    (mapping,) = engine(bp.count([detector]), sample={"id": "M-1"})
    engine(bp.count([detector]), sample="other")
    assert ns["flush"]()
    catalogue = ns["catalogue"]
    assert set(find_runs(catalogue, "M-1")) == {text, mapping}
    assert catalogue[text].metadata["stop"]["exit_status"] == "success"
    assert catalogue[text].metadata["start"]["sample"] == "M-1"


@pytest.mark.slow
def test_bec_finds_the_peaks_of_a_g2_scan_without_a_display(ns, monkeypatch):
    """No display: no plots, but the stats mean is hinted, so bec.peaks fills."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "minimal")
    engine, bec, tube = ns["RE"], ns["bec"], ns["tube"]
    assert bec.enable_plots() is False  # says why, plots stay off
    tube.shutter.set(1).wait(5)
    try:
        engine(bp.scan([ns["detector"]], ns["g2"], 0, 4.8, 9))
    finally:
        tube.shutter.set(0).wait(5)
    key = "detector_stats1_mean_value"
    assert set(bec.peaks["cen"]) == {key}
    low, high = bec.peaks["min"][key][1], bec.peaks["max"][key][1]
    assert 0 <= bec.peaks["cen"][key] <= 4.8 and high > low > 1000  # open beam, fringes
    assert bec._plots_enabled is False


@pytest.mark.slow
def test_last_run_and_derived_rows_carry_their_run_and_sample(ns):
    engine = ns["RE"]
    (uid,) = engine(ns["darkfield_projection"](ns["instrument"], steps=3, dark_frames=1,
                                              exposure_s=1.0, sample={"id": "D-1"}))
    engine(bp.count([ns["detector"]]), sample="after")  # a later raw run, not phase stepping
    assert ns["flush"]()
    catalogue = ns["catalogue"]
    assert last_run(catalogue).metadata["start"]["sample"] == "after"
    derived = last_run(catalogue, derived=True)
    assert derived.metadata["start"]["parent_uid"] == uid
    assert derived.metadata["stop"]["exit_status"] == "success"
    rows = [row for row in ns["derived"] if row["run_uid"] == uid]
    assert rows and all(row["sample"] == "D-1" and row["derived_uid"] == derived.metadata["start"]["uid"]
                        for row in rows)
    with pytest.raises(TypeError):
        catalogue[-1]  # why last_run exists


@pytest.mark.slow
def test_use_working_point_moves_the_next_plans_start_and_records_it(ns):
    """An alignment scan, its report, one call: the next projection steps G2 from the working
    point (its reference fringes then have zero mean phase), and says so in its start document."""
    engine, instrument, documents = ns["RE"], ns["instrument"], ns["documents"]
    original = instrument.config
    period = original.instrument.gratings.g2_period_um
    g2 = dataclasses.replace(original.instrument.g2, start_um=1.5)  # away from any working point
    shifted = dataclasses.replace(original, instrument=dataclasses.replace(original.instrument, g2=g2))
    instrument.config = shifted
    try:
        (align,) = engine(ns["g2_alignment"](instrument, steps=12, periods=2, exposure_s=1.0))
        start, events, datums = documents.run(align)
        report = alignment_report(frames(events["primary"], datums), start["positions_um"], period, dark=102.0)
        point = report["working_point_um"]
        assert abs(point - shifted.instrument.g2.start_um) > 0.2  # a real change to see
        with pytest.raises(PlanArgumentError, match="G2 limits"):
            ns["use_working_point"](instrument, 14.9)
        assert instrument.config is shifted and instrument.working_point is None
        assert ns["use_working_point"](instrument, report) == pytest.approx(point)

        (uid,) = engine(ns["darkfield_projection"](instrument, steps=6, dark_frames=1, exposure_s=1.0))
        start, events, datums = documents.run(uid)
        positions = start["phase_stepping"]["positions_um"]
        assert positions[0] == pytest.approx(point)
        assert start["working_point_um"] == pytest.approx(point)
        assert [e["data"]["g2"] for e in events["reference"]] == pytest.approx(positions, abs=0.02)
        again = alignment_report(frames(events["reference"], datums), np.array(positions) - point, period,
                                 dark=102.0)
        assert abs(again["fringe_phase_rad"]) < 0.05
        (count,) = engine(bp.count([ns["detector"]]))
        assert documents.run(count)[0]["working_point_um"] == pytest.approx(point)
    finally:
        instrument.config, instrument.working_point = original, None


@pytest.mark.slow
def test_the_monitor_shows_a_run_whose_sample_is_a_string(RE, qtbot, tmp_path, caplog):
    from acquisition.monitor import MonitorWindow
    from acquisition.plans import darkfield_projection

    window = MonitorWindow()
    qtbot.addWidget(window)
    instrument = simulated_instrument(small_config(rows=32, cols=48), write_path=tmp_path / "raw")
    RE.subscribe(window.raw_callback)
    RE(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0), sample="S-7")
    qtbot.wait(50)
    assert "not shown" not in caplog.text
    assert "darkfield_projection S-7" in window.status.text()


# -- the whole session through IPython: exits and start time --------------------------------

EXITS = {"exit": "exit\n", "quit": "quit\n", "ctrl-d": ""}  # "" : end of input, as Ctrl-D


def _type_into_a_session(out, simulation, lines: str) -> dict:
    """``talbot-lau session --sim`` (small simulation) typed ``lines`` through stdin, which
    IPython reads with its simple prompt; its exit code, output and the seconds from its
    start to the line ``FIRST CELL``."""
    env = dict(os.environ, TALBOT_LAU_STATE=str(out.parent / "state"), PYTHONUNBUFFERED="1")
    errors = out.parent / "stderr.txt"  # a file: a full stderr pipe cannot stall the session
    started = time.monotonic()
    with open(errors, "w") as stderr, subprocess.Popen(session_command(out, simulation), stdin=subprocess.PIPE,
                                                       stdout=subprocess.PIPE, stderr=stderr, text=True,
                                                       env=env) as process:
        process.stdin.write(lines)
        process.stdin.close()
        first_cell, stdout = None, []
        for line in process.stdout:
            stdout.append(line)
            if first_cell is None and "FIRST CELL" in line:
                first_cell = time.monotonic() - started
        returncode = process.wait(timeout=180)
    return {"returncode": returncode, "stdout": "".join(stdout), "stderr": errors.read_text(),
            "first_cell": first_cell}


@pytest.fixture(scope="module")
def exits(tmp_path_factory, small_simulation):
    """The three ways out, each a session of its own, all started at once (independent:
    each its own folder and metadata); each typed a projection then its way out."""
    lines = ("print('FIRST', 'CELL')\n"
             "RE(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0), sample='S-1')\n")
    outs = {way: tmp_path_factory.mktemp(f"exit-{way}") / "data" for way in EXITS}
    with ThreadPoolExecutor(len(EXITS)) as pool:
        started = {way: pool.submit(_type_into_a_session, outs[way], small_simulation, lines + EXITS[way])
                   for way in EXITS}
        done = {way: future.result() for way, future in started.items()}
    cells = [d["first_cell"] for d in done.values() if d["first_cell"] is not None]
    if cells:
        print(f"\nsession start to the first cell, {len(EXITS)} sessions starting at once on "
              f"{os.cpu_count()} cores: median {statistics.median(cells):.2f} s, max {max(cells):.2f} s")
    return {way: dict(done[way], out=outs[way]) for way in EXITS}


@pytest.mark.slow
@pytest.mark.parametrize("way", list(EXITS))
def test_each_way_out_ends_with_0_after_everything_is_written(exits, way):
    """``talbot-lau session --sim`` driven through stdin (IPython's simple prompt), ended by
    ``exit``, ``quit`` or end of input (Ctrl-D): exit code 0, and only after the processor
    finished and the catalogue holds the raw run and its derived run, both with their stop
    document.  No flush() is typed: the exit itself writes everything.  The run takes its
    sample from stock bluesky's string metadata.  The fixture prints the time to the first cell."""
    done, out = exits[way], exits[way]["out"]
    assert done["returncode"] == 0, done["stderr"][-2000:]
    assert "Traceback" not in done["stderr"], done["stderr"][-2000:]
    assert done["first_cell"] is not None, done["stdout"][-2000:]
    assert done["first_cell"] < 60.0  # a hang, not a speed check: the figure is printed

    catalogue = open_catalogue(out / "catalogue", readable=[out])
    try:
        raw, derived = last_run(catalogue), last_run(catalogue, derived=True)
        assert raw.metadata["start"]["sample"] == "S-1"
        assert raw.metadata["stop"]["exit_status"] == "success"
        assert derived.metadata["start"]["parent_uid"] == raw.metadata["start"]["uid"]
        assert derived.metadata["stop"]["exit_status"] == "success"
        assert list(find_runs(catalogue, "S-1", derived=True)) == [derived.metadata["start"]["uid"]]
        assert len(derived["clusters"].read()) >= 1  # processed: its cluster table is there
    finally:
        catalogue.context.close()
    uid8 = raw.metadata["start"]["uid"][:8]
    assert (out / f"run_{uid8}.nxs").exists() and list(out.glob(f"derived_{uid8}*.h5"))
