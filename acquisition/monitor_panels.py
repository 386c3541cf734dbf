"""The monitor's panels (pyqtgraph): what each one draws, given plain arrays and rows.

:class:`ImagePanel` shows an image in mm at the sample (``ImageItem.setRect`` from the
start document's ``detector_pixel.sample_pixel_mm``; pixel indices when a run does not
say) with a colour bar of its levels and unit.  :class:`MosaicPanel` pastes a mosaic's
tiles at their stage positions.  :class:`ClusterOverlay` outlines each cluster of the
labels image on the dark-field panel and names its class and R = mu/eps.
:class:`ScatterPanel` is the mu-eps scatter of the clusters' pixels over Table 1's bands
and the 0.33 cut-off (Scherer et al. 2016, Table 1 and Fig. 5), one colour and marker per
class.  :class:`ClusterTable` lists the clusters.  No panel reads files or documents: the
window (:mod:`acquisition.monitor`) does.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets
from scipy import ndimage

from reconstruction import SUSPICIOUS_RATIO, TABLE_1, TEXTURES
from reconstruction.stitching import place_tiles

CLASS_COLOURS = {"ultra-fine": (80, 170, 255), "fine": (255, 85, 85),
                 "pleomorphic": (205, 135, 255), "coarse": (80, 220, 80)}
"""The paper's Fig. 2 hues (blue, red, purple, green), light enough to read on black."""
CLASS_SYMBOLS = {"ultra-fine": "o", "fine": "t", "pleomorphic": "s", "coarse": "d"}
CUT_OFF_PEN = pg.mkPen((255, 220, 0), width=2, style=QtCore.Qt.PenStyle.DashLine)


def class_range(texture: str) -> str:
    """Table 1's range of R for a class, e.g. ``R 0.22-0.33`` or ``R \u2264 0.17``."""
    low, high = TABLE_1[texture]
    if not math.isfinite(low):
        return f"R \u2264 {high:.2f}"
    if not math.isfinite(high):
        return f"R \u2265 {low:.2f}"
    return f"R {low:.2f}-{high:.2f}"


def robust_levels(image: np.ndarray, percentiles=(0.5, 99.8)) -> tuple[float, float]:
    """Display levels that a hot or dead pixel cannot stretch (percentiles of the finite values)."""
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, percentiles))
    return (low, high) if high > low else (low - 0.5, low + 0.5)


class ImagePanel:
    """An image in mm at the sample, with a colour bar of its levels and unit."""

    def __init__(self, layout: pg.GraphicsLayout, row: int, col: int, title: str, unit: str,
                 colour_map: str = "CET-L1", colspan: int = 1, symmetric: bool = False):
        self.title = title
        self.symmetric = symmetric  # levels centred on 0 (a diverging colour map)
        self.plot = layout.addPlot(row=row, col=col, colspan=colspan, title=title)
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.item = pg.ImageItem()
        self.plot.addItem(self.item)
        self.bar = pg.ColorBarItem(colorMap=pg.colormap.get(colour_map), width=14, rounding=1e-6)
        self.bar.axis.setLabel(unit)  # right of the bar's values
        self.bar.axis.setWidth(None)  # wide enough for the values and the unit (the bar's own: 45 px)
        self.bar.axis.enableAutoSIPrefix(False)
        self.bar.setImageItem(self.item, insert_in=self.plot)
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)
        self.pixel_mm: float | None = None
        self._label_axes()

    def show(self, image: np.ndarray, pixel_mm: float | None, levels=None,
             origin_px: tuple[float, float] = (0.0, 0.0)) -> None:
        """Show ``image`` (rows, cols) at ``pixel_mm`` per pixel, its corner at ``origin_px``
        (row, col); ``levels`` default to :func:`robust_levels`."""
        image = np.asarray(image, np.float32)
        if levels is None:
            levels = robust_levels(image)
            if self.symmetric:
                half = max(abs(levels[0]), abs(levels[1]))
                levels = (-half, half)
        levels = tuple(float(v) for v in levels)
        self.item.setImage(image, autoLevels=False)
        span = levels[1] - levels[0]
        self.bar.rounding = 10.0 ** math.floor(math.log10(span / 1000)) if span > 0 else 1e-6
        self.bar.setLevels(levels)
        scale = pixel_mm or 1.0
        rows, cols = image.shape
        self.item.setRect(QtCore.QRectF(origin_px[1] * scale, origin_px[0] * scale, cols * scale, rows * scale))
        if pixel_mm != self.pixel_mm:
            self.pixel_mm = pixel_mm
            self._label_axes()

    def _label_axes(self) -> None:
        self.plot.setLabel("bottom", "x (mm at the sample)" if self.pixel_mm else "column (pixel)")
        self.plot.setLabel("left", "y (mm)" if self.pixel_mm else "row (pixel)")

    def to_view(self, row: float, col: float) -> tuple[float, float]:
        """(x, y) in the panel's coordinates of a pixel centre given as (row, col) indices."""
        scale = self.pixel_mm or 1.0
        return (col + 0.5) * scale, (row + 0.5) * scale


