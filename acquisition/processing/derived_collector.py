"""The cluster rows of the derived runs the processor publishes, with where they came from.

Used by the session (``derived``), the demo, the proxy's processor and the twin's tissue
calibration: each row is a ``clusters`` event's data plus the measured run, the derived
run and the sample.
"""

from __future__ import annotations

import event_model

from ..storage.run_record import sample_id


class DerivedCollector(event_model.DocumentRouter):
    """Keeps the cluster rows of the derived runs published by the processor.

    Each row is the ``clusters`` event's data plus where it came from: ``run_uid`` (the
    measured run, the derived run's ``parent_uid``), ``derived_uid`` (the derived run),
    ``sample`` (the sample id, from a dict or a stock bluesky string) and, for a mosaic's
    tile, ``tile``."""

    def __init__(self):
        super().__init__()
        self.clusters: list[dict] = []
        self.stops: list[dict] = []
        self._starts: dict[str, dict] = {}  # derived run uid -> its start document
        self._cluster_descriptors: dict[str, str] = {}  # descriptor uid -> run uid

    def start(self, doc):
        self._starts[doc["uid"]] = doc

    def descriptor(self, doc):
        if doc["name"] == "clusters":
            self._cluster_descriptors[doc["uid"]] = doc["run_start"]

    def event(self, doc):
        run = self._cluster_descriptors.get(doc["descriptor"])
        if run is not None:
            start = self._starts.get(run, {})
            tile = start.get("tile")
            origin = {"run_uid": start.get("parent_uid", ""), "derived_uid": run,
                      "sample": sample_id(start.get("sample"))}
            if isinstance(tile, dict) and "tile" in tile:
                origin["tile"] = tile["tile"]
            self.clusters.append({**doc["data"], **origin})

    def stop(self, doc):
        self.stops.append(doc)
        self._starts.pop(doc["run_start"], None)
        self._cluster_descriptors = {d: r for d, r in self._cluster_descriptors.items()
                                     if r != doc["run_start"]}


