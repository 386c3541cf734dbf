"""The live monitor, headless: fed by a simulated run, its panels hold the run's data."""

import h5py
import numpy as np
from bluesky import RunEngine

from acquisition.instrument import simulated_instrument
from acquisition.monitor import MonitorWindow
from acquisition.plans import darkfield_projection
from acquisition.processing import darkfield_router
from conftest import small_config
from simulators.physics import Phantom, TissueSlab, cluster_preset


def test_monitor_shows_frames_images_and_clusters(qtbot, tmp_path):
    window = MonitorWindow()
    qtbot.addWidget(window)
    window.show()
    phantom = Phantom(TissueSlab(), (cluster_preset("coarse", (-2.0, 0.0), seed=1),
                                     cluster_preset("ultra-fine", (2.5, 0.0), seed=2)))
    instrument = simulated_instrument(small_config(rows=96, cols=128), write_path=tmp_path / "raw",
                                      phantom=phantom)
    window.watch_tube(instrument.tube)
    engine = RunEngine({})
    engine.subscribe(window.raw_callback)
    engine.subscribe(darkfield_router(out_dir=tmp_path, publish=window.derived_callback))
    engine(darkfield_projection(instrument, dark_frames=1, steps=5, exposure_s=1.0))
    qtbot.waitUntil(lambda: len(window.cluster_rows) == 2, timeout=5000)

    assert window.images["raw"].image.shape == (96, 128)
    assert window.progress.value() == window.progress.maximum() == 11
    (derived,) = tmp_path.glob("derived_*.h5")
    with h5py.File(derived, "r") as f:
        eps = np.nan_to_num(f["entry/scattering/data"][()])
    np.testing.assert_allclose(window.images["scattering"].image, eps, rtol=1e-6)
    assert set(window.scatters) == {"coarse", "ultra-fine"}
    assert all(len(s.data) > 10 for s in window.scatters.values())
    qtbot.waitUntil(lambda: "shutter closed" in window.tube_status.text(), timeout=2000)
    assert "40.0 kV  70.0 mA" in window.tube_status.text()
    assert "dose delivered" in window.status.text()
    window.show_stepping_curve(48, 64)
    x, y = window.curve.getData()
    assert len(x) == 5 and np.ptp(y) > 0  # a stepping curve, not a flat line
    path = tmp_path / "monitor.png"
    assert window.grab().save(str(path)) and path.stat().st_size > 10_000


def test_monitor_grows_the_mosaic_tile_by_tile_then_shows_the_stitch(qtbot, tmp_path):
    from acquisition.plans import darkfield_mosaic

    window = MonitorWindow()
    qtbot.addWidget(window)
    phantom = Phantom(TissueSlab(), (cluster_preset("coarse", (0.0, 0.0), seed=3),))
    instrument = simulated_instrument(small_config(rows=64, cols=64), write_path=tmp_path / "raw",
                                      phantom=phantom)
    titles = []
    window.mosaic_plot.setTitle = lambda text: titles.append(text)
    engine = RunEngine({})
    engine.subscribe(window.raw_callback)
    engine.subscribe(darkfield_router(out_dir=tmp_path, publish=window.derived_callback))
    (uid,) = engine(darkfield_mosaic(instrument, rows=1, columns=2, overlap=0.0, steps=3,
                                     dark_frames=1, exposure_s=1.0))
    qtbot.waitUntil(lambda: len(titles) == 3, timeout=10000)

    assert titles == ["mosaic eps: 1 tiles measured", "mosaic eps: 2 tiles measured",
                      "mosaic eps: 2 tiles stitched"]
    tile_files = sorted(tmp_path.glob(f"derived_{uid[:8]}_tile*.h5"))
    tiles = []
    for path in tile_files:
        with h5py.File(path, "r") as f:
            tiles.append(np.nan_to_num(f["entry/scattering/data"][()]))
    pixel_mm = instrument.config.setup.detector.pixel_um / 1000 / instrument.config.setup.geometry.magnification
    grown = window._paste_tiles(pixel_mm)
    assert grown.shape == (64, 128)  # two tiles side by side at their stage positions
    halves = sorted((grown[:, :64], grown[:, 64:]), key=lambda half: float(np.nanmean(half)))
    assert all(any(np.allclose(h, t) for t in tiles) for h in halves)  # each tile pasted whole
    with h5py.File(tmp_path / f"derived_{uid[:8]}.h5", "r") as f:
        stitched = np.nan_to_num(f["entry/scattering/data"][()])
    np.testing.assert_allclose(window.images["mosaic"].image, stitched, rtol=1e-6)
    qtbot.waitUntil(lambda: [r["texture"] for r in window.cluster_rows] == ["coarse"], timeout=5000)
    # the scatter holds the stitched mosaic's cluster only, not the tiles' copies as well
    assert sum(len(s.data) for s in window.scatters.values()) == window.cluster_rows[0]["n_pixels"]
