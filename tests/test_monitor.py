"""The live monitor, headless: fed by simulated runs and the processor's derived runs, its
panels show what a physicist needs to read (units, levels, clusters, status)."""

import copy

import h5py
import numpy as np
import pytest
from support import small_config, run_engine

from acquisition.instrument import simulated_instrument
from acquisition.monitor import MonitorWindow
from acquisition.plans import darkfield_projection
from acquisition.processing.live import darkfield_router
from reconstruction import TEXTURES
from simulators.physics import Phantom, TissueSlab
from specimens import class_cluster

FOUR_CLASSES = (("ultra-fine", (-2.6, -2.2)), ("fine", (2.6, -2.2)), ("pleomorphic", (-2.6, 2.2)),
                ("coarse", (2.6, 2.2)))


def _collect(out):
    documents = []
    return documents, darkfield_router(out, background=False,  # derived runs in the raw documents' order
                                       publish=lambda name, doc: documents.append(("derived", name, doc)))


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    """A projection of one cluster of each class (112 x 128 pixels), its raw documents and
    the processor's derived run, in the order they were published."""
    tmp = tmp_path_factory.mktemp("four")
    phantom = Phantom(TissueSlab(), tuple(class_cluster(texture, centre, seed=seed)
                                          for seed, (texture, centre) in enumerate(FOUR_CLASSES, start=2)))
    instrument = simulated_instrument(small_config(rows=112, cols=128), write_path=tmp / "raw", phantom=phantom)
    documents, router = _collect(tmp)
    with run_engine() as engine:
        engine.subscribe(lambda name, doc: documents.append(("raw", name, copy.deepcopy(doc))))
        engine.subscribe(router)
        engine(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0,
                                    reference_exposure_s=1.0))
        return documents


def _feed(window, documents, until=None):
    """Hand documents to the window as the RunEngine and the processor would (same thread:
    the signal calls the window directly); stop before the first ``until(source, name)``."""
    for index, (source, name, doc) in enumerate(documents):
        if until and until(source, name):
            return documents[index:]
        (window.raw_callback if source == "raw" else window.derived_callback)(name, doc)
    return []


@pytest.fixture
def fed(qtbot, four_classes):
    window = MonitorWindow()
    qtbot.addWidget(window)
    _feed(window, four_classes)
    return window


def _clusters(documents):
    streams = {doc["uid"]: doc["name"] for _, name, doc in documents if name == "descriptor"}
    return [doc["data"] for _, name, doc in documents
            if name == "event" and streams[doc["descriptor"]] == "clusters"]


def _pixel_mm(documents):
    return next(doc for _, name, doc in documents if name == "start")["detector_pixel"]["sample_pixel_mm"]


def test_the_simulated_run_has_a_cluster_of_each_class(four_classes):
    assert sorted(c["texture"] for c in _clusters(four_classes)) == sorted(TEXTURES)


def test_status_says_waiting_then_processing_then_done(qtbot, four_classes):
    window = MonitorWindow()
    qtbot.addWidget(window)
    texts = []
    window.processing_status.setText = lambda text: texts.append(text)
    rest = _feed(window, four_classes, until=lambda source, name: source == "derived")
    assert texts[0] == "waiting for a complete phase-stepping set (0 of 1 processed)"
    assert texts[-1].startswith("processing... (0 of 1")  # sets complete, no derived run yet
    _feed(window, rest)
    clusters = _clusters(four_classes)
    suspicious, borderline = (sum(c[key] for c in clusters) for key in ("suspicious", "borderline"))
    assert texts[-1] == f"done: 4 clusters, {suspicious} suspicious (R > 0.33), {borderline} borderline"


def test_a_failed_derived_run_says_failed_with_its_reason(qtbot, four_classes, tmp_path):
    raw = [copy.deepcopy(d) for d in four_classes if d[0] == "raw"]
    streams = {doc["uid"]: doc["name"] for _, name, doc in raw if name == "descriptor"}
    reference = [doc for _, name, doc in raw if name == "event" and streams[doc["descriptor"]] == "reference"]
    reference[1]["data"]["tube_shutter"] = 0  # an interlock trip during the reference set
    documents, router = _collect(tmp_path)
    for source, name, doc in raw:
        documents.append((source, name, doc))
        router(name, doc)
    (stop,) = [doc for source, name, doc in documents if source == "derived" and name == "stop"]
    assert stop["exit_status"] == "fail"
    window = MonitorWindow()
    qtbot.addWidget(window)
    _feed(window, documents)
    assert window.processing_status.text() == f"failed: {stop['reason']}"
    assert "NoBeamError" in window.processing_status.text()
    assert "c62828" in window.processing_status.styleSheet()  # red


