"""Make docs/img/monitor.png: the live monitor after a 2 x 2 mosaic of the demo phantom.

Run from the repository root: QT_QPA_PLATFORM=offscreen python docs/monitor_screenshot.py
(in-process twins, the configured phantom and detector region, no exposure waits).
"""

import dataclasses
import tempfile
from pathlib import Path

import pyqtgraph as pg
from bluesky import RunEngine

from acquisition.config import load_config
from acquisition.instrument import simulated_instrument
from acquisition.monitor import MonitorWindow
from acquisition.plans import darkfield_mosaic
from acquisition.processing import darkfield_router

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
router.wait(timeout=300)
for _ in range(50):
    app.processEvents()
window.show_stepping_curve(256, 320)
app.processEvents()
path = Path(__file__).parent / "img" / "monitor.png"
window.grab().save(str(path))
print(f"wrote {path}")
