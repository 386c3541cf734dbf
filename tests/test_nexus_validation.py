"""Run records checked by validators the project did not write: nexusformat's ``nxvalidate``
against NXtomo and ``nxcheck`` against the base classes, and punx; a moved record still
reads its frames.  One projection and one mosaic (every stream: reference darks, lag
flushes, fringe probes), recorded by the in-process twins on a small detector region."""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from acquisition.storage.frames import FrameLoader, FrameRef
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_mosaic, darkfield_projection
from acquisition.storage.run_record import IMAGE_KEYS, record_name
from acquisition.storage.run_record_reader import read_run_record
from acquisition.storage.run_recorder import run_recorder
from support import small_config, run_engine

pytestmark = pytest.mark.slow  # the module fixture records two runs; the validators run as subprocesses

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data-format.md"
SAMPLE = {"id": "V-1", "thickness_mm": 45, "description": "validator run"}


def record_run(out: Path, plan) -> SimpleNamespace:
    instrument = simulated_instrument(small_config(48, 64), write_path=out / "raw")
    documents = []
    with run_engine() as engine:
        engine.subscribe(lambda name, doc: documents.append((name, doc)))
        engine.subscribe(run_recorder(out))
        (uid,) = engine(plan(instrument))
        return SimpleNamespace(out=out, uid=uid, record=out / record_name(uid), documents=documents)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("validation")
    projection = record_run(base / "projection", lambda i: darkfield_projection(
        i, steps=3, dark_frames=1, sample=SAMPLE))
    mosaic = record_run(base / "mosaic", lambda i: darkfield_mosaic(
        i, rows=2, columns=2, steps=3, dark_frames=1, exposure_s=2.0, reference_exposure_s=1.0,
        reference_every=2, max_phase_drift_rad=0.5, sample=SAMPLE))
    return {"projection": projection, "mosaic": mosaic}


def tool(name: str) -> str:
    """A validator's console script: beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]' installs nexusformat and punx)")
    return found


def run(*command, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "NO_COLOR": "1"})
    done.stdout = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    return done


def totals(output: str) -> tuple[int, int]:
    """(warnings, errors) of an nxvalidate / nxcheck report."""
    warnings = re.search(r"Total number of warnings: (\d+)", output)
    errors = re.search(r"Total number of errors: (\d+)", output)
    assert warnings and errors, output[-2000:]
    return int(warnings.group(1)), int(errors.group(1))


def nxcheck_findings(output: str) -> set[tuple[str, str]]:
    """(path, message) of every warning or error nxcheck printed: a message belongs to the
    group, field or link named on the last header line above it."""
    findings, path = set(), None
    for line in output.splitlines():
        text = line.strip()
        header = re.match(r"(?:NX\w+|Field|Link|Attribute): (/\S*)$", text)
        if header:
            path = header.group(1)
        elif text and path and not text.startswith(("Total number", "Filename:", "Path:", "Definitions:")):
            findings.add((path, text))
    return findings


def documented_nxcheck_warnings() -> set[tuple[str, str]]:
    """The rows of docs/data-format.md's table of the nxcheck warnings that remain."""
    text = DOCS.read_text()
    section = text.split("## What the validators still report", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| nxcheck \| `(/[^`]+)` \| ([^|]+?) \|", section, re.M)
    assert rows, "no nxcheck rows in docs/data-format.md"
    return {(path, message.strip()) for path, message in rows}


@pytest.mark.parametrize("kind", ["projection", "mosaic"])
def test_nxvalidate_finds_an_nxtomo_entry_without_errors(runs, kind):
    done = run(tool("nxvalidate"), "-a", "NXtomo", str(runs[kind].record))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Application Definition: NXtomo" in done.stdout
    assert totals(done.stdout) == (0, 0), done.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["projection", "mosaic"])
def test_punx_validates_without_a_traceback_or_an_error(runs, kind):
    done = run(tool("punx"), "validate", str(runs[kind].record))
    assert done.returncode == 0 and "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    errors = re.search(r"^ERROR\s+(\d+)\s", done.stdout, re.M)
    assert errors and int(errors.group(1)) == 0, done.stdout[-3000:]


def test_the_nxcheck_warnings_are_exactly_the_documented_ones(runs):
    found = set()
    for kind in ("projection", "mosaic"):
        done = run(tool("nxcheck"), str(runs[kind].record))
        assert done.returncode == 0, done.stderr[-2000:]
        warnings, errors = totals(done.stdout)
        assert errors == 0, done.stdout
        findings = nxcheck_findings(done.stdout)
        assert len(findings) == warnings, done.stdout
        found |= findings
    assert found == documented_nxcheck_warnings()


def test_image_key_follows_the_stream_of_every_frame(runs):
    record = read_run_record(runs["mosaic"].record)
    with h5py.File(runs["mosaic"].record, "r") as f:
        keys = f["entry/instrument/detector/image_key"][()]
        exposures = f["entry/instrument/detector/count_time"][()]
    streams = [str(s) for s in record.frames["stream"]]
    assert set(streams) == {"dark", "reference_dark", "reference", "primary", "lag_flush", "phase_probe"}
    assert list(keys) == [IMAGE_KEYS.get(s, 3) for s in streams]
    assert Counter(keys)[0] == 12  # 4 tiles of 3 steps
    # the darks of the two exposures tell themselves apart by their count time (s)
    assert {(s, e) for s, e in zip(streams, exposures) if s.endswith("dark")} == {("dark", 2.0), ("reference_dark", 1.0)}


def test_a_moved_record_reads_its_frames_from_its_new_folder(runs, tmp_path, monkeypatch):
    original = runs["mosaic"]
    moved = tmp_path / "elsewhere" / "mosaic"
    shutil.copytree(original.out, moved)
    hidden = original.out / "raw-hidden"
    (original.out / "raw").rename(hidden)  # nothing may be read from the old place
    try:
        monkeypatch.chdir(tmp_path)
        record = read_run_record(Path("elsewhere/mosaic") / original.record.name)
        assert all(Path(f).resolve().parent == (moved / "raw").resolve() for f in record.frames["file"])
        with FrameLoader() as loader:
            frames = np.stack([loader(FrameRef(str(f), int(p)))
                               for f, p in zip(record.frames["file"], record.frames["point"])])
        with h5py.File(moved / original.record.name, "r") as f:
            stack = f["entry/data/data"][()]
        np.testing.assert_array_equal(stack, frames)
        assert stack.shape == (len(record.frames), 48, 64) and stack.max() > 0
    finally:
        hidden.rename(original.out / "raw")
