"""A bluesky client in a process of its own, for the fault-injection tests.

``python tests/fault_client.py PREFIX WRITE_PATH REPORT.json [--steps N] [--exposure S]
[--lost-timeout S]`` runs ``darkfield_projection`` over Channel Access (libca reads its
address list once per process, so each faulty IOC gets a client of its own), with the
session's source suspenders.  It prints one line per event (``EVENT stream seq shutter``)
so the test knows when to inject the fault, and writes the outcome to REPORT.json: exit
status and reason, every event's stream, shutter, G2 and frame (file, point), the
delivered dose and the shutter readback afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ADDRESSES = os.environ["EPICS_CA_ADDR_LIST"]  # the faulty IOC's port (conftest sets a bare one)

import devices  # noqa: E402,F401  (first: ophyd's write timeout before any EpicsSignal)
from bluesky import RunEngine  # noqa: E402

from acquisition.dose import dose_rate_mgy_per_s  # noqa: E402
from acquisition.instrument import epics_instrument  # noqa: E402
from acquisition.plans import darkfield_projection, safety, source_suspenders  # noqa: E402
from support import small_config  # noqa: E402

os.environ["EPICS_CA_ADDR_LIST"] = ADDRESSES


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("write_path")
    parser.add_argument("report")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--exposure", type=float, default=2.0)
    parser.add_argument("--lost-timeout", type=float, default=20.0)
    args = parser.parse_args()
    safety.LOST_IOC_TIMEOUT_S = args.lost_timeout

    config = small_config(32, 48)
    instrument = epics_instrument(config, prefix=args.prefix, write_path=args.write_path)
    engine = RunEngine({})
    for suspender in source_suspenders(instrument.tube, kv=config.instrument.tube.kv,
                                       ma=config.instrument.tube.ma, sleep_s=0.2):
        engine.install_suspender(suspender)
    documents: list = []
    streams: dict = {}

    def collect(name, doc):
        documents.append((name, doc))
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        if name == "event":
            print(f"EVENT {streams[doc['descriptor']]} {doc['seq_num']} "
                  f"{doc['data'].get('tube_shutter')}", flush=True)

    engine.subscribe(collect)
    error = None
    started = time.monotonic()
    try:
        engine(darkfield_projection(instrument, steps=args.steps, exposure_s=args.exposure,
                                    reference_exposure_s=args.exposure, dark_frames=1, sample="fault-test"))
    except Exception as err:  # the outcome is reported, not raised
        error = f"{type(err).__name__}: {err}"
    resources = {doc["uid"]: "/" + doc["resource_path"].lstrip("/")
                 for name, doc in documents if name == "resource"}
    datums = {doc["datum_id"]: (resources[doc["resource"]], doc["datum_kwargs"]["point_number"])
              for name, doc in documents if name == "datum"}
    events = [{"stream": streams[doc["descriptor"]], "seq_num": doc["seq_num"],
               "shutter": doc["data"].get("tube_shutter"), "g2": doc["data"].get("g2"),
               "kv": doc["data"].get("tube_kv"), "ma": doc["data"].get("tube_ma"),
               "dose_mgy": doc["data"].get("delivered_dose_mgy"),
               "frame": datums.get(doc["data"].get("detector_image"))}
              for name, doc in documents if name == "event"]
    rate = dose_rate_mgy_per_s(config.instrument.dose, config.instrument.tube.kv,
                               config.instrument.tube.ma, None)
    stop = next((doc for name, doc in reversed(documents) if name == "stop"), {})
    try:
        shutter = int(instrument.tube.shutter.get(timeout=3))
    except Exception as err:
        shutter = f"unreadable: {err!r}"
    report = {"exit_status": stop.get("exit_status"), "reason": stop.get("reason"),
              "error": error, "events": events, "shutter_after": shutter,
              "seconds": time.monotonic() - started, "dose_rate_mgy_per_s": rate,
              "exposure_s": args.exposure}
    Path(args.report).write_text(json.dumps(report))
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
