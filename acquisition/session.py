"""``talbot-lau session``: the operator's IPython with the instrument ready.

The namespace holds the RunEngine ``RE`` (metadata persisted between sessions), the
devices ``tube``, ``g2``, ``stage``, ``detector``, the plans, ``bp``/``bps``, the
suspenders installed on the tube, the on-the-fly processor, the run recorder, a progress
bar and BestEffortCallback ``bec`` (its table; peaks of 1-D scans in ``bec.peaks``; plots on
request with ``bec.enable_plots()`` where there is a display), the run catalogue (tiled,
``OUT/catalogue``; raw and derived runs written to it, ``find_runs`` searches it by sample
id, ``last_run`` gives the last run), ``use_working_point`` and bluesky's magics (``%mov``,
``%movr``, ``%wa``, ``%ct``).  Ctrl-C pauses the RunEngine as usual.  Only the progress bar
runs on the RunEngine's loop; the table, the recorder, the catalogue, the processor and the
monitor are buffered to threads of their own (``flush()`` waits for them), so suspenders
and Ctrl-C always answer.

The session starts in about 3 s (to its first cell, alone on 2 idle cores; about 6 s for
three starting at once, the figure ``tests/test_session.py`` prints): what is slow to start
is not done before the first prompt.  The catalogue (tiled's catalogue, server app
and in-process client, about 5 s of CPU with the writer's import) opens at its first use:
``catalogue`` is a :class:`acquisition.storage.catalogue.BackgroundCatalogue`, used as the
tiled client it becomes, opened by the first run's first document (in the catalogue
writer's buffer thread, whose documents wait for it) or the operator's first look; a
session that takes no run never starts tiled, and its exit does not wait for it.
BestEffortCallback (matplotlib.pyplot, about 0.8 s) is built at its first document or
first use.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from pathlib import Path

from .run_engine import close_run_engine, new_run_engine

log = logging.getLogger(__name__)

EXIT_TIMEOUT_S = 120.0
"""At most this long, at the session's exit, to write what the subscribers still hold."""

HELP = """\
talbot-lau session: {kind} instrument, frames and derived images in {out}
  devices   tube, g2, stage, detector        (%wa, %mov g2 1.6, %ct)
  plans     darkfield_projection(instrument, sample={{"id": ..., "thickness_mm": ...}})
            darkfield_mosaic(instrument, rows=4, columns=4, overlap=0.0)
            g2_alignment(instrument), tube_warmup(instrument, kv=40, ma=70)
            use_working_point(instrument, alignment_report(...))   later plans start G2 there
  run       RE(plan)      Ctrl-C pauses; RE.resume() / RE.abort() / RE.stop()
  results   derived  (the processor's cluster rows of the last runs, with run uid and sample)
            flush()  waits until the last run is recorded, catalogued and processed
            find_runs(catalogue, "biopsy-17")   every run of a sample, raw and (derived=True) derived
            last_run(catalogue), last_run(catalogue, derived=True)   the last raw or derived run
            bec.peaks  (after a 1-D scan)   bec.enable_plots()  (with a display)
  exit      exit, quit or Ctrl-D: the shutter closes, everything held is written first
"""


