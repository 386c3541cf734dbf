"""Derived files (issue 16, item 4): axes in mm at the sample, a processing record, tiles
that link their own frames only, a stitch that names its tiles; checked by nxcheck."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime

import h5py
import numpy as np
import pytest
from support import small_config, run_engine
from specimens import class_cluster

from acquisition.config import embedded_calibration
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_mosaic, darkfield_projection
from acquisition.processing.offline import reconstruct_run
from acquisition.storage.frames import FrameLoader, FrameRef
from acquisition.storage.run_record_reader import read_run_record
from acquisition.storage.run_recorder import run_recorder
from acquisition.storage.tissue_calibration_file import calibration_record
from reconstruction import SUSPICIOUS_RATIO, TABLE_1
from reconstruction.segmentation import (
    DEFAULT_BACKGROUND_PX,
    DEFAULT_CLOSING_PX,
    DEFAULT_K_SIGMA,
)
from simulators.physics import Phantom, TissueSlab

pytestmark = pytest.mark.slow  # the module's projection and mosaic fixtures record and reconstruct (~4 s)

CLUSTER_MM = (1.5, -1.0)
"""(x, y) of the projection's cluster: off centre on both axes, so a sign error shows."""
IMAGES = ("transmission", "dark_field", "differential_phase", "absorption", "scattering", "labels")


def _record(folder, plan, rows, cols, phantom):
    instrument = simulated_instrument(small_config(rows=rows, cols=cols), write_path=folder / "raw",
                                      phantom=phantom)
    with run_engine() as engine:
        engine.subscribe(run_recorder(folder))
        (uid,) = engine(plan(instrument))
        return folder / f"run_{uid[:8]}.nxs", uid


@pytest.fixture(scope="module")
def projection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("projection")
    phantom = Phantom(TissueSlab(), (class_cluster("pleomorphic", CLUSTER_MM, seed=5),))
    record, uid = _record(folder, lambda i: darkfield_projection(i, dark_frames=2), 96, 96, phantom)
    rows = reconstruct_run(record, folder)
    return folder, record, uid, rows


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mosaic")
    phantom = Phantom(TissueSlab(), (class_cluster("coarse", (0.0, 0.0), seed=5),))
    record, uid = _record(folder, lambda i: darkfield_mosaic(
        i, rows=2, columns=2, overlap=0.25, steps=3, dark_frames=1, exposure_s=1.0,
        reference_every=2), 64, 64, phantom)
    rows = reconstruct_run(record, folder)
    return folder, record, uid, rows


def _cluster_mm(entry, index: int = 0) -> tuple[float, float]:
    """(x, y) mm of a cluster's centroid, through the file's own axes."""
    x, y = entry["labels/x"][()], entry["labels/y"][()]
    row, col = entry["clusters/centroid_row"][index], entry["clusters/centroid_col"][index]
    return float(np.interp(col, np.arange(x.size), x)), float(np.interp(row, np.arange(y.size), y))


def test_every_image_has_axes_in_mm_at_the_sample(projection):
    folder, record, uid, _ = projection
    pixel_mm = read_run_record(record).start["detector_pixel"]["sample_pixel_mm"]
    with h5py.File(folder / f"derived_{uid[:8]}.h5", "r") as f:
        entry = f["entry"]
        for name in IMAGES:
            data = entry[name]
            assert list(data.attrs["axes"]) == ["y", "x"], name
            assert (data.attrs["y_indices"], data.attrs["x_indices"]) == (0, 1)
            for axis, size in zip("yx", data["data"].shape):
                values = data[axis][()]
                assert data[axis].attrs["units"] == "mm" and values.size == size
                np.testing.assert_allclose(np.diff(values), pixel_mm, rtol=1e-12)
                assert values.mean() == pytest.approx(0.0, abs=1e-9)  # a projection: 0 at the centre
        # the physics put the cluster at CLUSTER_MM: the axes find it there (a flipped axis
        # would put it 3 mm / 2 mm away)
        x, y = _cluster_mm(entry)
        assert abs(x - CLUSTER_MM[0]) < 0.6 and abs(y - CLUSTER_MM[1]) < 0.6, (x, y)
        assert entry["sample/sample_id"][()].decode() == read_run_record(record).start["sample"]["id"]