def test_colour_bars_hold_the_levels_and_images_are_in_mm(fed, four_classes):
    pixel_mm = _pixel_mm(four_classes)
    for key in ("raw", "absorption", "scattering", "differential_phase"):
        item, bar = fed.images[key], fed.colour_bars[key]
        assert bar.scene() is item.scene()  # drawn beside its image
        np.testing.assert_allclose(bar.levels(), item.getLevels())
        assert bar.levels()[1] > bar.levels()[0]
        rows, cols = item.image.shape
        rect = item.mapRectToParent(item.boundingRect())
        np.testing.assert_allclose([rect.left(), rect.top(), rect.width(), rect.height()],
                                   [0, 0, cols * pixel_mm, rows * pixel_mm])
        plot = fed.panels[key].plot
        assert plot.getAxis("bottom").labelText == "x (mm at the sample)"
        assert plot.getAxis("left").labelText == "y (mm)"
    units = {key: fed.colour_bars[key].axis.labelText for key in fed.colour_bars}
    assert units["raw"] == "ADU" and units["differential_phase"] == "dphi (rad)"
    assert units["scattering"].startswith("eps = -ln V")


def test_every_cluster_is_outlined_and_labelled_with_class_and_ratio(fed, four_classes):
    pixel_mm = _pixel_mm(four_classes)
    clusters = _clusters(four_classes)
    labels = fed.overlay.labels
    assert sorted(fed.overlay.outlines) == sorted(fed.overlay.texts) == sorted(c["label"] for c in clusters)
    for c in clusters:
        x, y = fed.overlay.outlines[c["label"]].getData()
        rows, cols = np.nonzero(labels == c["label"])
        # the outline runs around the cluster's pixels: its extent is theirs, in mm
        np.testing.assert_allclose([x.min(), x.max(), y.min(), y.max()],
                                   np.array([cols.min(), cols.max() + 1, rows.min(), rows.max() + 1]) * pixel_mm)
        text = fed.overlay.texts[c["label"]]
        assert text.toPlainText() == f"{c['label']} {c['texture']}\nR = {c['ratio']:.2f}"
        assert text.scene() is fed.images["scattering"].scene()
        assert x.min() <= text.pos().x() <= x.max()


def test_the_table_rows_are_the_clusters(fed, four_classes):
    expected = [[str(c["label"]), c["texture"], f"{c['ratio']:.3f}", "yes" if c["suspicious"] else "no",
                 "yes" if c["borderline"] else "no", str(c["n_pixels"])] for c in _clusters(four_classes)]
    assert [row[:6] for row in fed.table.rows()] == expected
    assert [c["label"] for c in fed.cluster_rows] == [c["label"] for c in _clusters(four_classes)]


def test_the_scatter_shows_all_four_classes_distinctly_inside_the_view(fed):
    scatters = fed.scatters
    assert set(scatters) == set(TEXTURES)
    symbols = {t: s.opts["symbol"] for t, s in scatters.items()}
    brushes = {t: pg_colour(s.opts["brush"]) for t, s in scatters.items()}
    assert len(set(symbols.values())) == len(set(brushes.values())) == 4
    (x0, x1), (y0, y1) = fed.scatter.plot.vb.viewRange()
    for texture, scatter in scatters.items():
        x, y = scatter.getData()
        assert len(x) >= 10, texture
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        assert inside.mean() > 0.9, texture
    legend = [label.text for _, label in fed.scatter.plot.legend.items]
    assert all(any(text.startswith(texture) for text in legend) for texture in TEXTURES)
    assert any("0.33" in text for text in legend)


def pg_colour(brush):
    return brush.color().getRgb()


