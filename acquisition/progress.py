"""A progress bar over a whole plan (all its sets and tiles), with ETA, from the documents.

Plans put ``total_frames`` in their start document; the bar advances one step per event
that carries a detector image.  A set repeated after a suspension adds to the total, so
the ETA stays honest.
"""

from __future__ import annotations

import sys

from event_model import DocumentRouter
from tqdm import tqdm


class PlanProgress(DocumentRouter):
    """Subscribe to a RunEngine: ``RE.subscribe(PlanProgress())``."""

    def __init__(self, file=sys.stderr, disable: bool = False):
        super().__init__()
        self.file = file
        self.disable = disable
        self.bar = None

    def start(self, doc):
        total = doc.get("total_frames")
        label = f"{doc.get('plan_name', 'plan')} {doc.get('sample', {}).get('id', '')}".strip()
        self.bar = tqdm(total=total, desc=label, unit="frame", file=self.file, disable=self.disable,
                        leave=True, dynamic_ncols=True)
        self.streams: dict[str, str] = {}

    def descriptor(self, doc):
        if any(key.get("external") for key in doc["data_keys"].values()):
            self.streams[doc["uid"]] = doc["name"]

    def event(self, doc):
        if self.bar is None or doc["descriptor"] not in self.streams:
            return
        if self.bar.total is not None and self.bar.n >= self.bar.total:
            self.bar.total += 1  # a repeated set
        self.bar.set_postfix_str(self.streams.get(doc["descriptor"], ""), refresh=False)
        self.bar.update(1)

    def stop(self, doc):
        if self.bar is not None:
            self.bar.set_postfix_str(doc["exit_status"])
            self.bar.close()
            self.bar = None