def display_available() -> bool:
    """Whether matplotlib's Qt backend can draw: an X11 or Wayland display, macOS or Windows,
    or Qt's off-screen platform (``QT_QPA_PLATFORM=offscreen``: figures drawn, not shown)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32")
                or os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"))


@functools.cache
def _best_effort_class() -> type:
    """BestEffortCallback that finds peaks of 1-D scans also without plots (no display)."""
    from bluesky.callbacks.best_effort import BestEffortCallback
    from bluesky.callbacks.fitting import PeakStats

    class PeaksBestEffortCallback(BestEffortCallback):
        """Stock BestEffortCallback; with plots disabled it still fits ``PeakStats`` to the
        hinted numeric fields of a 1-D scan's primary stream, so ``peaks`` fills (com, cen,
        max, min, fwhm) as it does under plots."""

        def _set_up_plots(self, doc, stream_name, columns):
            if self._plots_enabled:
                return super()._set_up_plots(doc, stream_name, columns)
            if (stream_name in self.noplot_streams or not columns or stream_name != self.dim_stream
                    or len(self.dim_fields) != 1
                    or (self._start_doc.get("num_points") == 1 and self.omit_single_point_plot)):
                return None
            (x_key,) = self.dim_fields
            stats = {}
            for y_key in columns:
                if doc["data_keys"][y_key]["dtype"] in ("number", "integer"):
                    peak = PeakStats(x=x_key, y=y_key,
                                     calc_derivative_and_stats=self._calc_derivative_and_stats)
                    peak("start", self._start_doc)
                    peak("descriptor", doc)
                    stats[y_key] = peak
            self._peak_stats[doc["uid"]] = stats
            return None

    PeaksBestEffortCallback.__qualname__ = "PeaksBestEffortCallback"
    return PeaksBestEffortCallback


class SessionBestEffort:
    """The session's ``bec``: bluesky's BestEffortCallback, built at its first document or
    first use (its import takes matplotlib.pyplot), with plots disabled and peaks of 1-D
    scans still found (``bec.peaks``).  Everything else is the BestEffortCallback's.

    ``enable_plots()`` (from the IPython prompt) turns live plots on where there is a
    display: matplotlib's Qt backend with IPython's Qt event loop, and bluesky's Qt
    teleporter, so the callback, which runs in the table's buffer thread, draws in the main
    thread.  Without a display it says so and leaves the plots off."""

    _COPIED = ("_heading_enabled", "_table_enabled", "_baseline_enabled", "overplot",
               "noplot_streams", "omit_single_point_plot")

    def __init__(self):
        self._bec = None
        self._lock = threading.Lock()
        self._teleported = False
        self.buffer = None
        """The DocumentBuffer that feeds it: ``peaks`` is read after it caught up."""

    def catch_up(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` s) until it has handled every document so far: its
        buffer drained and, with plots, the documents teleported to the main thread handled
        (Qt events processed there).  True if it did in time."""
        done = self.buffer.drain(timeout) if self.buffer is not None else True
        if self._teleported and threading.current_thread() is threading.main_thread():
            from matplotlib.backends.qt_compat import QtWidgets

            app = QtWidgets.QApplication.instance()
            if app is not None:
                app.processEvents()
        return done

    def _callback(self, *, teleporter: bool = False):
        with self._lock:
            if self._bec is None or teleporter:
                bec = _best_effort_class()(use_teleporter=teleporter)
                if self._bec is not None:
                    for name in self._COPIED:
                        setattr(bec, name, getattr(self._bec, name))
                else:
                    bec.disable_plots()
                self._bec = bec
            return self._bec

    def __call__(self, name, doc):
        return self._callback()(name, doc)

    def enable_plots(self) -> bool:
        """Live plots (and their peaks) from the next run on; False, with a note, without a
        display.  Call it at the prompt (the main thread)."""
        if not display_available():
            print("bec: no display (DISPLAY unset): plots stay off; bec.peaks still fills "
                  "after a 1-D scan")
            return False
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("bec.enable_plots(): call it from the session's prompt (main thread)")
        from matplotlib.backends.qt_compat import (
            QtWidgets,  # pyqtgraph's binding (PyQt6)
        )

        # a running Qt application: matplotlib then takes Qt as the interactive framework
        self._app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["talbot-lau"])
        import matplotlib.pyplot as plt

        plt.switch_backend("qtagg")  # its first figure starts IPython's Qt loop at the prompt
        plt.ion()
        from bluesky.callbacks.mpl_plotting import initialize_qt_teleporter

        initialize_qt_teleporter()  # the RunEngine pumps Qt while a plan runs (DefaultDuringTask)
        self._callback(teleporter=True).enable_plots()
        self._teleported = True
        return True

    @property
    def peaks(self):
        """The peaks of the last 1-D scan, once the table has seen its stop document."""
        if threading.current_thread() is threading.main_thread():
            self.catch_up(10.0)
        return self._callback().peaks

    def __getattr__(self, name):
        if name.startswith("__") or name in ("buffer", "_bec", "_lock", "_teleported", "_app"):
            raise AttributeError(name)
        return getattr(self._callback(), name)

    def __repr__(self) -> str:
        return f"<SessionBestEffort of {self._bec!r}>" if self._bec else "<SessionBestEffort (not built yet)>"


def metadata_dir() -> Path:
    """Where RE.md persists (``$TALBOT_LAU_STATE`` or ~/.local/state/talbot-lau)."""
    base = os.environ.get("TALBOT_LAU_STATE") or Path.home() / ".local" / "state" / "talbot-lau"
    return Path(base) / "runengine-metadata"