def test_the_process_records_every_parameter_as_the_code_uses_it(projection):
    folder, record, uid, _ = projection
    start = read_run_record(record).start
    stepping = start["phase_stepping"]
    calibration = calibration_record(embedded_calibration())
    with h5py.File(folder / f"derived_{uid[:8]}.h5", "r") as f:
        process = f["entry/process"]
        assert process.attrs["NX_class"] == "NXprocess"
        assert process["program"][()].decode() == "talbot-lau"
        datetime.fromisoformat(process["date"][()].decode())
        steps = {name: int(g["sequence_index"][()]) for name, g in process.items()
                 if isinstance(g, h5py.Group) and g.attrs["NX_class"] == "NXparameters"}
        assert sorted(steps, key=steps.get) == ["retrieval", "segmentation", "normalisation",
                                                "classification", "tissue_correction"]
        retrieval = process["retrieval"]
        assert retrieval["period"][()] == stepping["period_um"] and retrieval["period"].attrs["units"] == "um"
        np.testing.assert_allclose(retrieval["positions"][()], stepping["positions_um"])
        assert retrieval["exposure"][()] == stepping["exposure_s"]
        assert len(retrieval["sample_positions"][()]) == stepping["steps"]
        assert retrieval["dark_frames_used"][()] == 2
        assert "measured reference" in retrieval["reference"][()].decode()
        segmentation = process["segmentation"]
        assert segmentation["k_sigma"][()] == DEFAULT_K_SIGMA
        assert segmentation["background_px"][()] == DEFAULT_BACKGROUND_PX
        assert segmentation["closing_px"][()] == DEFAULT_CLOSING_PX
        classification = process["classification"]
        assert classification["suspicious_ratio"][()] == SUSPICIOUS_RATIO
        assert classification["ratio_upper"][1] == TABLE_1["fine"][1]
        tissue = process["tissue_correction"]
        assert tissue["sha256"][()].decode() == calibration["sha256"]
        note = process["run_record"]
        assert note["file_name"][()].decode() == record.name  # relative to the derived file
        assert note["identifier_run_uuid"][()].decode() == uid


def test_a_projection_links_the_frames_of_its_set(projection):
    folder, record, uid, _ = projection
    rows = read_run_record(record).frames
    with h5py.File(folder / f"derived_{uid[:8]}.h5", "r") as f:
        raw = f["entry/raw"]
        keys = raw["image_key"][()]
        assert (keys == 0).sum() == 9 and (keys == 2).sum() == 2 and (keys == 1).sum() == 9
        sample = raw["frame_index"][()][keys == 0]
        primary = [int(r["point"]) for r in rows if r["stream"] in ("primary", b"primary")]
        assert sorted(sample) == primary[-9:]


def test_tiles_carry_their_stage_and_link_their_own_frames_only(mosaic, tmp_path, monkeypatch):
    folder, record, uid, _ = mosaic
    run = read_run_record(record)
    pixel_mm = run.start["detector_pixel"]["sample_pixel_mm"]
    spec = {t["tile"]: t for t in run.start["mosaic"]["tiles"]}
    read = {}
    with FrameLoader() as loader:
        for tile in spec:
            with h5py.File(folder / f"derived_{uid[:8]}_tile{tile:02d}.h5", "r") as f:
                entry = f["entry"]
                parameters = entry["process/tile"]
                assert parameters["index"][()] == tile
                assert (parameters["row"][()], parameters["column"][()]) == (spec[tile]["row"], spec[tile]["column"])
                assert entry["sample/stage_x/value"][()] == pytest.approx(spec[tile]["x_mm"])
                x = entry["transmission/x"][()]  # u = p*pixel - s (reconstruction.stitching)
                assert x.mean() == pytest.approx(-spec[tile]["x_mm"]) and np.diff(x)[0] == pytest.approx(pixel_mm)
                assert entry["transmission/y"][()].mean() == pytest.approx(-spec[tile]["y_mm"])
                raw = entry["raw"]
                keys, index = raw["image_key"][()], raw["frame_index"][()]
                files = [name.decode() for name in raw["frame_file"][()]]
                assert all((folder / name).is_file() for name in files)  # relative to the tile file
                own = sorted(int(r["point"]) for r in run.frames
                             if r["stream"] in ("primary", b"primary") and int(r["tile"]) == tile)
                assert sorted(index[keys == 0]) == own  # this tile's sample frames, no other's
                read[tile] = raw["data"][()]
                expected = np.stack([loader(FrameRef(str(folder / name), int(i))) for name, i in zip(files, index)])
                np.testing.assert_array_equal(read[tile], expected)
                assert (keys == 1).sum() == 3 and (keys == 0).sum() == 3
    # the whole folder copied elsewhere, the original gone, read from another directory
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    monkeypatch.chdir(tmp_path)
    for tile, frames in read.items():
        with h5py.File(moved / f"derived_{uid[:8]}_tile{tile:02d}.h5", "r") as f:
            np.testing.assert_array_equal(f["entry/raw/data"][()], frames)
    shutil.copytree(moved, folder)  # back, for the tests after this one