class MosaicPanel(ImagePanel):
    """A mosaic's eps growing tile by tile at the stage positions, then the stitched mosaic."""

    def __init__(self, layout, row, col, colspan=1):
        super().__init__(layout, row, col, "mosaic eps: waiting for tiles", "eps = -ln V (dimensionless)",
                         colspan=colspan)
        self.tiles: dict[int, tuple[tuple[float, float], np.ndarray]] = {}  # tile -> stage mm, eps
        self.parent_uid = None

    def add_tile(self, parent_uid: str, tile: dict, eps: np.ndarray, pixel_mm: float) -> None:
        if parent_uid != self.parent_uid:  # a new mosaic
            self.parent_uid = parent_uid
            self.tiles.clear()
        self.tiles[tile["tile"]] = ((tile["x_mm"], tile["y_mm"]), eps)
        self.show(self.paste_tiles(pixel_mm), pixel_mm)
        self.plot.setTitle(f"mosaic eps: {len(self.tiles)} tiles measured")

    def show_stitched(self, eps: np.ndarray, pixel_mm: float | None, tiles: int) -> None:
        self.show(eps, pixel_mm)
        self.plot.setTitle(f"mosaic eps: {tiles} tiles stitched")

    def paste_tiles(self, pixel_mm: float) -> np.ndarray:
        """The tiles so far on one canvas (NaN where none was measured), placed by stage."""
        stages, images = zip(*self.tiles.values())
        offsets = np.rint(place_tiles(stages, pixel_mm)).astype(int)
        rows, cols = images[0].shape
        canvas = np.full((offsets[:, 0].max() + rows, offsets[:, 1].max() + cols), np.nan, np.float32)
        for (r, c), image in zip(offsets, images):
            canvas[r:r + rows, c:c + cols] = image
        return canvas


