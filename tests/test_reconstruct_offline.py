"""Offline reconstruction of a recorded run gives what the live processor gave."""

import copy
import json
import os
import shutil

import pytest

from acquisition.cli import main
from acquisition.instrument import simulated_instrument
from acquisition.processing.offline import reconstruct_run
from acquisition.storage.run_record_reader import RunRecordError, read_run_record
from acquisition.storage.run_recorder import run_recorder
from support import small_config
from recorded_runs import record_pleomorphic_run
from simulators.physics import Phantom, TissueSlab
from specimens import class_cluster


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory):
    """One recorded, live-processed run for the module (recording it is what costs)."""
    folder = tmp_path_factory.mktemp("recorded")
    path, live = record_pleomorphic_run(folder, small_config(rows=96, cols=96))
    return folder, path.name, live


@pytest.fixture
def recorded_run(pristine_run, tmp_path):
    """The module's run copied into ``tmp_path`` (record, ``raw/``, ``live/``): a test may
    break or delete its copy."""
    folder, name, live = pristine_run
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    return tmp_path / name, copy.deepcopy(live)


def test_offline_equals_live(recorded_run, tmp_path):
    path, live = recorded_run
    record = read_run_record(path)
    assert [r.decode() if isinstance(r, bytes) else r for r in record.frames["stream"]].count("primary") == 9
    rows = reconstruct_run(path, tmp_path / "offline")
    assert [(r["texture"], r["ratio"]) for r in rows] == [(c["texture"], round(c["ratio"], 4)) for c in live]
    assert rows[0]["texture"] == "pleomorphic"
    report = json.loads(next((tmp_path / "offline").glob("report_*.json")).read_text())
    assert report["clusters"] == rows


def test_cli_names_broken_inputs_and_keeps_going(recorded_run, tmp_path, capsys):
    path, _ = recorded_run
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    code = main(["reconstruct", str(broken), str(path), "--out", str(tmp_path / "cli")])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.h5: not a run record" in captured.err
    assert "1 clusters (pleomorphic" in captured.out
    # a raw frame file truncated after the run: the error names that file
    raw = next((tmp_path / "raw").glob("*.h5"))
    raw.write_bytes(raw.read_bytes()[:4000])
    with pytest.raises(OSError, match=raw.name):
        reconstruct_run(path, tmp_path / "again")
    with pytest.raises(RunRecordError, match="no such file"):
        read_run_record(tmp_path / "missing.nxs")


@pytest.mark.slow
def test_a_recorded_mosaic_is_stitched_and_classified(RE, tmp_path):
    import h5py

    from acquisition.plans import darkfield_mosaic

    phantom = Phantom(TissueSlab(), (class_cluster("coarse", (0.0, 0.0), seed=5),))
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw",
                                      phantom=phantom)
    RE.subscribe(run_recorder(tmp_path))
    (uid,) = RE(darkfield_mosaic(instrument, rows=1, columns=2, overlap=0.25, steps=3,
                                     dark_frames=1, exposure_s=1.0))
    rows = reconstruct_run(tmp_path / f"run_{uid[:8]}.nxs", tmp_path / "offline")
    with h5py.File(tmp_path / "offline" / f"derived_{uid[:8]}.h5", "r") as f:
        shape = f["entry/transmission/data"].shape
    assert shape[0] == 64 and 64 < shape[1] <= 2 * 64  # two tiles side by side, overlapping
    assert [r["texture"] for r in rows] == ["coarse"]  # the cluster, once, across the seam


def test_a_copied_run_folder_reconstructs_through_the_cli(recorded_run, tmp_path, capsys):
    """The run folder copied elsewhere and the original deleted: the frame files are found
    from the record's new folder, the clusters are the live processor's."""
    import shutil

    path, live = recorded_run
    copy = tmp_path / "copied" / "run-folder"
    copy.mkdir(parents=True)
    shutil.copy2(path, copy / path.name)
    shutil.copytree(tmp_path / "raw", copy / "raw")
    path.unlink()
    shutil.rmtree(tmp_path / "raw")
    code = main(["reconstruct", str(copy / path.name), "--out", str(copy / "offline")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"derived images and reports in {copy / 'offline'}" in captured.out
    report = json.loads(next((copy / "offline").glob("report_*.json")).read_text())
    assert [(r["texture"], r["ratio"]) for r in report["clusters"]] == [
        (c["texture"], round(c["ratio"], 4)) for c in live]
    import h5py

    with h5py.File(next((copy / "offline").glob("derived_*.h5")), "r") as f:
        assert f["entry/process/run_record/file_name"][()].decode() == f"../{path.name}"
        assert all(name.decode().startswith("../raw/") for name in f["entry/raw/frame_file"][()])
        assert f["entry/raw/data"][()].any()  # the virtual frames resolve in the copy


def test_a_failed_reconstruction_prints_no_success_line(recorded_run, tmp_path, capsys):
    import shutil

    path, _ = recorded_run
    shutil.rmtree(tmp_path / "raw")  # the record without its frames
    code = main(["reconstruct", str(path), "--out", str(tmp_path / "cli")])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 1 and "derived images" not in captured.out + captured.err
    assert len(lines) == 1 and "no such file" in lines[0] and path.name in lines[0], lines
    assert not list((tmp_path / "cli").glob("derived_*.h5"))  # no file left half-written


def test_each_frame_file_is_opened_once_and_closed(recorded_run, tmp_path, monkeypatch):
    from acquisition.storage import frames

    path, _ = recorded_run
    opened = []
    original = frames._open

    def counting(filename):
        opened.append(filename)
        return original(filename)

    monkeypatch.setattr(frames, "_open", counting)
    reconstruct_run(path, tmp_path / "once")
    files = {os.path.realpath(f) for f in read_run_record(path).frames["file"]}
    assert sorted(map(os.path.realpath, opened)) == sorted(files)  # once per file for the whole run
    assert frames.open_frame_files() == []