class SessionSubscribers:
    """The session's buffered subscribers, its processor and its catalogue, with the
    bounded ``flush`` and ``close`` the namespace and the session's exit use."""

    def __init__(self, buffers: list, processor, catalogue, engine=None):
        self.buffers = buffers
        self.processor = processor
        self.catalogue = catalogue
        self.engine = engine  # the namespace's RE: its loop and thread end first at close
        self.closed = False

    def after_cell(self, *args) -> None:
        """IPython's post_run_cell hook: the table printed to its end before the prompt."""
        if not self.closed:
            table = getattr(self.buffers[0], "target", None)
            if isinstance(table, SessionBestEffort):
                table.catch_up(2.0)
            else:
                self.buffers[0].drain(2.0)

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait (at most ``timeout`` s in all) until every document so far is recorded,
        catalogued and processed; True if all was done in time."""
        deadline = time.monotonic() + timeout
        done = True
        for buffer in self.buffers:
            if not buffer.drain(max(deadline - time.monotonic(), 0.0)):
                log.error("session: %r not drained within %s s", buffer, timeout)
                done = False
        try:
            self.processor.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except TimeoutError as err:
            log.error("session: %s", err)
            done = False
        return done

    def close(self, timeout: float = 120.0) -> bool:
        """At the session's exit, in this order and within ``timeout`` s in all: every
        buffer drained and stopped, the processor's last results published, the catalogue
        (tiled's in-process server) closed."""
        if self.closed:
            return True
        self.closed = True
        deadline = time.monotonic() + timeout
        done = True
        if self.engine is not None:  # a plan still running is halted: its stop reaches the buffers
            done &= close_run_engine(self.engine)
        for buffer in self.buffers:
            done &= buffer.close(max(deadline - time.monotonic(), 0.0))
        done &= self.processor.close(max(deadline - time.monotonic(), 0.0))
        try:
            self.catalogue.close(max(deadline - time.monotonic(), 1.0))
        except Exception:
            log.exception("session: closing the catalogue failed")
            done = False
        if not done:
            log.error("session: not everything was written before the exit (timeout %s s)", timeout)
        return done


def session_namespace(instrument, out_dir: str | Path, *, kind: str = "simulated",
                      monitor=None, frames_dir: str | Path | None = None,
                      suspend_sleep_s: float = 1.0) -> dict:
    """Everything the operator needs, wired together (``monitor``: a MonitorWindow;
    ``frames_dir``: where the detector's files are, for the catalogue to read them;
    ``suspend_sleep_s``: how long the source must be good again before a suspended plan
    resumes).

    Only the progress bar runs on the RunEngine's loop (at most 2 ms a document, measured).
    BestEffortCallback's table (its LiveTable sleeps 0.1 s at every stop document: as long
    as a suspender waits for the loop before it gives up), the run recorder, the catalogue
    writer, the processor and the monitor each get the documents through a
    :class:`acquisition.processing.live.DocumentBuffer` (a thread of their own), so no file,
    catalogue or frame I/O ever holds the loop and suspenders and Ctrl-C always answer.
    The catalogue opens at its first use (the first document, in its writer's buffer
    thread; later documents wait behind it).  ``flush()`` in the namespace waits until they
    have caught up; the namespace's ``session`` (:class:`SessionSubscribers`) closes them at
    the exit."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.utils import PersistentDict

    from . import plans
    from .plans.source import honour_time_scale
    from .processing.derived_collector import DerivedCollector
    from .processing.live import DocumentBuffer, darkfield_router
    from .progress import PlanProgress
    from .storage.catalogue import (
        BackgroundCatalogue,
        catalogue_writer,
        find_runs,
        last_run,
    )
    from .storage.run_recorder import run_recorder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if monitor is not None:
        from .monitor import QtDuringTask

        engine = new_run_engine(during_task=QtDuringTask())
    else:
        engine = new_run_engine()
    engine.record_interruptions = True  # suspensions and pauses: an "interruptions" stream
    engine.md_normalizer = plans.working_point_metadata(instrument)  # after use_working_point
    metadata_dir().mkdir(parents=True, exist_ok=True)
    engine.md = PersistentDict(str(metadata_dir()))
    bec = SessionBestEffort()
    derived = DerivedCollector()
    catalogue = BackgroundCatalogue(out / "catalogue",
                                    readable=[out, *([frames_dir] if frames_dir else [])])
    catalogue_buffer = DocumentBuffer(catalogue_writer(catalogue), "catalogue")  # opens it at its first document
    # the processor publishes from its worker thread: these consumers run there
    derived_consumers = [derived, catalogue_writer(catalogue)]
    if monitor is not None:
        derived_consumers.append(monitor.derived_callback)
        monitor.watch_tube(instrument.tube)

    def publish(name, doc):
        for consumer in derived_consumers:
            consumer(name, doc)

    from .storage.tissue_calibration_file import configured_calibration

    processor = darkfield_router(out, publish=publish, calibration=configured_calibration(instrument.config))
    bec.buffer = DocumentBuffer(bec, "table")
    buffers = [bec.buffer,
               DocumentBuffer(run_recorder(out), "run-recorder"),
               catalogue_buffer,
               DocumentBuffer(processor, "processor")]
    if monitor is not None:
        buffers.append(DocumentBuffer(monitor.raw_callback, "monitor"))
    for callback in (PlanProgress(), *buffers):
        engine.subscribe(callback)
    honour_time_scale(engine, instrument)  # a warm-up's dwell at the twin's pace
    for suspender in plans.source_suspenders(instrument.tube, sleep_s=suspend_sleep_s):
        engine.install_suspender(suspender)
    subscribers = SessionSubscribers(buffers, processor, catalogue, engine)
    namespace = {
        "RE": engine, "bec": bec, "bp": bp, "bps": bps, "instrument": instrument,
        "tube": instrument.tube, "g2": instrument.g2, "stage": instrument.stage,
        "detector": instrument.detector, "derived": derived.clusters,
        "catalogue": catalogue, "find_runs": find_runs, "last_run": last_run,
        "processor": processor, "flush": subscribers.flush, "session": subscribers,
        "help_text": HELP.format(kind=kind, out=out), "monitor": monitor,
    }
    namespace.update({name: getattr(plans, name) for name in plans.__all__})
    return namespace


def start_session(instrument, out_dir, *, kind: str, command: str | None = None,
                  with_monitor: bool = False, publish: str | None = None,
                  frames_dir: str | Path | None = None) -> int:
    """Open IPython on the namespace (or run ``command`` in it and exit)."""
    import IPython
    from traitlets.config import Config

    monitor = None
    gui = []
    if with_monitor:
        import pyqtgraph as pg

        from .monitor import MonitorWindow

        pg.mkQApp("talbot-lau")
        monitor = MonitorWindow()
        monitor.show()
        gui = ["%gui qt"]
    namespace = session_namespace(instrument, out_dir, kind=kind, monitor=monitor, frames_dir=frames_dir)
    sender = None
    if publish:
        from .processing.remote import parse_address, publisher

        sender = publisher(parse_address(publish))  # msgpack; its 0MQ socket closed at the exit
        namespace["RE"].subscribe(sender)
    config = Config()
    config.InteractiveShellApp.exec_lines = gui + [
        "from bluesky.magics import BlueskyMagics",
        "get_ipython().events.register('post_run_cell', session.after_cell)",
        "get_ipython().register_magics(BlueskyMagics)",
        "print(help_text)",
    ]
    config.TerminalIPythonApp.display_banner = False
    argv = ["--no-confirm-exit", "--colors=nocolor"]
    if command is not None:
        argv += ["-c", command]
    subscribers = namespace["session"]  # our own reference: IPython may clear the namespace
    try:
        IPython.start_ipython(argv=argv, user_ns=namespace, config=config)
    finally:  # shutter closed; buffers drained, the last results published, tiled stopped
        try:
            instrument.tube.close_shutter_now()
        except Exception as err:  # noqa: BLE001  say it, and still write what is held
            log.error("session exit: %s", err)
        subscribers.close(timeout=EXIT_TIMEOUT_S)
        if sender is not None:
            sender.close()
        if monitor is not None:  # Qt objects gone before PyQt's own exit cleanup (it can crash)
            from pyqtgraph.Qt import QtWidgets

            monitor.close()
            monitor.deleteLater()
            QtWidgets.QApplication.processEvents()
    return 0
