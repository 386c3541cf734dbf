"""The live monitor (pyqtgraph): what the instrument measures, while it measures.

Panels: the latest raw frame; transmission (mu), dark-field (eps) and differential phase
of the latest processed set; the mosaic's dark-field (eps) growing tile by tile at the
stage positions, replaced by the stitched mosaic when it is complete; the mu-eps scatter of every cluster's pixels coloured by its
class, over Table 1's bands and the 0.33 cut-off (Scherer et al. 2016, Table 1 and
Fig. 5); the stepping curve of a clicked pixel; tube kV/mA/shutter/interlock, dose and
progress.  Documents may come from any thread (the RunEngine's, a 0MQ consumer's): they
are queued to the Qt thread through a signal, so the monitor never blocks acquisition.
"""

from __future__ import annotations

import event_model
import h5py
import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from reconstruction.stitching import place_tiles

from .frames import HANDLERS

CLASS_COLOURS = {"ultra-fine": (31, 119, 180), "fine": (214, 39, 40),
                 "pleomorphic": (148, 103, 189), "coarse": (44, 160, 44)}
"""The paper's Fig. 2 colours: blue, red, purple, green."""
TABLE_1_BANDS = [("ultra-fine", 0.0, 0.17), ("fine", 0.22, 0.33), ("pleomorphic", 0.40, 0.55),
                 ("coarse", 0.60, 1.5)]


