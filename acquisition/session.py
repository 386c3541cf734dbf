"""``talbot-lau session``: the operator's IPython with the instrument ready.

The namespace holds the RunEngine ``RE`` (metadata persisted between sessions), the
devices ``tube``, ``g2``, ``stage``, ``detector``, the plans, ``bp``/``bps``, the
suspenders installed on the tube, the on-the-fly processor, the run recorder, a progress
bar and BestEffortCallback's table (no plots without a display), the run catalogue
(tiled, ``OUT/catalogue``; raw and derived runs written to it, ``find_runs`` searches it by
sample id) and bluesky's magics (``%mov``, ``%movr``, ``%wa``, ``%ct``).  Ctrl-C pauses the
RunEngine as usual.  Only the progress bar runs on the RunEngine's loop; the table, the
recorder, the catalogue, the processor and the monitor are buffered to threads of their
own (``flush()`` waits for them), so suspenders and Ctrl-C always answer.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_TIMEOUT_S = 120.0
"""At most this long, at the session's exit, to write what the subscribers still hold."""

HELP = """\
talbot-lau session: {kind} instrument, frames and derived images in {out}
  devices   tube, g2, stage, detector        (%wa, %mov g2 1.6, %ct)
  plans     darkfield_projection(instrument, sample={{"id": ..., "thickness_mm": ...}})
            darkfield_mosaic(instrument, rows=4, columns=4, overlap=0.0)
            g2_alignment(instrument), tube_warmup(instrument, kv=40, ma=70)
  run       RE(plan)      Ctrl-C pauses; RE.resume() / RE.abort() / RE.stop()
  results   derived  (the processor's cluster rows of the last runs)
            flush()  waits until the last run is recorded, catalogued and processed
            find_runs(catalogue, "biopsy-17")   every run of a sample, raw and (derived=True) derived
"""


def metadata_dir() -> Path:
    """Where RE.md persists (``$TALBOT_LAU_STATE`` or ~/.local/state/talbot-lau)."""
    base = os.environ.get("TALBOT_LAU_STATE") or Path.home() / ".local" / "state" / "talbot-lau"
    return Path(base) / "runengine-metadata"


class SessionSubscribers:
    """The session's buffered subscribers, its processor and its catalogue, with the
    bounded ``flush`` and ``close`` the namespace and the session's exit use."""

    def __init__(self, buffers: list, processor, catalogue):
        self.buffers = buffers
        self.processor = processor
        self.catalogue = catalogue
        self.closed = False

    def after_cell(self, *args) -> None:
        """IPython's post_run_cell hook: the table printed to its end before the prompt."""
        if not self.closed:
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
        for buffer in self.buffers:
            done &= buffer.close(max(deadline - time.monotonic(), 0.0))
        done &= self.processor.close(max(deadline - time.monotonic(), 0.0))
        try:
            self.catalogue.context.close()
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
    :class:`acquisition.processing.DocumentBuffer` (a thread of their own), so no file,
    catalogue or frame I/O ever holds the loop and suspenders and Ctrl-C always answer.
    ``flush()`` in the namespace waits until they have caught up; the namespace's
    ``session`` (:class:`SessionSubscribers`) closes them at the exit."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky import RunEngine
    from bluesky.callbacks.best_effort import BestEffortCallback
    from bluesky.utils import PersistentDict

    from . import plans
    from .plans.source import honour_time_scale
    from .catalogue import catalogue_writer, find_runs, open_catalogue
    from .demo import DerivedCollector
    from .processing import DocumentBuffer, darkfield_router
    from .progress import PlanProgress
    from .run_record import run_recorder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if monitor is not None:
        from .monitor import QtDuringTask

        engine = RunEngine({}, during_task=QtDuringTask())
    else:
        engine = RunEngine({})
    engine.record_interruptions = True  # suspensions and pauses: an "interruptions" stream
    metadata_dir().mkdir(parents=True, exist_ok=True)
    engine.md = PersistentDict(str(metadata_dir()))
    bec = BestEffortCallback()
    bec.disable_plots()
    derived = DerivedCollector()
    catalogue = open_catalogue(out / "catalogue", readable=[out, *([frames_dir] if frames_dir else [])])
    # the processor publishes from its worker thread: these consumers run there
    derived_consumers = [derived, catalogue_writer(catalogue)]
    if monitor is not None:
        derived_consumers.append(monitor.derived_callback)
        monitor.watch_tube(instrument.tube)

    def publish(name, doc):
        for consumer in derived_consumers:
            consumer(name, doc)

    processor = darkfield_router(out, publish=publish)
    buffers = [DocumentBuffer(bec, "table"),
               DocumentBuffer(run_recorder(out), "run-recorder"),
               DocumentBuffer(catalogue_writer(catalogue), "catalogue"),
               DocumentBuffer(processor, "processor")]
    if monitor is not None:
        buffers.append(DocumentBuffer(monitor.raw_callback, "monitor"))
    for callback in (PlanProgress(), *buffers):
        engine.subscribe(callback)
    honour_time_scale(engine, instrument)  # a warm-up's dwell at the twin's pace
    for suspender in plans.source_suspenders(instrument.tube, sleep_s=suspend_sleep_s):
        engine.install_suspender(suspender)
    subscribers = SessionSubscribers(buffers, processor, catalogue)
    namespace = {
        "RE": engine, "bec": bec, "bp": bp, "bps": bps, "instrument": instrument,
        "tube": instrument.tube, "g2": instrument.g2, "stage": instrument.stage,
        "detector": instrument.detector, "derived": derived.clusters,
        "catalogue": catalogue, "find_runs": find_runs, "processor": processor,
        "flush": subscribers.flush, "session": subscribers,
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
    if publish:
        from bluesky.callbacks.zmq import Publisher

        from .remote import parse_address, serialize

        namespace["RE"].subscribe(Publisher(parse_address(publish), serializer=serialize))  # msgpack
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
    return 0
