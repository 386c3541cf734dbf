"""``talbot-lau session``: the operator's IPython with the instrument ready.

The namespace holds the RunEngine ``RE`` (metadata persisted between sessions), the
devices ``tube``, ``g2``, ``stage``, ``detector``, the plans, ``bp``/``bps``, the
suspenders installed on the tube, the on-the-fly processor, the run recorder, a progress
bar and BestEffortCallback's table (no plots without a display), the run catalogue
(tiled, ``OUT/catalogue``; raw and derived runs written to it, ``find_runs`` searches it by
sample id) and bluesky's magics (``%mov``, ``%movr``, ``%wa``, ``%ct``).  Ctrl-C pauses the
RunEngine as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

HELP = """\
talbot-lau session: {kind} instrument, frames and derived images in {out}
  devices   tube, g2, stage, detector        (%wa, %mov g2 1.6, %ct)
  plans     darkfield_projection(instrument, sample={{"id": ..., "thickness_mm": ...}})
            darkfield_mosaic(instrument, rows=4, columns=4, overlap=0.1)
            g2_alignment(instrument), tube_warmup(instrument, kv=40, ma=70)
  run       RE(plan)      Ctrl-C pauses; RE.resume() / RE.abort() / RE.stop()
  results   derived  (the processor's cluster rows of the last runs)
            find_runs(catalogue, "biopsy-17")   every run of a sample, raw and (derived=True) derived
"""


def metadata_dir() -> Path:
    """Where RE.md persists (``$TALBOT_LAU_STATE`` or ~/.local/state/talbot-lau)."""
    base = os.environ.get("TALBOT_LAU_STATE") or Path.home() / ".local" / "state" / "talbot-lau"
    return Path(base) / "runengine-metadata"


def session_namespace(instrument, out_dir: str | Path, *, kind: str = "simulated",
                      monitor=None, frames_dir: str | Path | None = None) -> dict:
    """Everything the operator needs, wired together (``monitor``: a MonitorWindow;
    ``frames_dir``: where the detector's files are, for the catalogue to read them)."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky import RunEngine
    from bluesky.callbacks.best_effort import BestEffortCallback
    from bluesky.utils import PersistentDict

    from . import plans
    from .catalogue import catalogue_writer, find_runs, open_catalogue
    from .demo import DerivedCollector
    from .processing import darkfield_router
    from .progress import PlanProgress
    from .run_record import run_recorder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if monitor is not None:
        from .monitor import QtDuringTask

        engine = RunEngine({}, during_task=QtDuringTask())
    else:
        engine = RunEngine({})
    metadata_dir().mkdir(parents=True, exist_ok=True)
    engine.md = PersistentDict(str(metadata_dir()))
    bec = BestEffortCallback()
    bec.disable_plots()
    derived = DerivedCollector()
    catalogue = open_catalogue(out / "catalogue", readable=[out, *([frames_dir] if frames_dir else [])])
    derived_consumers = [derived, catalogue_writer(catalogue)]
    if monitor is not None:
        derived_consumers.append(monitor.derived_callback)
        engine.subscribe(monitor.raw_callback)
        monitor.watch_tube(instrument.tube)

    def publish(name, doc):
        for consumer in derived_consumers:
            consumer(name, doc)

    processor = darkfield_router(out, publish=publish)
    for callback in (bec, PlanProgress(), run_recorder(out), catalogue_writer(catalogue), processor):
        engine.subscribe(callback)
    cfg = instrument.config.instrument
    for suspender in plans.source_suspenders(instrument.tube, kv=cfg.tube.kv, ma=cfg.tube.ma):
        engine.install_suspender(suspender)
    namespace = {
        "RE": engine, "bec": bec, "bp": bp, "bps": bps, "instrument": instrument,
        "tube": instrument.tube, "g2": instrument.g2, "stage": instrument.stage,
        "detector": instrument.detector, "derived": derived.clusters,
        "catalogue": catalogue, "find_runs": find_runs, "processor": processor,
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

        from .remote import parse_address

        namespace["RE"].subscribe(Publisher(parse_address(publish)))
    config = Config()
    config.InteractiveShellApp.exec_lines = gui + [
        "from bluesky.magics import BlueskyMagics",
        "get_ipython().register_magics(BlueskyMagics)",
        "print(help_text)",
    ]
    config.TerminalIPythonApp.display_banner = False
    argv = ["--no-confirm-exit", "--colors=nocolor"]
    if command is not None:
        argv += ["-c", command]
    try:
        IPython.start_ipython(argv=argv, user_ns=namespace, config=config)
    finally:  # the last results written, then tiled's in-process server stopped
        namespace["processor"].wait(timeout=300)
        namespace["catalogue"].context.close()
    return 0
