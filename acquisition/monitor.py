"""The live monitor (pyqtgraph): what the instrument measures, while it measures.

Panels (drawn by :mod:`acquisition.monitor_panels`): the latest raw frame; transmission
(mu), dark-field (eps) and differential phase of the latest processed set, each in mm at the
sample with a colour bar of its levels and unit, the clusters outlined on the dark-field
image and named by class and R = mu/eps; the mosaic's eps growing tile by tile at the stage
positions, replaced by the stitched mosaic when it is complete; the mu-eps scatter of the
clusters' pixels by class over Table 1's bands and the 0.33 cut-off (Scherer et al. 2016,
Table 1 and Fig. 5); the cluster table (class, R, suspicious, borderline); the stepping
curve of a clicked pixel; the run, its progress and dose, the processing status (waiting,
processing, done, failed with the reason) and the tube's kV/mA/shutter/interlock.

Documents may come from any thread (the RunEngine's, a 0MQ consumer's): they are queued to
the Qt thread through a signal, so the monitor never blocks acquisition, and an error while
showing one is logged, never raised.  Derived images (the labels image too) are read through
the documents' datum references by the RunRouter's filler (:data:`acquisition.storage.frames.HANDLERS`);
the clusters' pixels for the scatter from the same derived file's ``cluster_pixels``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import event_model
import h5py
import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from .monitor_panels import (
    CLASS_COLOURS,
    ClusterOverlay,
    ClusterTable,
    ImagePanel,
    MosaicPanel,
    ScatterPanel,
)
from .processing.analysis import SetAssembler
from .storage.frames import HANDLERS
from .storage.run_record import sample_id, shutter_open

log = logging.getLogger(__name__)

__all__ = ["CLASS_COLOURS", "MonitorWindow", "QtDuringTask"]

STATUS_COLOURS = {"waiting": "#555555", "processing": "#b86e00", "done": "#1a7f37", "failed": "#c62828"}


def _pixel_mm(start: dict) -> float | None:
    """mm per pixel at the sample from a start document, or None if it does not say."""
    value = (start.get("detector_pixel") or {}).get("sample_pixel_mm")
    return float(value) if value else None


@dataclass
class _Processing:
    """How far the processing of one raw run is: sets complete, derived runs started/ended."""

    sets: SetAssembler | None = None
    complete: int = 0
    stopped: bool = False
    planned: int = 1  # derived runs: one per set, and for a mosaic one per tile and the stitch
    mosaic: bool = False
    started: int = 0
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)

    def state(self, clusters: list[dict]) -> tuple[str, str]:
        """(state, text) for the status line."""
        ended = self.succeeded + len(self.failures)
        stitch = self.mosaic and self.stopped and self.succeeded > 0  # after its last tile's
        handed = max(self.complete + stitch, self.started)  # to the processor so far
        total = max(self.planned, handed)
        failed = f"failed: {self.failures[-1]}" if self.failures else ""
        if handed > ended:
            text = f"processing... ({ended} of {total} derived runs done)"
            return "processing", f"{text}; {failed}" if failed else text
        if failed:
            return "failed", failed
        if self.sets is not None and not self.stopped and ended < total:
            return "waiting", f"waiting for a complete phase-stepping set ({ended} of {total} processed)"
        if self.succeeded:
            suspicious = sum(bool(c["suspicious"]) for c in clusters)
            borderline = sum(bool(c["borderline"]) for c in clusters)
            return "done", (f"done: {len(clusters)} clusters, {suspicious} suspicious (R > 0.33), "
                            f"{borderline} borderline")
        if self.sets is None:
            return "waiting", "not a phase-stepping run: nothing to process"
        return "waiting", "no complete phase-stepping set: nothing processed"


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
        self.panels = {  # context above, the dark-field image and the mosaic large below
            "raw": ImagePanel(self.views, 0, 0, "latest raw frame", "ADU"),
            "absorption": ImagePanel(self.views, 0, 1, "absorption mu", "mu = -ln T (dimensionless)"),
            "differential_phase": ImagePanel(self.views, 0, 2, "differential phase", "dphi (rad)",
                                             colour_map="CET-D1", symmetric=True),
            "scattering": ImagePanel(self.views, 1, 0, "dark-field eps, clusters by class and R",
                                     "eps = -ln V (dimensionless)", colspan=2)}
        self.curve_plot = self.views.addPlot(row=0, col=3, title="stepping curve (click a raw pixel)")
        self.curve_plot.setLabel("bottom", "G2 position (um)")
        self.curve_plot.setLabel("left", "intensity (ADU)")
        self.curve_plot.getAxis("left").enableAutoSIPrefix(False)
        self.curve = self.curve_plot.plot([], [], pen=pg.mkPen(150, 150, 255), symbol="o")
        self.mosaic = MosaicPanel(self.views, 1, 2, colspan=2)
        self.views.ci.layout.setRowStretchFactor(0, 2)
        self.views.ci.layout.setRowStretchFactor(1, 3)
        self.views.ci.layout.setHorizontalSpacing(16)
        self.panels["mosaic"] = self.mosaic
        self.images = {key: panel.item for key, panel in self.panels.items()}
        self.colour_bars = {key: panel.bar for key, panel in self.panels.items()}
        self.images["raw"].mouseClickEvent = self._pixel_clicked
        self.overlay = ClusterOverlay(self.panels["scattering"])
        self.table = ClusterTable()
        scatter_view = pg.PlotWidget()
        self.scatter = ScatterPanel(scatter_view.getPlotItem())
        side = QtWidgets.QVBoxLayout()
        heading = QtWidgets.QLabel("<b>clusters</b> of the latest processed set (Table 1; suspicious "
                                   "above R = 0.33); the dark-field panel zooms to them (right-click, "
                                   "View All: the whole image)")
        heading.setWordWrap(True)
        side.addWidget(heading)
        side.addWidget(self.table, 2)
        side.addWidget(scatter_view, 3)
        grid.addLayout(side, 0, 2)
        self.status = QtWidgets.QLabel("waiting for a run")
        grid.addWidget(self.status, 1, 0)
        self.progress = QtWidgets.QProgressBar()
        grid.addWidget(self.progress, 1, 1)
        self.processing_status = QtWidgets.QLabel()
        self.processing_status.setWordWrap(True)
        grid.addWidget(self.processing_status, 1, 2, 2, 1)
        self.tube_status = QtWidgets.QLabel("tube: not watched")
        grid.addWidget(self.tube_status, 2, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(2, 0)
        self.table.setMinimumWidth(470)
        scatter_view.setFixedWidth(520)
        self._set_processing("waiting", "processing: waiting for a run")
        self.tube = None
        self.tube_changed.connect(self._show_tube)
        self.stepping: dict[float, np.ndarray] = {}
        self.cluster_rows: list[dict] = []
        self._runs: dict[str, _Processing] = {}  # raw run uid -> its processing
        self._shown_run: str | None = None       # the run the status line is about
        self._raw_router = event_model.RunRouter([self._raw_factory], handler_registry=HANDLERS)
        self._derived_router = event_model.RunRouter([self._derived_factory], handler_registry=HANDLERS)
        self.document.connect(self._dispatch)
        self.resize(1800, 1000)

    @property
    def scatters(self) -> dict[str, pg.ScatterPlotItem]:
        """The scatter's point sets by class (all four, empty until a cluster comes)."""
        return self.scatter.scatters

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
        try:
            router(name, doc)
        except Exception:  # a document the monitor cannot show must not close the window
            log.exception("monitor: %s %s document not shown", source, name)

    # -- processing status ----------------------------------------------------------------
    def _set_processing(self, state: str, text: str) -> None:
        self.processing_status.setText(text)
        self.processing_status.setStyleSheet(f"color: {STATUS_COLOURS[state]}; font-weight: bold")

    def _run(self, uid: str) -> _Processing:
        """The processing record of raw run ``uid`` (the latest 100 runs are kept)."""
        if uid not in self._runs and len(self._runs) >= 100:
            del self._runs[next(iter(self._runs))]
        return self._runs.setdefault(uid, _Processing())

    def _update_processing(self) -> None:
        run = self._runs.get(self._shown_run)
        if run is not None:
            self._set_processing(*run.state(self.cluster_rows))

    # -- raw runs --------------------------------------------------------------------------
    def _raw_factory(self, name, start):
        self.progress.setMaximum(int(start.get("total_frames", 0)) or 1)
        self.progress.setValue(0)
        self._run_label = f"{start.get('plan_name', '')} {sample_id(start.get('sample'))}"
        self._raw_start = start
        self._raw_pixel_mm = _pixel_mm(start)
        self.status.setText(self._run_label)
        self.stepping.clear()
        run = self._run(start["uid"])
        stepping = start.get("phase_stepping")
        if stepping:
            run.sets = SetAssembler.from_start(stepping)
            tiles = (start.get("mosaic") or {}).get("tiles")
            run.mosaic = bool(tiles)
            run.planned = len(tiles) + 1 if tiles else 1
        self._shown_run = start["uid"]
        self._update_processing()
        return [_Callback(event=self._raw_event, stop=self._raw_stop)], []

    def _raw_event(self, doc, stream):
        data = doc["data"]
        frame = next((v for v in data.values() if isinstance(v, np.ndarray) and v.ndim == 2), None)
        if frame is not None:
            image = frame.astype(np.float32)
            # percentile levels: a hot or dead pixel must not black out the frame
            self.panels["raw"].show(image, self._raw_pixel_mm, levels=np.percentile(image, (0.5, 99.5)))
            self.progress.setValue(self.progress.value() + 1)
            start = self._raw_start
            if stream == "primary" and "g2" in data:
                self.stepping[float(data["g2"])] = frame
            self.status.setText(f"{self._run_label}  [{stream}]")
            run = self._run(start["uid"])
            if run.sets is not None:
                g2 = float(data.get(start.get("motors", ["g2"])[0], np.nan))
                run.complete += len(run.sets.add(stream, g2, None, int(data.get("tile", 0)),
                                                 shutter_open(start, data)))
                self._update_processing()
        if "delivered_dose_mgy" in data:
            self.status.setText(f"{self._run_label}  dose delivered {data['delivered_dose_mgy']:.1f} mGy")

    def _raw_stop(self, doc):
        run = self._run(doc["run_start"])
        if run.sets is not None:
            run.complete += len(run.sets.finish())  # held sets: the processor reports them
        run.stopped = True
        if doc.get("exit_status", "success") != "success":
            self.status.setText(f"{self._run_label}  run {doc['exit_status']}: {doc.get('reason', '')}")
        self._update_processing()

    def _pixel_clicked(self, event):
        if not self.stepping:
            return
        col, row = (int(v) for v in (event.pos().x(), event.pos().y()))  # the item's pixel coordinates
        self.show_stepping_curve(row, col)

    def show_stepping_curve(self, row: int, col: int) -> None:
        """Plot the latest sample set's intensities of one pixel against the G2 position."""
        positions = sorted(self.stepping)
        values = [float(self.stepping[x][row, col]) for x in positions]
        self.curve.setData(positions, values)
        x, y = self.panels["raw"].to_view(row, col)
        where = f" at ({x:.1f}, {y:.1f}) mm" if self._raw_pixel_mm else ""
        self.curve_plot.setTitle(f"pixel ({row}, {col}){where}")

    # -- derived runs ----------------------------------------------------------------------
    def _derived_factory(self, name, start):
        parent = start.get("parent_uid")
        run = self._run(parent)  # a raw run not seen too (remote processing)
        run.started += 1
        self._shown_run = parent
        self._update_processing()
        state = {"start": start, "file": None}
        return [_Callback(event=lambda doc, stream: self._derived_event(state, doc, stream),
                          resource=lambda doc: state.update(file="/" + doc["resource_path"].lstrip("/")),
                          stop=lambda doc: self._derived_stop(parent, doc))], []

    def _derived_stop(self, parent, doc):
        run = self._run(parent)
        if doc.get("exit_status") == "success":
            run.succeeded += 1
        else:
            run.failures.append(doc.get("reason") or doc.get("exit_status", "no reason given"))
        self._shown_run = parent
        self._update_processing()

    def _derived_event(self, state, doc, stream):
        data, start = doc["data"], state["start"]
        pixel_mm = _pixel_mm(start)
        if stream == "images":
            for key in ("absorption", "scattering", "differential_phase"):
                if key in data:
                    self.panels[key].show(np.nan_to_num(np.asarray(data[key], np.float32)), pixel_mm)
            self._show_mosaic(start, data, pixel_mm)
            # the clusters shown are those of the image shown: this run's, from here on
            self.cluster_rows.clear()
            self.scatter.clear()
            self.table.clear_rows()
            self.overlay.clear(data.get("labels"))
        elif stream == "clusters":
            self.cluster_rows.append(data)
            self.overlay.add(data)
            self.table.add(data, pixel_mm)
            self._add_to_scatter(state["file"], data)
            self._update_processing()

    def _show_mosaic(self, start: dict, images: dict, pixel_mm: float | None) -> None:
        """A tile's eps pasted at its stage position; the stitched mosaic when it comes."""
        if "scattering" not in images:
            return
        eps = np.nan_to_num(np.asarray(images["scattering"], np.float32))
        if start.get("plan_name") == "darkfield_mosaic_stitch":
            self.mosaic.show_stitched(eps, pixel_mm, len(start.get("tiles", [])))
        elif "tile" in start and pixel_mm:
            self.mosaic.add_tile(start["parent_uid"], start["tile"], eps, pixel_mm)

    def _add_to_scatter(self, path: str | None, row: dict) -> None:
        """The cluster's tissue-normalised pixels (derived file, ``cluster_pixels``)."""
        if path is None:
            return
        try:
            with h5py.File(path, "r") as f:
                group = f[f"entry/cluster_pixels/{row['label']}"]
                mu, eps = group["mu"][()], group["eps"][()]
        except (OSError, KeyError) as err:
            log.warning("monitor: no scatter for cluster %s of %s: %s", row["label"], path, err)
            return
        if row["texture"] in self.scatters:
            self.scatter.add(row["texture"], mu, eps)


class QtDuringTask:
    """A bluesky DuringTask that keeps Qt (the monitor) responsive while the RunEngine runs."""

    def block(self, blocking_event):
        app = QtWidgets.QApplication.instance()
        while not blocking_event.wait(0.03):
            if app is not None:
                app.processEvents()


class _Callback(event_model.DocumentRouter):
    """Hands events (with their stream name), resources and the stop to the monitor's methods."""

    def __init__(self, *, event, resource=None, stop=None):
        super().__init__()
        self._event, self._resource, self._stop = event, resource, stop
        self._streams: dict[str, str] = {}

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]

    def resource(self, doc):
        if self._resource:
            self._resource(doc)

    def event(self, doc):
        self._event(doc, self._streams.get(doc["descriptor"], ""))

    def stop(self, doc):
        if self._stop:
            self._stop(doc)