def outline_segments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixel edges between ``mask`` and not-``mask`` as pairs of end points (x, y) in
    pixel units (x along columns, pixel (r, c) covering [c, c+1] x [r, r+1]); draw them with
    ``connect="pairs"``."""
    m = np.pad(np.asarray(mask, bool), 1)
    r, c = np.nonzero(m[1:, 1:-1] != m[:-1, 1:-1])  # horizontal edges at y = r
    xs = [np.stack([c, c + 1], 1).ravel()]
    ys = [np.repeat(r, 2)]
    r, c = np.nonzero(m[1:-1, 1:] != m[1:-1, :-1])  # vertical edges at x = c
    xs.append(np.repeat(c, 2))
    ys.append(np.stack([r, r + 1], 1).ravel())
    return np.concatenate(xs).astype(float), np.concatenate(ys).astype(float)


class ClusterOverlay:
    """Each cluster of a labels image outlined on an image panel in its class colour and
    named by number, class and R; the panel zooms to the clusters (right-click, View All,
    for the whole image)."""

    MIN_VIEW = 0.4
    """The zoomed view spans at least this fraction of the image's larger side."""

    def __init__(self, panel: ImagePanel):
        self.panel = panel
        self.labels: np.ndarray | None = None
        self._slices: list = []
        self.outlines: dict[int, pg.PlotCurveItem] = {}
        self.texts: dict[int, pg.TextItem] = {}
        self.font = QtGui.QFont()
        self.font.setPointSize(8)

    def clear(self, labels: np.ndarray | None = None) -> None:
        """Remove every outline; ``labels`` (int image, 0 = none) is the next clusters' image."""
        for item in (*self.outlines.values(), *self.texts.values()):
            self.panel.plot.removeItem(item)
        self.outlines.clear()
        self.texts.clear()
        self.labels = None if labels is None else np.asarray(labels)
        self._slices = [] if self.labels is None else ndimage.find_objects(self.labels.astype(np.int32))
        self.panel.plot.enableAutoRange()  # the whole image until clusters come

    def add(self, cluster: dict) -> None:
        """Outline cluster ``cluster["label"]`` and label it with its class and R."""
        label = int(cluster["label"])
        if self.labels is None or not 0 < label <= len(self._slices) or self._slices[label - 1] is None:
            return
        rows, cols = self._slices[label - 1]
        x, y = outline_segments(self.labels[rows, cols] == label)
        scale = self.panel.pixel_mm or 1.0
        colour = CLASS_COLOURS.get(cluster["texture"], (255, 255, 255))
        curve = pg.PlotCurveItem((x + cols.start) * scale, (y + rows.start) * scale, connect="pairs",
                                 pen=pg.mkPen(colour, width=2))
        self.panel.plot.addItem(curve)
        text = pg.TextItem(f"{label} {cluster['texture']}\nR = {cluster['ratio']:.2f}", color=colour,
                           fill=pg.mkBrush(0, 0, 0, 150), anchor=(0.5, 1.0))
        text.setFont(self.font)
        text.setPos((cols.start + cols.stop) / 2 * scale, rows.start * scale)  # above the outline
        text.setZValue(10)
        self.panel.plot.addItem(text)
        self.outlines[label], self.texts[label] = curve, text
        self.zoom()

    def zoom(self) -> None:
        """Frame the clusters (with a margin), at least MIN_VIEW of the image."""
        boxes = [self._slices[label - 1] for label in self.outlines]
        if not boxes:
            return
        top, bottom = min(r.start for r, _ in boxes), max(r.stop for r, _ in boxes)
        left, right = min(c.start for _, c in boxes), max(c.stop for _, c in boxes)
        span = max(bottom - top, right - left) * 1.3 + 8, self.MIN_VIEW * max(self.labels.shape)
        half = max(span) / 2
        scale = self.panel.pixel_mm or 1.0
        centre_x, centre_y = (left + right) / 2 * scale, (top + bottom) / 2 * scale
        self.panel.plot.vb.setRange(xRange=(centre_x - half * scale, centre_x + half * scale),
                                    yRange=(centre_y - half * scale, centre_y + half * scale), padding=0)


