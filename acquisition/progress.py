"""A progress bar over a whole plan (all its sets and tiles), with ETA, from the documents.

Plans put ``total_frames`` in their start document; the bar advances one step per event
that carries a detector image.  A plan that counts something else puts
``progress = {"total": n, "unit": "step", "stream": "primary"}`` there instead (the
warm-up: its ramp steps; an optional ``note`` is shown beside the bar, e.g. that there
is nothing to do); the bar then advances one ``unit`` per event of that stream.  A
set repeated after a suspension adds to the total, so the ETA stays honest.
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
        progress = doc.get("progress") if isinstance(doc.get("progress"), dict) else {}
        total = progress.get("total", doc.get("total_frames"))
        self.counted_stream = progress.get("stream")  # None: every stream with detector images
        sample = doc.get("sample")  # the plans' dict, or a string (RE(plan, sample="S-1"))
        sample_id = sample.get("id", "") if isinstance(sample, dict) else sample
        sample_id = sample_id if isinstance(sample_id, str) else ""
        label = f"{doc.get('plan_name', 'plan')} {sample_id}".strip()
        self.bar = tqdm(total=total, desc=label, unit=progress.get("unit", "frame"), file=self.file,
                        disable=self.disable, leave=True, dynamic_ncols=True)
        self.note = str(progress.get("note") or "")
        if self.note:
            self.bar.set_postfix_str(self.note)
        self.streams: dict[str, str] = {}

    def descriptor(self, doc):
        if (doc["name"] == self.counted_stream if self.counted_stream is not None
                else any(key.get("external") for key in doc["data_keys"].values())):
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
            self.bar.set_postfix_str("; ".join(filter(None, (self.note, doc["exit_status"]))))
            self.bar.close()
            self.bar = None