@pytest.mark.slow
def test_monitor_follows_a_live_run(RE, qtbot, tmp_path):
    """Through the Qt signal from the RunEngine and the processor's worker thread."""
    window = MonitorWindow()
    qtbot.addWidget(window)
    window.show()
    phantom = Phantom(TissueSlab(), (class_cluster("coarse", (-2.0, 0.0), seed=1),
                                     class_cluster("ultra-fine", (2.5, 0.0), seed=2)))
    instrument = simulated_instrument(small_config(rows=96, cols=128), write_path=tmp_path / "raw",
                                      phantom=phantom)
    window.watch_tube(instrument.tube)
    RE.subscribe(window.raw_callback)
    RE.subscribe(darkfield_router(out_dir=tmp_path, publish=window.derived_callback))
    RE(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0,
                                reference_exposure_s=1.0))
    qtbot.waitUntil(lambda: window.processing_status.text().startswith("done"), timeout=5000)

    assert window.images["raw"].image.shape == (96, 128)
    assert window.progress.value() == window.progress.maximum() == 11
    (derived,) = tmp_path.glob("derived_*.h5")
    with h5py.File(derived, "r") as f:
        eps = np.nan_to_num(f["entry/scattering/data"][()])
    np.testing.assert_allclose(window.images["scattering"].image, eps, rtol=1e-6)
    assert {c["texture"] for c in window.cluster_rows} == {"coarse", "ultra-fine"}
    qtbot.waitUntil(lambda: "shutter closed" in window.tube_status.text(), timeout=2000)
    assert "40.0 kV  70.0 mA" in window.tube_status.text()
    assert "dose delivered" in window.status.text()
    window.show_stepping_curve(48, 64)
    x, y = window.curve.getData()
    assert len(x) == 5 and np.ptp(y) > 0  # a stepping curve, not a flat line
    path = tmp_path / "monitor.png"
    assert window.grab().save(str(path)) and path.stat().st_size > 10_000


@pytest.mark.slow
def test_monitor_grows_the_mosaic_tile_by_tile_then_shows_the_stitch(RE, qtbot, tmp_path):
    from acquisition.plans import darkfield_mosaic

    window = MonitorWindow()
    qtbot.addWidget(window)
    phantom = Phantom(TissueSlab(), (class_cluster("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw",
                                      phantom=phantom)
    titles = []
    window.mosaic.plot.setTitle = lambda text: titles.append(text)
    statuses = []
    window.processing_status.setText = lambda text: statuses.append(text)
    RE.subscribe(window.raw_callback)
    RE.subscribe(darkfield_router(out_dir=tmp_path, publish=window.derived_callback))
    (uid,) = RE(darkfield_mosaic(instrument, rows=1, columns=2, overlap=0.0, steps=3,
                                     dark_frames=1, exposure_s=1.0, reference_exposure_s=1.0))
    qtbot.waitUntil(lambda: len(titles) == 3, timeout=10000)

    assert titles == ["mosaic eps: 1 tiles measured", "mosaic eps: 2 tiles measured",
                      "mosaic eps: 2 tiles stitched"]
    tile_files = sorted(tmp_path.glob(f"derived_{uid[:8]}_tile*.h5"))
    tiles = []
    for path in tile_files:
        with h5py.File(path, "r") as f:
            tiles.append(np.nan_to_num(f["entry/scattering/data"][()]))
    pixel_mm = instrument.config.setup.detector.pixel_um / 1000 / instrument.config.setup.geometry.magnification
    grown = window.mosaic.paste_tiles(pixel_mm)
    assert grown.shape == (64, 128)  # two tiles side by side at their stage positions
    halves = sorted((grown[:, :64], grown[:, 64:]), key=lambda half: float(np.nanmean(half)))
    assert all(any(np.allclose(h, t) for t in tiles) for h in halves)  # each tile pasted whole
    with h5py.File(tmp_path / f"derived_{uid[:8]}.h5", "r") as f:
        stitched = np.nan_to_num(f["entry/scattering/data"][()])
    np.testing.assert_allclose(window.images["mosaic"].image, stitched, rtol=1e-6)
    rect = window.images["mosaic"].mapRectToParent(window.images["mosaic"].boundingRect())
    np.testing.assert_allclose([rect.width(), rect.height()], [128 * pixel_mm, 64 * pixel_mm])
    qtbot.waitUntil(lambda: [r["texture"] for r in window.cluster_rows] == ["coarse"], timeout=5000)
    # the scatter and table hold the stitched mosaic's cluster only, not the tiles' copies as well
    assert sum(len(s.data) for s in window.scatters.values()) == window.cluster_rows[0]["n_pixels"]
    assert window.table.rowCount() == 1
    # processing until the stitch (after both tiles) is done
    assert "processing... (2 of 3 derived runs done)" in statuses
    qtbot.waitUntil(lambda: statuses[-1].startswith("done: 1 clusters"), timeout=5000)