class ScatterPanel:
    """mu against eps of the clusters' pixels, a colour and marker per class, over Table 1's
    bands and the 0.33 cut-off; the view follows the points."""

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setTitle("clusters: mu against eps of their pixels")
        plot.setLabel("bottom", "eps = -ln V, tissue-normalised (dimensionless)")
        plot.setLabel("left", "mu = -ln T, tissue-normalised")
        plot.showGrid(x=True, y=True, alpha=0.2)
        for axis in ("bottom", "left"):
            plot.getAxis(axis).enableAutoSIPrefix(False)
        legend = plot.addLegend(offset=(-8, -8), labelTextSize="8pt")  # bottom right: few points there
        legend.setBrush(pg.mkBrush(0, 0, 0, 150))
        self._draw_bands()
        self.scatters: dict[str, pg.ScatterPlotItem] = {}
        for z, texture in enumerate(reversed(TEXTURES)):  # ultra-fine, the sparsest, on top
            colour = CLASS_COLOURS[texture]
            item = pg.ScatterPlotItem(size=6, symbol=CLASS_SYMBOLS[texture], pen=pg.mkPen(0, 0, 0, 160),
                                      brush=pg.mkBrush(*colour, 220),
                                      name=f"{texture} ({class_range(texture)})")
            item.setZValue(10 + z)
            plot.addItem(item)
            self.scatters[texture] = item
        self.fit_view()

    def _draw_bands(self) -> None:
        eps = np.array([0.0, 1e3])  # from the origin to beyond any view
        for texture in TEXTURES:
            low, high = (max(v, 0.0) if math.isfinite(v) else 1e3 for v in TABLE_1[texture])
            band = pg.FillBetweenItem(pg.PlotCurveItem(eps, low * eps), pg.PlotCurveItem(eps, high * eps),
                                      brush=pg.mkBrush(*CLASS_COLOURS[texture], 40))
            self.plot.addItem(band)
        cut = pg.PlotCurveItem(eps, SUSPICIOUS_RATIO * eps, pen=CUT_OFF_PEN,
                               name=f"cut-off R = {SUSPICIOUS_RATIO:.2f}: suspicious above")
        cut.setZValue(5)
        self.plot.addItem(cut)

    def clear(self) -> None:
        for item in self.scatters.values():
            item.clear()
        self.fit_view()

    def add(self, texture: str, mu: np.ndarray, eps: np.ndarray) -> None:
        self.scatters[texture].addPoints(x=np.asarray(eps, float), y=np.asarray(mu, float))
        self.fit_view()

    def fit_view(self) -> None:
        """From the origin (or the lowest points) to beyond 99.5 % of the points."""
        points = [item.getData() for item in self.scatters.values() if len(item.data)]
        if not points:
            self.plot.setXRange(0, 1.5, padding=0)
            self.plot.setYRange(0, 1.0, padding=0)
            return
        eps = np.concatenate([x for x, _ in points])
        mu = np.concatenate([y for _, y in points])
        x_low, x_high = np.percentile(eps, (0.25, 99.75))
        y_low, y_high = np.percentile(mu, (0.25, 99.75))
        self.plot.setXRange(min(0.0, x_low), 1.1 * max(x_high, 1e-3), padding=0)
        self.plot.setYRange(min(0.0, y_low), 1.1 * max(y_high, 1e-3), padding=0)


class ClusterTable(QtWidgets.QTableWidget):
    """One row per cluster: label, class, R, suspicious, borderline, size and position."""

    COLUMNS = ("#", "class", "R = mu/eps", "suspicious", "borderline", "pixels", "x mm", "y mm")

    def __init__(self, parent=None):
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setToolTip(f"Table 1 classes of Scherer et al. 2016; suspicious: R > {SUSPICIOUS_RATIO:.2f}; "
                        "borderline: R in a gap between classes, given to the nearest")
        self.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.verticalHeader().setDefaultSectionSize(20)

    def clear_rows(self) -> None:
        self.setRowCount(0)

    def add(self, cluster: dict, pixel_mm: float | None) -> None:
        scale = pixel_mm or 1.0
        x = (cluster["centroid_col"] + 0.5) * scale
        y = (cluster["centroid_row"] + 0.5) * scale
        suspicious, borderline = bool(cluster["suspicious"]), bool(cluster["borderline"])
        cells = (str(cluster["label"]), cluster["texture"], f"{cluster['ratio']:.3f}",
                 "yes" if suspicious else "no", "yes" if borderline else "no",
                 str(cluster["n_pixels"]), f"{x:.2f}", f"{y:.2f}")
        row = self.rowCount()
        self.insertRow(row)
        for column, text in enumerate(cells):
            item = QtWidgets.QTableWidgetItem(text)
            item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            self.setItem(row, column, item)
        self.item(row, 1).setForeground(QtGui.QColor(*CLASS_COLOURS.get(cluster["texture"], (0, 0, 0))))
        self.item(row, 1).setBackground(QtGui.QColor(40, 40, 40))
        if suspicious:
            self.item(row, 3).setBackground(QtGui.QColor(255, 190, 190))
        if borderline:
            self.item(row, 4).setBackground(QtGui.QColor(255, 225, 160))

    def rows(self) -> list[list[str]]:
        """The cells' texts, row by row."""
        return [[self.item(r, c).text() for c in range(self.columnCount())] for r in range(self.rowCount())]
