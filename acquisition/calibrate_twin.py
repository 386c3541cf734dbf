"""Make the simulated instrument's tissue calibration file: the calibration plan run on the
in-process twin with the calibration phantom, processed by the live processor (no
correction applied), and the file computed from its derived clusters.

``python -m acquisition.calibrate_twin [OUT.json]`` (default: the embedded
``configs/tissue_calibration_sim.json``) reruns it, in 8-15 s.  Like
``acquisition.instrument.simulated_instrument`` this builds a simulated instrument, so it
is the one other place acquisition/ uses the simulators.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .config import Config, default_config_dir, load_config
from .instrument import simulated_instrument
from .plans.calibration import compute_tissue_calibration, tissue_calibration
from .processing.derived_collector import DerivedCollector
from .processing.live import darkfield_router
from .run_engine import run_engine

SHIPPED = "tissue_calibration_sim.json"
"""The simulated instrument's calibration file among the embedded configs/."""


def instrument_record(config: Config) -> dict:
    """kV, mA, filtration and the first HVL (mm Al) as configured (``dose.hvl_mm_al``, what
    the lab measured) and as the twin's spectrum model gives it (spekpy, 1 m)."""
    from simulators.physics.spectrum import half_value_layer_mm_al

    inst = config.instrument
    model = half_value_layer_mm_al(inst.tube.kv, inst.source, 1000.0)
    return {"kv": inst.tube.kv, "ma": inst.tube.ma,
            "filtration": [[m, t] for m, t in inst.source.filtration],
            "hvl_mm_al": getattr(inst.dose, "hvl_mm_al", None),
            "hvl_mm_al_model": round(float(model), 3), "config_digest": config.digest}


def calibrate_twin(path: str | Path | None = None, *, config: Config | None = None,
                   calibration_id: str = "twin-tissue-calibration", work_dir: str | Path | None = None,
                   **acquisition):
    """Run the tissue calibration on the twin and write the file to ``path`` (default the
    embedded configs/ file); returns the :class:`TissueCalibration` as written."""
    from simulators.physics.calibration_phantom import (
        CalibrationPhantomSpec,
        block_transmission,
        calibration_phantom,
    )

    config = config or load_config()
    path = Path(path) if path else default_config_dir() / SHIPPED
    work = Path(work_dir or tempfile.mkdtemp(prefix="talbot-lau-calibration-"))
    spec = CalibrationPhantomSpec()
    instrument = simulated_instrument(config, write_path=work / "raw", phantom=calibration_phantom(spec))
    reference_ts = block_transmission(config.setup, config.instrument.tube.kv)
    collector, starts = DerivedCollector(), []
    processor = darkfield_router(work, publish=collector, calibration=None)  # measured, uncorrected
    with run_engine(call_returns_result=False) as engine:
        engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
        engine.subscribe(processor)
        engine(tissue_calibration(instrument, phantom=spec.describe(), reference_ts=reference_ts,
                                  operator="calibrate_twin", **acquisition))
    processor.wait(600)
    failed = [s for s in collector.stops if s["exit_status"] != "success"]
    if failed:
        raise RuntimeError(f"processing of the calibration run failed: {failed[0].get('reason')}")
    start = starts[-1]
    clusters = [c for c in collector.clusters if c["run_uid"] == start["uid"]
                and ("tile" not in c or not start.get("mosaic"))]
    return compute_tissue_calibration(start, clusters, calibration_id=calibration_id,
                                      instrument=instrument_record(config), path=path)


if __name__ == "__main__":  # pragma: no cover - the documented way to rerun it
    written = calibrate_twin(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"tissue calibration {written.id} ({written.sha256[:12]}) with "
          f"{len(written.points)} points: c(Ts) knots {written.correction.knots_ts} -> "
          f"{written.correction.knots_factor}")
