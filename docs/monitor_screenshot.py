"""Make docs/img/monitor.png: the live monitor after a 2 x 2 mosaic of the demo phantom.

Run from the repository root: QT_QPA_PLATFORM=offscreen python docs/monitor_screenshot.py
(in-process twins, the configured phantom and detector region, no exposure waits).
Exits with status 1 and a message if the processing did not finish or the file was not
written.
"""

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pyqtgraph as pg
from bluesky import RunEngine

from acquisition.config import load_config
from acquisition.instrument import simulated_instrument
from acquisition.monitor import MonitorWindow
from acquisition.plans import darkfield_mosaic
from acquisition.processing.live import darkfield_router

PATH = Path(__file__).parent / "img" / "monitor.png"


def main() -> int:
    app = pg.mkQApp("talbot-lau monitor")
    config = load_config()
    config = dataclasses.replace(config, simulation=dataclasses.replace(config.simulation, time_scale=0.0))
    out = Path(tempfile.mkdtemp(prefix="monitor-shot-"))
    instrument = simulated_instrument(config, write_path=out / "raw")
    window = MonitorWindow()
    window.watch_tube(instrument.tube)
    window.show()
    engine = RunEngine({})
    engine.subscribe(window.raw_callback)
    router = darkfield_router(out, publish=window.derived_callback)
    engine.subscribe(router)
    engine(darkfield_mosaic(instrument, rows=2, columns=2, overlap=0.1, exposure_s=4.0,
                            sample={"id": "demo phantom"}))  # 4 s steps: within the dose budget
    try:
        router.wait(timeout=600)
    except TimeoutError as err:
        print(f"monitor_screenshot: {err}; no screenshot written", file=sys.stderr)
        return 1
    for _ in range(50):
        app.processEvents()
    if not window.processing_status.text().startswith("done"):
        print(f"monitor_screenshot: processing did not end well ({window.processing_status.text()}); "
              "no screenshot written", file=sys.stderr)
        return 1
    window.show_stepping_curve(256, 320)
    app.processEvents()
    try:
        PATH.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"monitor_screenshot: cannot create {PATH.parent}: {err}", file=sys.stderr)
        return 1
    if not window.grab().save(str(PATH)):
        print(f"monitor_screenshot: could not write {PATH} (Qt's QPixmap.save failed: is the directory "
              "writable, the disk full?)", file=sys.stderr)
        return 1
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