class MonitorWindow(QtWidgets.QWidget):
    """The monitor; feed it with ``raw_callback`` (RunEngine) and ``derived_callback``
    (the processor's ``publish``)."""

    document = QtCore.pyqtSignal(str, str, object)  # source, name, doc
    tube_changed = QtCore.pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("talbot-lau live monitor")
        pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
        grid = QtWidgets.QGridLayout(self)
        self.views = pg.GraphicsLayoutWidget()
        grid.addWidget(self.views, 0, 0, 1, 2)
        self.images = {}
        for column, (key, title) in enumerate((("raw", "latest raw frame (ADU)"),
                                               ("absorption", "absorption mu"),
                                               ("scattering", "scattering eps"),
                                               ("differential_phase", "differential phase (rad)"))):
            plot = self.views.addPlot(row=0, col=column, title=title)
            plot.setAspectLocked(True)
            plot.invertY(True)
            item = pg.ImageItem()
            plot.addItem(item)
            self.images[key] = item
        self.images["raw"].mouseClickEvent = self._pixel_clicked
        self.scatter_plot = self.views.addPlot(row=1, col=0, title="clusters: mu against eps")
        self.scatter_plot.setLabel("bottom", "eps (scattering power)")
        self.scatter_plot.setLabel("left", "mu (absorption power)")
        self.scatter_plot.addLegend(offset=(10, 10))
        self._draw_bands()
        self.curve_plot = self.views.addPlot(row=1, col=1, title="stepping curve (click a pixel)")
        self.curve_plot.setLabel("bottom", "G2 position (um)")
        self.curve = self.curve_plot.plot([], [], pen=None, symbol="o")
        self.mosaic_plot = self.views.addPlot(row=1, col=2, colspan=2, title="mosaic eps: waiting for tiles")
        self.mosaic_plot.setAspectLocked(True)
        self.mosaic_plot.invertY(True)
        self.images["mosaic"] = pg.ImageItem()
        self.mosaic_plot.addItem(self.images["mosaic"])
        self.mosaic_tiles: dict[int, tuple[tuple[float, float], np.ndarray]] = {}  # tile -> stage mm, eps
        self._mosaic_parent = None
        self.status = QtWidgets.QLabel("waiting for a run")
        grid.addWidget(self.status, 1, 0)
        self.progress = QtWidgets.QProgressBar()
        grid.addWidget(self.progress, 1, 1)
        self.tube_status = QtWidgets.QLabel("tube: not watched")
        grid.addWidget(self.tube_status, 2, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 2)
        self.tube = None
        self.tube_changed.connect(self._show_tube)
        self.scatters: dict[str, pg.ScatterPlotItem] = {}
        self.stepping: dict[float, np.ndarray] = {}
        self.cluster_rows: list[dict] = []
        self._raw_router = event_model.RunRouter([self._raw_factory], handler_registry=HANDLERS)
        self._derived_router = event_model.RunRouter([self._derived_factory], handler_registry=HANDLERS)
        self.document.connect(self._dispatch)
        self.resize(1500, 800)

    # -- entry points, callable from any thread -------------------------------------------
    def raw_callback(self, name, doc):
        self.document.emit("raw", name, doc)

    def derived_callback(self, name, doc):
        self.document.emit("derived", name, doc)

    def watch_tube(self, tube) -> None:
        """Show the tube's kV, mA, shutter and interlock live (ophyd subscriptions)."""
        self.tube = tube
        for signal in (tube.kv, tube.ma, tube.shutter, tube.interlock):
            signal.subscribe(lambda *args, **kwargs: self.tube_changed.emit(), run=False)
        self._show_tube()

    def _show_tube(self):
        tube = self.tube
        self.tube_status.setText(
            f"tube {tube.kv.get():.1f} kV  {tube.ma.get():.1f} mA  shutter "
            f"{'OPEN' if tube.shutter.get() else 'closed'}  interlock "
            f"{'ok' if tube.interlock.get() else 'TRIPPED'}")

    def _dispatch(self, source, name, doc):
        router = self._raw_router if source == "raw" else self._derived_router
        router(name, doc)

    # -- raw runs --------------------------------------------------------------------------
    def _raw_factory(self, name, start):
        self.progress.setMaximum(int(start.get("total_frames", 0)) or 1)
        self.progress.setValue(0)
        self._run_label = f"{start.get('plan_name', '')} {start.get('sample', {}).get('id', '')}"
        self.status.setText(self._run_label)
        self.stepping.clear()
        return [_Callback(event=self._raw_event)], []

    def _raw_event(self, doc, stream):
        data = doc["data"]
        frame = next((v for v in data.values() if isinstance(v, np.ndarray) and v.ndim == 2), None)
        if frame is not None:
            image = frame.astype(np.float32)
            # percentile levels: a hot or dead pixel must not black out the frame
            self.images["raw"].setImage(image, levels=tuple(np.percentile(image, (0.5, 99.5))))
            self.progress.setValue(self.progress.value() + 1)
            if stream == "primary" and "g2" in data:
                self.stepping[float(data["g2"])] = frame
        if frame is not None:
            self.status.setText(f"{self._run_label}  [{stream}]")
        if "delivered_dose_mgy" in data:
            self.status.setText(f"{self._run_label}  dose delivered {data['delivered_dose_mgy']:.1f} mGy")

    def _pixel_clicked(self, event):
        if not self.stepping:
            return
        col, row = (int(v) for v in (event.pos().x(), event.pos().y()))
        self.show_stepping_curve(row, col)

    def show_stepping_curve(self, row: int, col: int) -> None:
        """Plot the latest sample set's intensities of one pixel against the G2 position."""
        positions = sorted(self.stepping)
        values = [float(self.stepping[x][row, col]) for x in positions]
        self.curve.setData(positions, values)
        self.curve_plot.setTitle(f"stepping curve of pixel ({row}, {col})")

    # -- derived runs ----------------------------------------------------------------------
    def _derived_factory(self, name, start):
        self._derived_start = start
        if start.get("plan_name") == "darkfield_mosaic_stitch":  # the whole mosaic's clusters
            for scatter in self.scatters.values():                 # replace those of its tiles
                scatter.clear()
            self.cluster_rows.clear()
        return [_Callback(event=self._derived_event, resource=self._derived_resource)], []

    def _derived_resource(self, doc):
        self._derived_file = "/" + doc["resource_path"].lstrip("/")

    def _derived_event(self, doc, stream):
        data = doc["data"]
        if stream == "images":
            for key in ("absorption", "scattering", "differential_phase"):
                if key in data:
                    image = np.nan_to_num(np.asarray(data[key], np.float32))
                    self.images[key].setImage(image, levels=tuple(np.percentile(image, (0.5, 99.8))))
            self._show_mosaic(self._derived_start, data)
        elif stream == "clusters":
            self.cluster_rows.append(data)
            self._add_cluster(data)

    def _show_mosaic(self, start: dict, images: dict) -> None:
        """A tile's eps pasted at its stage position; the stitched mosaic when it comes."""
        if "scattering" not in images:
            return
        eps = np.nan_to_num(np.asarray(images["scattering"], np.float32))
        if start.get("plan_name") == "darkfield_mosaic_stitch":
            canvas = eps
            title = f"mosaic eps: {len(start.get('tiles', []))} tiles stitched"
        elif "tile" in start:
            if start["parent_uid"] != self._mosaic_parent:  # a new mosaic
                self._mosaic_parent = start["parent_uid"]
                self.mosaic_tiles.clear()
            tile = start["tile"]
            self.mosaic_tiles[tile["tile"]] = ((tile["x_mm"], tile["y_mm"]), eps)
            canvas = self._paste_tiles(start["detector_pixel"]["sample_pixel_mm"])
            title = f"mosaic eps: {len(self.mosaic_tiles)} tiles measured"
        else:
            return
        finite = canvas[np.isfinite(canvas)]
        levels = tuple(np.percentile(finite, (0.5, 99.8))) if finite.size else (0.0, 1.0)
        self.images["mosaic"].setImage(canvas, levels=levels)
        self.mosaic_plot.setTitle(title)

    def _paste_tiles(self, pixel_mm: float) -> np.ndarray:
        """The tiles so far on one canvas (NaN where none was measured), placed by stage."""
        stages, images = zip(*self.mosaic_tiles.values())
        offsets = np.rint(place_tiles(stages, pixel_mm)).astype(int)
        rows, cols = images[0].shape
        canvas = np.full((offsets[:, 0].max() + rows, offsets[:, 1].max() + cols), np.nan, np.float32)
        for (r, c), image in zip(offsets, images):
            canvas[r:r + rows, c:c + cols] = image
        return canvas

    def _add_cluster(self, row: dict) -> None:
        with h5py.File(self._derived_file, "r") as f:
            group = f[f"entry/cluster_pixels/{row['label']}"]
            mu, eps = group["mu"][()], group["eps"][()]
        texture = row["texture"]
        if texture not in self.scatters:
            colour = CLASS_COLOURS[texture]
            self.scatters[texture] = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(*colour, 120),
                                                        name=texture)
            self.scatter_plot.addItem(self.scatters[texture])
        self.scatters[texture].addPoints(x=eps, y=mu)

    def _draw_bands(self) -> None:
        eps = np.array([0.0, 3.0])
        for texture, low, high in TABLE_1_BANDS:
            colour = CLASS_COLOURS[texture]
            lower = pg.PlotCurveItem(eps, low * eps)
            upper = pg.PlotCurveItem(eps, high * eps)
            self.scatter_plot.addItem(pg.FillBetweenItem(lower, upper, brush=pg.mkBrush(*colour, 35)))
        cut = pg.PlotCurveItem(eps, 0.33 * eps, pen=pg.mkPen("y", width=2, style=QtCore.Qt.PenStyle.DashLine),
                               name="suspicious above mu/eps = 0.33")
        self.scatter_plot.addItem(cut)
        self.scatter_plot.setXRange(0, 1.5)
        self.scatter_plot.setYRange(0, 1.2)


class QtDuringTask:
    """A bluesky DuringTask that keeps Qt (the monitor) responsive while the RunEngine runs."""

    def block(self, blocking_event):
        app = QtWidgets.QApplication.instance()
        while not blocking_event.wait(0.03):
            if app is not None:
                app.processEvents()


class _Callback(event_model.DocumentRouter):
    """Hands events (with their stream name) and resources to the monitor's methods."""

    def __init__(self, *, event, resource=None):
        super().__init__()
        self._event, self._resource = event, resource
        self._streams: dict[str, str] = {}

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]

    def resource(self, doc):
        if self._resource:
            self._resource(doc)

    def event(self, doc):
        self._event(doc, self._streams.get(doc["descriptor"], ""))