def test_the_stitch_names_its_tiles_offsets_and_coordinates(mosaic):
    folder, record, uid, rows = mosaic
    run = read_run_record(record)
    spec = {t["tile"]: t for t in run.start["mosaic"]["tiles"]}
    with h5py.File(folder / f"derived_{uid[:8]}.h5", "r") as f:
        entry = f["entry"]
        stitching = entry["process/stitching"]
        tiles = list(stitching["tiles"][()])
        assert tiles == sorted(spec)
        assert [n.decode() for n in stitching["tile_files"][()]] == [
            f"derived_{uid[:8]}_tile{t:02d}.h5" for t in tiles]
        np.testing.assert_allclose(stitching["stage_x"][()], [spec[t]["x_mm"] for t in tiles])
        offsets = stitching["offsets_px"][()]
        assert offsets.shape == (4, 2) and offsets.min() == 0
        # the same sample point has the same coordinates in the stitch and in every tile
        # that sees it (the tiles sit 4.1 mm apart: a wrong sign or offset shows)
        stitched = np.array(_cluster_mm(entry))
        for tile in tiles:
            with h5py.File(folder / f"derived_{uid[:8]}_tile{tile:02d}.h5", "r") as t:
                if len(t["entry/clusters/label"]):
                    assert np.abs(np.array(_cluster_mm(t["entry"])) - stitched).max() < 0.5, tile
        assert entry.get("raw", getlink=True).filename == record.name  # the whole run
    assert [r["texture"] for r in rows] == ["coarse"]


@pytest.mark.skipif(shutil.which("nxcheck") is None, reason="nexusformat's nxcheck not installed")
@pytest.mark.parametrize("kind", ["projection", "tile", "stitch"])
def test_nxcheck_finds_no_error_and_only_the_documented_warning(kind, projection, mosaic):
    folder, _, uid, _ = projection if kind == "projection" else mosaic
    name = f"derived_{uid[:8]}{'_tile01' if kind == 'tile' else ''}.h5"
    done = subprocess.run(["nxcheck", str(folder / name)], check=False, capture_output=True, text=True,
                          timeout=120)
    text = done.stdout + done.stderr
    assert "Total number of errors: 0" in text, text
    # the one warning: NXsample defines no sample id (docs: data format, derived files)
    assert "Total number of warnings: 1" in text and "sample_id" in text, text


@pytest.mark.parametrize("change, argument", [
    ({"tile": 7}, "tile: 7 is not a tile"),
    ({"start": {"phase_stepping": {}}}, "start: the start document has no detector_pixel"),
    ({"start": "run"}, "start: the raw run's start document"),
])
def test_a_wrong_context_is_refused_by_name(mosaic, tmp_path, change, argument):
    from types import SimpleNamespace

    from acquisition.storage.derived_store import write_derived

    _, record, uid, _ = mosaic
    images = SimpleNamespace(**{name: np.ones((4, 4)) for name in IMAGES[:-1]})
    kwargs = {"start": read_run_record(record).start, **change}
    with pytest.raises(ValueError, match=argument):
        write_derived(tmp_path / "d.h5", images, np.zeros((4, 4), int), [], uid, **kwargs)
    assert not (tmp_path / "d.h5").exists()


def test_a_stored_reference_fit_is_recorded_and_found_after_a_move(RE, tmp_path):
    from acquisition.cli import main
    from acquisition.processing.offline import save_reference_fit

    folder = tmp_path / "run"
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=folder / "raw")
    RE.subscribe(run_recorder(folder))
    (first,) = RE(darkfield_projection(instrument, dark_frames=1))
    stored = save_reference_fit(folder / f"run_{first[:8]}.nxs", folder / "reference_fit.h5")
    (uid,) = RE(darkfield_projection(instrument, dark_frames=1, reference=str(folder / "reference_fit.h5")))
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    assert main(["reconstruct", str(moved / f"run_{uid[:8]}.nxs"), "--out", str(moved)]) == 0
    with h5py.File(moved / f"derived_{uid[:8]}.h5", "r") as f:
        retrieval = f["entry/process/retrieval"]
        assert retrieval["reference"][()].decode().startswith("stored reference fit")
        assert retrieval["reference_fit_file"][()].decode() == "reference_fit.h5"
        assert retrieval["reference_fit_source_uid"][()].decode() == first == stored.source_uid
        assert retrieval["reference_fit_voltage"].attrs["units"] == "kV"
        assert retrieval["reference_fit_current"][()] == pytest.approx(stored.ma)
        keys = f["entry/raw/image_key"][()]
        assert (keys == 1).sum() == 0 and (keys == 0).sum() == 9  # no reference frames: the fit
