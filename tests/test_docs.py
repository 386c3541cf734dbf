"""Every command and snippet of README.md and docs/*.md runs as written and gives the
documented result (issue 13, part 2).

``MAP`` is the reviewed map from each code block (file, ``<!-- doc-test: NAME -->``) to
the test that runs it; :func:`test_every_documented_block_has_a_test` fails for a code
block without a marker, a marker without a test, a test map entry whose block is gone, and
a skip without a reason.  Blocks are read from the docs at test time (never copied here),
run through ``bash -c`` or a fresh Python, and made small only through the environment
(``tests/docs_snippets.py``): a replaced embedded configuration with a smaller detector
region and time scale, private Channel Access ports, headless Qt.

One IOC serves all Channel Access tests: the first command of the rehearsal in
docs/operating.md, ``talbot-lau ioc --prefix TL: --write-path /tmp/tl-frames``, as written
(its port through ``EPICS_CA_SERVER_PORT``).  The 0MQ proxy (5577/5578) and the catalogue
server (8000) listen on the ports the docs name: those must be free on 127.0.0.1.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from docs_snippets import (
    REPO,
    REPORT,
    Server,
    argv,
    block,
    code_blocks,
    commands,
    doc_env,
    finish,
    free_port,
    ipython_lines,
    parse_blocks,
    port_is_free,
    results,
    run_python,
    run_shell,
    start_python,
    write_configs,
)
from ioc_fixture import caget

README, OPERATING, CATALOGUE = "README.md", "docs/operating.md", "docs/catalogue.md"
HARDWARE, RECONSTRUCTION = "docs/hardware.md", "docs/reconstruction.md"
STUDY = "docs/study.md"

MAP = {
    (README, "readme-demo"): "test_demo_from_a_clone_scores_both_specimens_against_their_truth",
    (OPERATING, "demo"): "test_demo_from_a_clone_scores_both_specimens_against_their_truth",
    (OPERATING, "demo-report-header"): "test_demo_from_a_clone_scores_both_specimens_against_their_truth",
    (README, "readme-test-command"): "test_the_test_command_is_what_ci_runs",
    (OPERATING, "projection-from-python"): "test_a_projection_and_a_lab_day_from_python",
    (OPERATING, "lab-day"): "test_a_projection_and_a_lab_day_from_python",
    (OPERATING, "session-forms"): "test_the_session_forms_on_the_twins_and_over_channel_access",
    (OPERATING, "catalogue-server"): "test_the_session_forms_on_the_twins_and_over_channel_access",
    (OPERATING, "ioc-rehearsal"): "test_the_rehearsal_over_channel_access_with_the_monitor_equals_reconstruct",
    (OPERATING, "zmq-remote"): "test_processor_monitor_and_proxy_over_zmq",
    (CATALOGUE, "catalogue-in-process"): "test_the_catalogue_in_process_and_behind_a_tiled_server",
    (CATALOGUE, "catalogue-server-command"): "test_the_catalogue_in_process_and_behind_a_tiled_server",
    (CATALOGUE, "catalogue-client"): "test_the_catalogue_in_process_and_behind_a_tiled_server",
    (CATALOGUE, "tiled-serve-by-hand"): "test_the_tiled_command_by_hand_is_the_one_the_package_builds",
    (HARDWARE, "epics-instrument"): "test_epics_instrument_against_the_twins",
    (HARDWARE, "ioc-synopsis"): "test_the_ioc_synopsis_is_its_command_line",
    (RECONSTRUCTION, "reconstruction-api"): "test_the_reconstruction_api_is_as_documented",
    (RECONSTRUCTION, "hdf5-example"): "test_the_hdf5_example_classifies_the_clusters_as_the_truth",
    (STUDY, "study-small"): "test_the_small_study_writes_its_report",
}
"""(doc file, marker name) -> the test that runs that block as written."""

SKIPPED: set[tuple[str, str]] = set()
"""(doc file, reason) of the blocks marked ``doc-test: skip (reason)``, reviewed: none at
present (even the lab's own prefix and write path run here, against the IOC twins)."""

REGION_12 = (608, 746, 320, 432)
"""A detector region holding all 12 clusters of the embedded phantom (3 of each class)."""
REGION_2 = (736, 880, 48, 160)
"""A region holding a fine and a pleomorphic cluster of the embedded phantom."""
TIME_SCALE = 0.0005
TL_FRAMES = Path("/tmp/tl-frames")
"""The IOC's write path in docs/operating.md."""
PROJECTION = "steps=5, dark_frames=1, exposure_s=1.0"
"""A short projection for the sessions' stdin (their embedded default is 9 x 9 s)."""


# --- the map ---------------------------------------------------------------------------------

def test_every_documented_block_has_a_test():
    problems = []
    found = set()
    for b in code_blocks():
        if b.marker is None:
            problems.append(f"{b.where}: no <!-- doc-test: NAME --> marker (add one and a test "
                            "in tests/test_docs.py's MAP, or <!-- doc-test: skip (reason) -->)")
        elif b.skip_reason is not None:
            if not b.skip_reason:
                problems.append(f"{b.where}: a skip needs its reason: <!-- doc-test: skip (reason) -->")
            elif (b.path, b.skip_reason) not in SKIPPED:
                problems.append(f"{b.where}: skipped ({b.skip_reason}) but not in SKIPPED, "
                                "the reviewed list of skips")
        elif (b.path, b.name) not in MAP:
            problems.append(f"{b.where}: marker {b.name!r} has no test in MAP")
        elif (b.path, b.name) in found:
            problems.append(f"{b.where}: marker {b.name!r} used twice in {b.path}")
        else:
            found.add((b.path, b.name))
    problems += [f"MAP: {key} names no code block of the docs" for key in MAP if key not in found]
    problems += [f"MAP: {key} -> {test}: no such test" for key, test in MAP.items()
                 if not callable(globals().get(test))]
    problems += [f"MAP: {key} -> {test}: the test never reads that block" for key, test in MAP.items()
                 if callable(globals().get(test)) and f'"{key[1]}"' not in _reached_source(test)]
    assert not problems, "\n".join(problems)


def _reached_source(name: str) -> str:
    """The source of the test ``name``, of the fixtures and functions of this module it
    names, of those they name, and so on."""
    seen, todo, text = set(), [name], []
    while todo:
        current = todo.pop()
        item = globals().get(current)
        if current in seen or not callable(item) or getattr(item, "__module__", None) != __name__:
            continue
        seen.add(current)
        source = inspect.getsource(item)
        text.append(source)
        todo += re.findall(r"\b[a-z_][a-z0-9_]*\b", source)
    return "\n".join(text)


def test_the_harness_finds_blocks_markers_and_commands():
    text = ("a\n\n<!-- doc-test: one -->\n```sh\nx --a \\\n  --b   # c\n\n# only a comment\ny\n```\n"
            "<!-- doc-test: skip (no lab here) -->\n```python\nz = 1\n```\n```text\nlayout\n```\n"
            "```\nbare\n```\n")
    found = parse_blocks(text, "t.md")
    assert [(b.language, b.marker, b.is_code) for b in found] == [
        ("sh", "one", True), ("python", "skip (no lab here)", True), ("text", None, False), ("", None, True)]
    assert found[1].skip_reason == "no lab here" and found[1].name is None and found[0].name == "one"
    assert commands(found[0].text) == ["x --a \\\n  --b   # c", "y"]
    assert argv("A=1 B=2 \\\n  talbot-lau x --y   # z") == ["talbot-lau", "x", "--y"]


# --- helpers ---------------------------------------------------------------------------------

def assert_as_the_truth(configs: Path, rows: list[dict], expected: Counter, stage_mm=None) -> None:
    """Each true cluster in the field found once, at its place (``acquisition.truth_matching``),
    no false cluster, and each with the mu/eps the physics of the specimen gives (the
    noise-free value, within 10 %) and the Table 1 class of its measured mu/eps.  ``expected``:
    the classes the clusters were drawn as (the specimen's truth)."""
    from acquisition.config import load_config
    from acquisition.study import true_ratios
    from acquisition.storage.tissue_calibration_file import tissue_correction
    from acquisition.truth_matching import Detection, score_detections
    from reconstruction.microtexture import texture_of
    from simulators.physics import build_phantom

    config = load_config(configs / "instrument.yaml", configs / "simulation.yaml")
    phantom = build_phantom(config.simulation.phantom)
    stage = tuple(config.instrument.stage.sample_position_mm if stage_mm is None else stage_mm)
    noise_free = true_ratios(config.setup, phantom, config, tissue_correction(config), stage_mm=stage)
    detections = [Detection((r["centroid_row"], r["centroid_col"]), r["ratio"], r["texture"],
                            bool(r.get("suspicious")), int(r.get("n_pixels", 0))) for r in rows]
    truth, false = score_detections(config.setup, phantom, stage, detections, noise_free)
    in_field = [r for r in truth if r["x_mm"] is not None]
    assert Counter(r["true_class"] for r in in_field) == expected, in_field
    assert not false and all(r["detected"] for r in in_field), (false, in_field)
    for r in in_field:
        assert r["ratio"] == pytest.approx(r["true_ratio"], rel=0.1), r
        assert r["measured_class"] == texture_of(r["ratio"])[0], r


def noise_free_textures(configs: Path, stage_mm=None) -> list[str]:
    """Sorted Table 1 classes of the noise-free mu/eps of the clusters in the field of the
    configuration in ``configs``: what a measurement of that specimen should classify."""
    from acquisition.config import load_config
    from acquisition.study import true_ratios
    from acquisition.storage.tissue_calibration_file import tissue_correction
    from simulators.physics import build_phantom

    config = load_config(configs / "instrument.yaml", configs / "simulation.yaml")
    phantom = build_phantom(config.simulation.phantom)
    stage = tuple(config.instrument.stage.sample_position_mm if stage_mm is None else stage_mm)
    found = true_ratios(config.setup, phantom, config, tissue_correction(config), stage_mm=stage)
    return sorted(row["texture"] for row in found.values())


TWELVE = Counter({"ultra-fine": 3, "fine": 3, "pleomorphic": 3, "coarse": 3})


def derived_clusters(path: Path) -> list[dict]:
    """The cluster table of a derived file as rows."""
    with h5py.File(path, "r") as f:
        table = f["entry/clusters"]
        columns = {name: table[name][()] for name in table if isinstance(table[name], h5py.Dataset)}
    count = len(columns["label"])
    return [{name: (value[i].decode() if isinstance(value[i], bytes) else value[i].item())
             for name, value in columns.items()} for i in range(count)]


DERIVED_IMAGES = ("transmission", "dark_field", "differential_phase", "absorption", "scattering", "labels")


def assert_same_derived(live: Path, offline: Path) -> None:
    """The images and the cluster tables of two derived files, equal pixel for pixel."""
    with h5py.File(live, "r") as a, h5py.File(offline, "r") as b:
        for name in DERIVED_IMAGES:
            np.testing.assert_array_equal(a[f"entry/{name}/data"][()], b[f"entry/{name}/data"][()], err_msg=name)
    assert derived_clusters(live) == derived_clusters(offline)


def session_lines(sample: str, *extra: str) -> str:
    """What the tests type into ``talbot-lau session``: a short projection, ``flush()``,
    then one result line (the run's uid, the processor's cluster rows, the shutter)."""
    return ipython_lines(
        *extra,
        f"uids = RE(darkfield_projection(instrument, {PROJECTION}, sample={{'id': {sample!r}}}))",
        "print('FLUSHED', flush())",
        "import json",
        "print('DOCTEST-RESULT ' + json.dumps({'uid': list(getattr(uids, 'run_start_uids', uids))[0], "
        "'derived': derived, 'shutter': int(tube.shutter.get())}, default=str))",
    )


def assert_session_ran(done: subprocess.CompletedProcess, what: str) -> dict:
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "FLUSHED True" in done.stdout, f"{what}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stdout + done.stderr, f"{what}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    found = results(done.stdout)
    assert found["shutter"] == 0
    return found


def require_free(*ports: int) -> None:
    busy = [port for port in ports if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} on 127.0.0.1, which the docs' commands use, are in use")


def wait_for_catalogue(url: str, key_file: Path, timeout: float = 60.0):
    from acquisition.storage.catalogue import connect_catalogue

    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect_catalogue(url, api_key_file=key_file)
        except Exception:  # not serving yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def configs_12(tmp_path_factory):
    """The embedded configuration on a region with all 12 clusters, a short time scale, and
    the rehearsal IOC's write path as ``epics.write_path``."""
    return write_configs(tmp_path_factory.mktemp("configs-12"), region=REGION_12,
                         time_scale=TIME_SCALE, write_path=TL_FRAMES)


@pytest.fixture(scope="module")
def configs_2(tmp_path_factory):
    return write_configs(tmp_path_factory.mktemp("configs-2"), region=REGION_2, time_scale=TIME_SCALE)


def start_tl_ioc(tmp: Path, configs: Path) -> tuple[Server, dict]:
    """The rehearsal's IOC, ``talbot-lau ioc --prefix TL: --write-path /tmp/tl-frames`` as
    written, on a port of its own (``EPICS_CA_SERVER_PORT``, which clients also use for the
    ``EPICS_CA_ADDR_LIST`` entries without a port); (the server, the clients' extra environment)."""
    first = commands(block(OPERATING, "ioc-rehearsal").text)[0]
    port = free_port()
    ca = {"EPICS_CA_SERVER_PORT": port, "EPICS_CA_REPEATER_PORT": free_port()}
    return Server(first, tmp, doc_env(tmp, configs, **ca)), ca


def wait_until_serving(ioc: Server, port: int) -> None:
    ioc.wait_for(rf"serving TL:g2, .* on 127\.0\.0\.1 port {port}; .* files under /tmp/tl-frames only")
    deadline = time.monotonic() + 30
    while True:
        try:
            caget("TL:tube:State_RBV", port, timeout=0.5)
            return
        except TimeoutError:
            assert time.monotonic() < deadline and ioc.process.poll() is None, ioc.output[-3000:]


@pytest.fixture(scope="module")
def tl_iocs(tmp_path_factory, configs_12):
    """Two such IOCs (each plan that moves and exposes gets one of its own, and a session
    closes its IOC's shutter when it ends); yields their clients' extra environments."""
    before = set(TL_FRAMES.rglob("*")) if TL_FRAMES.is_dir() else set()
    started = [start_tl_ioc(tmp_path_factory.mktemp("tl-ioc"), configs_12) for _ in range(2)]
    try:
        for ioc, ca in started:
            wait_until_serving(ioc, ca["EPICS_CA_SERVER_PORT"])
        yield [ca for _, ca in started]
        for ioc, _ in started:
            assert ioc.process.poll() is None, ioc.output[-3000:]
    finally:
        statuses = [ioc.stop() for ioc, _ in started]
        for path in sorted(set(TL_FRAMES.rglob("*")) - before, reverse=True):  # the frames written here
            if path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    assert statuses == [0, 0], [ioc.output[-3000:] for ioc, _ in started]  # Ctrl-C ends them quietly


# --- README and the demo ---------------------------------------------------------------------------

def _clone(destination: Path) -> Path:
    """The repository's files (tracked and new, not ignored), as a fresh clone has them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.mark.slow
def test_demo_from_a_clone_scores_both_specimens_against_their_truth(tmp_path):
    """README's main command on a copy of the repository: pip installs the package (into a
    virtual environment that sees this one's dependencies) and the demo runs on the embedded
    configuration; report.json's 12 clusters are classified as the truth of the phantom."""
    command = block(README, "readme-demo").text.strip()
    assert block(OPERATING, "demo").text.strip() in command  # operating.md's demo is its second half
    clone = _clone(tmp_path / "clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = doc_env(tmp_path)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = run_shell(command, clone, env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import acquisition; print(acquisition.__file__)"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(venv) in installed  # the demo ran from the installed package, not this tree

    header = block(OPERATING, "demo-report-header").text.strip()
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    assert lines.count(header) == 2  # one table per specimen
    out = clone / "demo-output"
    report = json.loads((out / "report.json").read_text())
    block_, breast = report["specimens"]
    assert (block_["sample"], breast["sample"]) == ("demo-paraffin-block", "demo-breast")
    for specimen in (block_, breast):
        rows = specimen["clusters"]
        assert specimen["true_clusters"] == len(rows) == 12
        assert Counter(r["true_class"] for r in rows) == TWELVE
        assert specimen["class_correct"] == sum(r["measured_class"] == r["true_class"] for r in rows)
        assert (f"{specimen['class_correct']} of 12 true clusters classified as the truth says "
                f"({specimen['detected']} detected; suspicious above mu/eps = 0.33)") in lines
        assert specimen["detected"] >= 11 and len(specimen["misses"]) == 12 - specimen["detected"]
        for r in filter(lambda r: r["detected"], rows):
            assert r["suspicious"] == (r["ratio"] > 0.33), r
            assert r["ratio"] == pytest.approx(r["true_ratio"], rel=0.15), r
    assert not block_["false_clusters"]  # a uniform paraffin block makes none
    assert list((out / "raw").glob("*.h5")) and list(out.glob("run_*.nxs")) and list(out.glob("derived_*.h5"))


def test_the_test_command_is_what_ci_runs():
    """The README's test command is the one .ci/run extracts and runs, its extra is
    declared and installed here, and pytest collects these doc tests from it."""
    command = block(README, "readme-test-command").text.strip()
    ci = (REPO / ".ci" / "run").read_text()
    extract = re.search(r"command=\$\((awk .*README\.md)\)", ci)
    assert extract, ".ci/run no longer extracts the README's test command"
    extracted = subprocess.run(["bash", "-c", extract.group(1)], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    assert extracted == command
    assert re.search(r'eval "\$command"', ci)
    assert "pytest" in command and "'.[test]'" in command
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for requirement in project["project"]["optional-dependencies"]["test"]:
        name = re.split(r"[<>=!~\[ ]", requirement)[0]
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    assert not missing
    assert project["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert Path(__file__).parent == REPO / "tests" and Path(__file__).name.startswith("test_")


# --- Python in operating.md -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_projection_and_a_lab_day_from_python(tmp_path, configs_2):
    """The two Python blocks of operating.md in one interpreter, as written (the second uses
    the first's ``RE`` and ``instrument``), on a region with a fine and a pleomorphic
    cluster: both projections find them as they are, and the mosaic is stitched."""
    source = block(OPERATING, "projection-from-python").text + block(OPERATING, "lab-day").text
    done = run_python(source, tmp_path, doc_env(tmp_path, configs_2), epilogue=REPORT + "report(done=True)",
                      timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert results(done.stdout) == {"done": True}
    derived = tmp_path / "derived"
    tiles = sorted(derived.glob("derived_*_tile*.h5"))
    assert len(tiles) == 16
    mosaic_uid8 = {path.name.split("_")[1] for path in tiles}
    assert len(mosaic_uid8) == 1
    (stitched,) = [path for path in derived.glob("derived_*.h5") if path.stem.split("_")[1] in mosaic_uid8
                   and "_tile" not in path.name]
    projections = [path for path in derived.glob("derived_*.h5") if path.stem.split("_")[1] not in mosaic_uid8]
    assert len(projections) == 2  # the first block's and the lab day's
    for path in projections:
        assert_as_the_truth(configs_2, derived_clusters(path), Counter({"fine": 1, "pleomorphic": 1}))
    mosaic = Counter(row["texture"] for row in derived_clusters(stitched))
    projected = Counter(row["texture"] for row in derived_clusters(projections[0]))
    assert all(mosaic[texture] >= count for texture, count in projected.items()), (mosaic, projected)
    assert "'texture': '" in done.stdout  # publish=print: the derived documents were printed


# --- the session --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sessions(tmp_path_factory, configs_12, tl_iocs):
    """The session forms and the rehearsal of docs/operating.md, as written, in three chains
    of processes at once (no two plans on one IOC, and no session ending on an IOC while a
    plan runs there): the in-process twins with the monitor, typed a projection, then the
    catalogue server on its data; the rehearsal on IOC 1, typed a projection, then
    ``talbot-lau reconstruct`` of its run; the lab.yaml form on IOC 2, typed a projection,
    then the ``--ioc TL: --monitor`` form on IOC 2."""
    sim, ioc, lab = commands(block(OPERATING, "session-forms").text)
    rehearsal = commands(block(OPERATING, "ioc-rehearsal").text)[1]
    root = tmp_path_factory.mktemp("sessions")
    cwd = {name: root / name for name in ("sim", "ioc", "lab", "rehearsal")}
    for path in cwd.values():
        path.mkdir()
    lab_yaml = write_configs(root / "lab-configs", write_path=TL_FRAMES) / "instrument.yaml"
    shutil.copy(lab_yaml, cwd["lab"] / "lab.yaml")  # prefix TL: (the embedded one), frames where the IOC writes
    ioc_1, ioc_2 = tl_iocs

    def session(name, command, ca, stdin):
        return run_shell(command, cwd[name], doc_env(cwd[name], configs_12, **ca), stdin=stdin, timeout=240)

    def sim_then_served():
        done = session("sim", sim, {}, session_lines("doc-sim", "%mov g2 1.6", "%wa"))
        return done, serve_the_catalogue_of(cwd["sim"], results(done.stdout).get("uid", "none"))

    def rehearsal_then_offline():
        done = session("rehearsal", rehearsal, ioc_1, session_lines("doc-rehearsal"))
        uid = results(done.stdout).get("uid", "none")
        return done, run_shell(f"talbot-lau reconstruct talbot-lau-data/run_{uid[:8]}.nxs --out offline",
                               cwd["rehearsal"], doc_env(cwd["rehearsal"], configs_12))

    def lab_then_connected():  # the second session on IOC 2 starts once the lab's plan ended
        done = session("lab", lab, ioc_2, session_lines("doc-lab"))
        return done, session("ioc", ioc, ioc_2, ipython_lines(
            "%wa", "print('DOCTEST-RESULT ' + __import__('json').dumps({'devices': "
            "[type(d).__name__ for d in instrument.devices], 'monitor': type(monitor).__name__}))"))

    with ThreadPoolExecutor(3) as pool:
        chains = [pool.submit(chain) for chain in (sim_then_served, rehearsal_then_offline, lab_then_connected)]
        (sim_done, served), (rehearsal_done, offline), (lab_done, connected) = [c.result() for c in chains]
    done = {"sim": sim_done, "rehearsal": rehearsal_done, "lab": lab_done, "ioc": connected, "offline": offline}
    return {"cwd": cwd, "done": done, "served": served}


def serve_the_catalogue_of(cwd: Path, uid: str) -> dict:
    """operating.md's catalogue server on a session's ``data``: what comes back through it."""
    require_free(8000)
    from acquisition.storage.catalogue import find_runs

    (serve,) = commands(block(OPERATING, "catalogue-server").text)
    found = {}
    with Server(serve, cwd, doc_env(cwd)) as server:
        server.wait_for(r"serving data/catalogue at http://127\.0\.0\.1:8000")
        client = wait_for_catalogue("http://127.0.0.1:8000", cwd / "data/catalogue/api_key")
        try:
            runs = find_runs(client, "doc-sim")
            found["runs"] = list(runs)
            frames = runs[uid]["primary"]["detector_image"].read()
            found["frames"] = (frames.shape, str(frames.dtype))
            derived = find_runs(client, "doc-sim", derived=True)
            found["derived"] = {key: np.asarray(derived[key]["images"]["scattering"].read()) for key in derived}
        finally:
            client.context.close()
        found["key"] = (cwd / "data/catalogue/api_key").read_text().strip()
    found["output"] = server.output
    return found


@pytest.mark.slow
def test_the_session_forms_on_the_twins_and_over_channel_access(sessions, configs_12):
    """The three forms of ``talbot-lau session`` as written, typed into through IPython: the
    in-process twins with the monitor and the EPICS instrument of a lab.yaml (the IOC twins)
    without it each take a projection and find the 12 clusters as the truth says; the IOC
    twins at TL: with the monitor connect, show ``%wa`` and the monitor (the rehearsal test
    has a projection over Channel Access with the monitor).  The catalogue server of
    operating.md serves the first session's run, frames and derived images, and never shows
    its API key."""
    cwd, done = sessions["cwd"], sessions["done"]
    for name, kind in (("sim", "simulated"), ("lab", "EPICS (TL:)")):
        found = assert_session_ran(done[name], name)
        assert f"talbot-lau session: {kind} instrument" in done[name].stdout
        assert_as_the_truth(configs_12, found["derived"], TWELVE)
        uid8 = found["uid"][:8]
        assert (cwd[name] / "data" / f"run_{uid8}.nxs").is_file()
        assert (cwd[name] / "data" / f"derived_{uid8}.h5").is_file()
    assert re.search(r"^\s*g2\s+1\.6\s", done["sim"].stdout, re.MULTILINE)  # %wa after %mov
    on_ioc = done["ioc"]
    assert on_ioc.returncode == 0 and "Traceback" not in on_ioc.stdout + on_ioc.stderr, \
        on_ioc.stdout[-2000:] + on_ioc.stderr[-3000:]
    assert "talbot-lau session: EPICS (TL:) instrument" in on_ioc.stdout
    assert re.search(r"^\s*g2\s+-?[\d.]+\s", on_ioc.stdout, re.MULTILINE)
    assert results(on_ioc.stdout) == {"devices": ["XRayTube", "PiezoStepper", "SampleStage", "PaxScanDetector"],
                                      "monitor": "MonitorWindow"}

    served, uid = sessions["served"], results(done["sim"].stdout)["uid"]
    assert served["runs"] == [uid]
    assert served["frames"] == ((5, *REGION_12[2:]), "uint16")
    with h5py.File(cwd["sim"] / "data" / f"derived_{uid[:8]}.h5", "r") as f:
        written = f["entry/scattering/data"][()]
    (image,) = served["derived"].values()
    np.testing.assert_array_equal(image.reshape(written.shape), written)
    assert served["key"] and served["key"] not in served["output"]


@pytest.mark.slow
def test_the_rehearsal_over_channel_access_with_the_monitor_equals_reconstruct(sessions, configs_12):
    """docs/operating.md's rehearsal: the IOC twins (``tl_iocs``: its first command) and the
    session over Channel Access with the monitor, as written; the live derived images equal
    ``talbot-lau reconstruct`` of the run pixel for pixel, with the 12 clusters as the truth."""
    cwd, done = sessions["cwd"]["rehearsal"], sessions["done"]
    found = assert_session_ran(done["rehearsal"], "rehearsal")
    assert "talbot-lau session: EPICS (TL:) instrument" in done["rehearsal"].stdout
    assert_as_the_truth(configs_12, found["derived"], TWELVE)
    uid8 = found["uid"][:8]
    offline = done["offline"]
    assert offline.returncode == 0, offline.stderr
    assert f"run_{uid8}.nxs: 12 clusters" in offline.stdout
    data = cwd / "talbot-lau-data"
    assert_same_derived(data / f"derived_{uid8}.h5", cwd / "offline" / f"derived_{uid8}.h5")
    from acquisition.storage.run_record_reader import read_run_record  # frame files resolved against the record's folder
    files = set(read_run_record(data / f"run_{uid8}.nxs").frames["file"])
    assert all(Path(f).parent.resolve().is_relative_to(TL_FRAMES.resolve()) for f in files), files


# --- 0MQ and the catalogue -------------------------------------------------------------------------

CATALOGUE_INTERLUDE = REPORT + """
report(frames=list(frames.shape), dtype=str(frames.dtype), g2_um=[float(v) for v in g2_um])
_reopened = open_catalogue("runs/")
_derived = find_runs(_reopened, "S-17", derived=True)
report(derived=len(_derived), textures=sorted(str(t) for uid in _derived
                                              for t in _derived[uid]["clusters"]["texture"].read()))
_reopened.context.close()
import time as _time
from acquisition.storage.catalogue import connect_catalogue as _connect
for _ in range(600):  # the server starts when the 0MQ session has written talbot-lau-data
    try:
        _connect("http://127.0.0.1:8000", api_key_file="talbot-lau-data/catalogue/api_key").context.close()
        break
    except Exception:
        _time.sleep(0.2)
"""
"""Between catalogue.md's two Python blocks: what the first gave, and a wait for the server."""

CATALOGUE_EPILOGUE = REPORT + """
engine(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0, sample={"id": "S-17"}))
report(through_server=len(find_runs(client, "S-17")))
_runs = find_runs(client, "doc-zmq")
report(served_frames=[list(_runs[uid]["primary"]["detector_image"].read().shape) for uid in _runs])
client.context.close()
"""
"""After catalogue.md's client block: a run written through the server is found there, and
the 0MQ session's frames are served from its readable directories."""


@pytest.fixture(scope="module")
def zmq_run(tmp_path_factory, configs_12, configs_2):
    """docs/operating.md's four 0MQ commands as written: the proxy, the processor and the
    monitor as servers, the session started with them and typed a projection once they
    listen; at the same time, in the same directory, docs/catalogue.md's in-process block
    (its client block follows once catalogue.md's server command serves this session's
    ``talbot-lau-data``).  Yields what they printed and wrote."""
    require_free(5577, 5578, 8000)
    proxy, processor, monitor, session = commands(block(OPERATING, "zmq-remote").text)
    (serve,) = commands(block(CATALOGUE, "catalogue-server-command").text)
    cwd = tmp_path_factory.mktemp("zmq")
    env = doc_env(cwd, configs_12)
    catalogue = start_python(block(CATALOGUE, "catalogue-in-process").text + CATALOGUE_INTERLUDE
                             + block(CATALOGUE, "catalogue-client").text, cwd, doc_env(cwd, configs_2),
                             epilogue=CATALOGUE_EPILOGUE)
    typing = subprocess.Popen(["bash", "-c", session], cwd=cwd, env=env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with Server(proxy, cwd, env) as p, Server(processor, cwd, env) as worker, \
                Server(monitor, cwd, env) as window:
            p.wait_for(r"0MQ proxy: publishers to tcp://127\.0\.0\.1:5577, subscribers from tcp://127\.0\.0\.1:5578;")
            worker.wait_for(r"processing documents from 127\.0\.0\.1:5578 into derived; "
                            r"derived runs to 127\.0\.0\.1:5577")
            window.wait_for(r"monitoring documents from 127\.0\.0\.1:5578")
            time.sleep(1.0)  # 0MQ subscriptions reach the proxy after the connection
            out, err = typing.communicate(session_lines("doc-zmq"), timeout=240)
            done = subprocess.CompletedProcess(typing.args, typing.returncode, out, err)
            uid = results(out).get("uid", "none")
            derived = cwd / "derived" / f"derived_{uid[:8]}.h5"
            deadline = time.monotonic() + 60
            while not derived.is_file() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            statuses = {"processor": worker.stop(), "monitor": window.stop(), "proxy": p.stop()}
        with Server(serve, cwd, doc_env(cwd)) as server:
            in_process = finish(catalogue, timeout=240)
            server.wait_for(r"serving talbot-lau-data/catalogue at http://127\.0\.0\.1:8000")
    finally:
        for process in (typing, catalogue):
            if process.poll() is None:
                process.kill()
                process.wait()
    yield {"cwd": cwd, "session": done, "derived": derived, "statuses": statuses, "processor": worker.output,
           "monitor": window.output, "proxy": p.output, "catalogue": in_process, "server": server.output}


@pytest.mark.slow
def test_processor_monitor_and_proxy_over_zmq(zmq_run, configs_12):
    """The remote processor records the run and writes the derived images with the 12
    clusters as the truth; the session's own processor agrees; every server answered Ctrl-C."""
    found = assert_session_ran(zmq_run["session"], "session --publish")
    assert zmq_run["derived"].is_file(), zmq_run["processor"][-3000:]
    remote = derived_clusters(zmq_run["derived"])
    assert_as_the_truth(configs_12, remote, TWELVE)
    assert sorted(r["texture"] for r in remote) == sorted(r["texture"] for r in found["derived"])
    assert (zmq_run["cwd"] / "derived" / f"run_{found['uid'][:8]}.nxs").is_file()
    for name in ("processor", "monitor", "proxy"):
        assert "Traceback" not in zmq_run[name], zmq_run[name][-3000:]
    assert zmq_run["statuses"] == {"processor": 0, "monitor": 0, "proxy": 0}, zmq_run


@pytest.mark.slow
def test_the_catalogue_in_process_and_behind_a_tiled_server(zmq_run, configs_2):
    """docs/catalogue.md: the in-process block; then its server command on the 0MQ session's
    ``talbot-lau-data`` and its client block in the same interpreter (the in-process block's
    ``engine`` and ``instrument`` carry on): the frames, G2 positions and derived runs come
    back, runs are written and found through the server, and its frames are served."""
    done = zmq_run["catalogue"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = results(done.stdout)
    steps = 9  # the embedded scan
    assert found["frames"] == [steps, *REGION_2[2:]] and found["dtype"] == "uint16"
    assert len(found["g2_um"]) == steps and np.all(np.diff(found["g2_um"]) > 0)
    assert found["derived"] == 1 and sorted(found["textures"]) == noise_free_textures(configs_2)
    assert found["through_server"] == 1
    assert found["served_frames"] == [[5, *REGION_12[2:]]]
    key = (zmq_run["cwd"] / "talbot-lau-data/catalogue/api_key").read_text().strip()
    assert key not in zmq_run["server"]


def test_the_tiled_command_by_hand_is_the_one_the_package_builds():
    """The by-hand ``tiled serve`` of docs/catalogue.md names a lab's paths (/srv/runs), so it
    is checked against what ``server_command`` builds for that directory (the server itself
    runs in the catalogue tests), and the key travels in the environment."""
    from acquisition.storage.catalogue import TILED_KEY_ENV, server_command

    (command,) = commands(block(CATALOGUE, "tiled-serve-by-hand").text)
    assert command.startswith(f'{TILED_KEY_ENV}="$(cat key-file)" ')
    words = argv(command)
    built = server_command("/srv/runs")  # readable dirs: in /srv/runs/tiled.yml (open_catalogue)
    assert built[1:3] == ["-m", "tiled"] and words[0] == "tiled"
    assert words[1:] == built[3:]


# --- hardware.md --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_epics_instrument_against_the_twins(tmp_path, configs_12, tl_iocs):
    """hardware.md's three instruments: the lab's (the config's prefix TL:, served here by
    the IOC twins), the same classes at an explicit prefix, and the in-process twins."""
    epilogue = REPORT + (
        "report(lab=[type(d).__name__ for d in lab.devices], twin=[type(d).__name__ for d in twin_over_ca.devices],\n"
        "       sim=[type(d).__name__ for d in in_process.devices],\n"
        "       connected=all(d.connected for d in lab.devices + twin_over_ca.devices),\n"
        "       kv=twin_over_ca.tube.kv.get(), prefix=lab.tube.prefix)\n")
    done = run_python(block(HARDWARE, "epics-instrument").text, tmp_path, doc_env(tmp_path, configs_12, **tl_iocs[0]),
                      epilogue=epilogue, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = results(done.stdout)
    epics = ["XRayTube", "PiezoStepper", "SampleStage", "PaxScanDetector"]
    assert found["lab"] == epics and found["twin"] == epics and found["connected"] is True
    assert found["prefix"] == "TL:tube:" and found["kv"] == pytest.approx(40.0)
    assert found["sim"] and not set(found["sim"]) & set(epics)


def test_the_ioc_synopsis_is_its_command_line(tmp_path):
    """hardware.md's synopsis of ``talbot-lau ioc`` names exactly its options."""
    synopsis = block(HARDWARE, "ioc-synopsis").text  # its lines wrap without a backslash
    assert synopsis.startswith("talbot-lau ioc ")
    documented = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    done = run_shell("talbot-lau ioc --help", tmp_path, doc_env(tmp_path))
    assert done.returncode == 0, done.stderr
    offered = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", done.stdout)) - {"--help", "--debug"}
    assert documented == offered


# --- reconstruction.md ----------------------------------------------------------------------------------

def _documented_signatures(text: str) -> list[tuple[str, str, list[str]]]:
    """(function, its parameter list, the names of the comment lines after it) of the API block."""
    lines = text.splitlines()
    statements, i = [], 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^[a-z_]+\(", line):
            joined = line
            while joined.count("(") > joined.count(")"):
                i += 1
                joined += " " + lines[i].strip()
            joined, _, inline = joined.partition("#")
            comments = [inline.strip()] if inline.strip() else []
            while i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#"):
                i += 1
                comments.append(lines[i].strip().lstrip("#").strip())
            statements.append((joined, comments))
        i += 1
    found = []
    for joined, comments in statements:
        name, rest = joined.split("(", 1)
        depth, end = 1, 0
        for end, char in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                break
        found.append((name, rest[:end], comments))
    return found


def test_the_reconstruction_api_is_as_documented():
    """The API block: its import runs, every documented signature is the function's (names,
    kinds and defaults), and the fields listed under each are those of what it returns."""
    import reconstruction

    text = block(RECONSTRUCTION, "reconstruction-api").text
    imports = text.split("\n\n")[0]
    namespace = {}
    exec(imports, namespace)  # noqa: S102  the block's import, as written
    documented = _documented_signatures(text)
    assert {name for name, _, _ in documented} == {"fit_stepping", "retrieve", "classify_microtexture",
                                                   "segment_clusters", "normalise_to_surroundings",
                                                   "analyse_clusters"}
    for name, parameters, comments in documented:
        function = namespace[name]
        stub = ast.parse(f"def {name}({parameters}): pass").body[0].args
        real = inspect.signature(function).parameters
        positional = [a.arg for a in stub.args]
        keyword = [a.arg for a in stub.kwonlyargs]
        variadic = [stub.kwarg.arg] if stub.kwarg else []
        assert list(real) == positional + keyword + variadic, name
        kinds = {p.name: p.kind for p in real.values()}
        assert all(kinds[n] == inspect.Parameter.KEYWORD_ONLY for n in keyword), name
        assert all(kinds[n] == inspect.Parameter.VAR_KEYWORD for n in variadic), name
        defaults = dict(zip(positional[len(positional) - len(stub.defaults):], stub.defaults))
        defaults.update({a.arg: d for a, d in zip(stub.kwonlyargs, stub.kw_defaults) if d is not None})
        for parameter in real.values():
            if parameter.name in defaults:
                assert parameter.default == ast.literal_eval(defaults[parameter.name]), (name, parameter.name)
            else:
                assert parameter.default is inspect.Parameter.empty, (name, parameter.name)
        listed = [field.strip().lstrip(".") for line in comments[:1] for field in line.split(",")]
        if name != "segment_clusters" and listed and all(re.fullmatch(r"[A-Za-z_0-9]+", f) for f in listed):
            returned = inspect.signature(function).return_annotation  # "X" or "list[X]"
            if isinstance(returned, str):
                returned = getattr(reconstruction, re.sub(r"^list\[(\w+)\]$", r"\1", returned), None)
            assert returned is not None and returned is not inspect.Signature.empty, name
            missing = [f for f in listed if not hasattr(returned, f) and f not in getattr(returned, "__dataclass_fields__", {})]
            assert not missing, (name, missing)


@pytest.mark.slow
def test_the_hdf5_example_classifies_the_clusters_as_the_truth(RE, tmp_path, configs_2):
    """reconstruction.md's example on files the test writes as it expects them (the sample,
    reference and dark stacks of a simulated projection in areaDetector's layout, the G2
    positions as text): it prints the fine and the pleomorphic cluster as they are."""
    from acquisition.config import load_config
    from acquisition.instrument import simulated_instrument
    from acquisition.plans import darkfield_projection
    from acquisition.storage.run_record_reader import read_run_record
    from acquisition.storage.run_recorder import run_recorder

    config = load_config(configs_2 / "instrument.yaml", configs_2 / "simulation.yaml")
    RE.subscribe(run_recorder(tmp_path / "run"))
    RE(darkfield_projection(simulated_instrument(config, write_path=tmp_path / "raw"), steps=5,
                                dark_frames=2, exposure_s=1.0))
    (record,) = (tmp_path / "run").glob("run_*.nxs")
    rows = read_run_record(record).frames
    (file,) = {str(f) for f in rows["file"]}
    with h5py.File(file, "r") as f:
        frames = f["entry/data/data"][()]
    for stream, name in (("primary", "sample"), ("reference", "reference"), ("dark", "dark")):
        points = [int(r["point"]) for r in rows if r["stream"] == stream]
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["entry/data/data"] = frames[points]
    np.savetxt(tmp_path / "g2_positions_um.txt", [r["g2_um"] for r in rows if r["stream"] == "primary"])

    done = run_python(block(RECONSTRUCTION, "hdf5-example").text, tmp_path, doc_env(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = []
    for line in done.stdout.splitlines():
        found = re.match(r"(\d+) \(([-\d.]+), ([-\d.]+)\) mu/eps = ([\d.]+) (\S+)", line)
        if found:
            printed.append({"centroid_row": float(found.group(2)), "centroid_col": float(found.group(3)),
                            "ratio": float(found.group(4)), "texture": found.group(5),
                            "suspicious": "SUSPICIOUS" in line})
    assert_as_the_truth(configs_2, printed, Counter({"fine": 1, "pleomorphic": 1}))
    assert all(p["suspicious"] == (p["ratio"] > 0.33) for p in printed)


@pytest.mark.slow
def test_the_small_study_writes_its_report(tmp_path):
    """docs/study.md's small study, as written: one row per dose, with the documented
    keys, fractions in 0-1, and the table printed (this tree's package first on the path)."""
    command = block(STUDY, "study-small").text.strip()
    env = doc_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    done = run_shell(command, tmp_path, env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| tissue | dose mGy |" in done.stdout
    out = tmp_path / argv(command)[argv(command).index("--out") + 1]
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["dose_mgy"] for r in rows] == [72.0, 2.5]
    for row in rows:
        for key in ("detected", "class_correct", "sensitivity", "specificity"):
            assert 0 <= row[key] <= 1
    assert (out / "report.md").is_file() and (out / "accuracy_vs_dose.png").is_file()
