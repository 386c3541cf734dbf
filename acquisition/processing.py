"""On-the-fly dark-field processing that follows the documents (DESIGN.md rule 5).

``darkfield_router(out_dir, publish)`` is an ``event_model.RunRouter`` that fills frames
through our one loader (``acquisition.frames.HANDLERS``) and gives every phase-stepping run
a :class:`ProjectionProcessor`.  When a projection's dark, reference and sample sets are
complete it retrieves T, V and dphi, segments and classifies the calcification clusters
(paper Table 1), writes the derived images to NeXus (``acquisition.derived_store``, linked
to the run record ``run_<uid8>.nxs`` expected in the same directory) and publishes a derived
run of its own (``event_model.compose_run``, linked by ``parent_uid``) to ``publish(name, doc)``.
The work runs in a worker thread (the RunEngine never waits for it). A processor that
fails reports the error in its derived run's stop document; it never raises into the
RunEngine.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path

import event_model
import numpy as np

from .derived_store import IMAGES, derived_name, write_derived
from .frames import HANDLERS, image_key
from .projection import ProjectionFrames, SetAssembler, analyse_mosaic, analyse_projection
from .run_record import record_name

log = logging.getLogger(__name__)

Publish = Callable[[str, dict], None]


class DarkFieldRouter(event_model.RunRouter):
    """The RunRouter of :func:`darkfield_router`; ``wait()`` blocks until every projection
    handed to the worker thread is processed and published."""

    def __init__(self, factories, worker: ThreadPoolExecutor | None):
        super().__init__(factories, handler_registry=HANDLERS)
        self.worker = worker
        self.pending: list[Future] = []

    def submit(self, job) -> None:
        if self.worker is None:
            job()
        else:
            self.pending.append(self.worker.submit(job))

    def wait(self, timeout: float | None = 60.0) -> None:
        futures, self.pending = self.pending, []
        for future in futures:
            future.result(timeout=timeout)


def darkfield_router(out_dir: str | Path | None = None, publish: Publish | None = None, *,
                     background: bool = True) -> DarkFieldRouter:
    """A RunRouter that processes every phase-stepping run; subscribe it to a RunEngine.

    With ``background`` the retrieval and classification run in a worker thread, so the
    RunEngine never waits for them; ``router.wait()`` waits for the results."""
    out = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "talbot-lau-derived"
    router = None

    def factory(name, start_doc):
        if "phase_stepping" not in start_doc:
            return [], []
        return [ProjectionProcessor(out, publish or (lambda name, doc: None), router.submit)], []

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="darkfield") if background else None
    router = DarkFieldRouter([factory], worker)
    return router


class ProjectionProcessor(event_model.DocumentRouter):
    """Collects one projection's frames by set and processes it once the sets are complete."""

    def __init__(self, out_dir: Path, publish: Publish, submit=lambda job: job()):
        super().__init__()
        self.out_dir = out_dir
        self.publish = publish
        self.submit = submit

    def start(self, doc):
        self.parent_uid = doc["uid"]
        self.start_doc = doc
        stepping = doc["phase_stepping"]
        self.period_um = stepping["period_um"]
        self.streams = stepping["streams"]
        self.stream_of: dict[str, str] = {}
        self.image_key: str | None = None
        self.g2_key = doc.get("motors", ["g2"])[0]
        self.mosaic = doc.get("mosaic")
        self.sets = SetAssembler(stepping["positions_um"], stepping["dark_frames"], self.streams)
        self.retrievals: dict[int, object] = {}  # mosaic tile -> Retrieval, for the stitch

    def descriptor(self, doc):
        self.stream_of[doc["uid"]] = doc["name"]
        self.image_key = image_key(doc) or self.image_key

    def event(self, doc):
        data = doc["data"]
        if self.image_key not in data:
            return
        frame = np.asarray(data[self.image_key])  # uint16 as read: float32 retrieval, saturation checked
        ready = self.sets.add(self.stream_of.get(doc["descriptor"]), float(data.get(self.g2_key, np.nan)),
                              frame, int(data.get("tile", 0)))
        self._submit(ready)

    def stop(self, doc):
        self._submit(self.sets.complete())
        if self.mosaic:  # the worker runs jobs in order: after the last tile's
            self.submit(self._stitch_and_publish)

    def _submit(self, ready) -> None:
        for tile, frames in ready:
            self.submit(functools.partial(self._tile_and_publish, tile, frames))

    def _metadata(self, plan_name: str) -> dict:
        return {"parent_uid": self.parent_uid, "plan_name": plan_name,
                "sample": self.start_doc.get("sample", {}),
                "detector_pixel": self.start_doc.get("detector_pixel", {})}

    def _tile_and_publish(self, tile: int, frames: ProjectionFrames) -> None:
        metadata = self._metadata("darkfield_retrieval")
        if self.mosaic:
            metadata["tile"] = next(t for t in self.mosaic["tiles"] if t["tile"] == tile)

        def analyse():
            analysis = analyse_projection(frames, self.period_um)
            if self.mosaic:
                self.retrievals[tile] = analysis.retrieval
            return analysis, derived_name(self.parent_uid, tile if self.mosaic else None)

        self._derived_run(metadata, analyse)

    def _stitch_and_publish(self) -> None:
        """The whole mosaic: stitched from the tiles retrieved so far, then classified."""
        if not self.retrievals:
            return
        metadata = self._metadata("darkfield_mosaic_stitch")
        metadata["tiles"] = sorted(self.retrievals)
        self._derived_run(metadata, lambda: (
            analyse_mosaic(self.retrievals, self.mosaic,
                           self.start_doc["detector_pixel"]["sample_pixel_mm"]),
            derived_name(self.parent_uid)))

    def _derived_run(self, metadata: dict, analyse) -> None:
        """Publish one derived run around ``analyse() -> (analysis, file name)``."""
        run = event_model.compose_run(metadata=metadata)
        self.publish("start", run.start_doc)
        try:
            analysis, name = analyse()
            path = write_derived(self.out_dir / name, analysis.retrieval, analysis.labels,
                                 analysis.clusters, self.parent_uid,
                                 run_record=self.out_dir / record_name(self.parent_uid))
            self._publish_images(run, path, analysis.labels.shape)
            self._publish_clusters(run, analysis.clusters)
        except Exception as err:  # a failed processor reports, it never stops a scan
            log.exception("dark-field processing of run %s failed", self.parent_uid)
            self.publish("stop", run.compose_stop(exit_status="fail", reason=repr(err)))
        else:
            self.publish("stop", run.compose_stop())

    def _publish_images(self, run, path: Path, shape) -> None:
        resource = run.compose_resource(spec="TL_DERIVED_HDF5", root="/",
                                        resource_path=str(path.resolve()).lstrip("/"),
                                        resource_kwargs={})
        self.publish("resource", resource.resource_doc)
        datums = {name: resource.compose_datum(datum_kwargs={"name": name})
                  for name in (*IMAGES, "labels")}
        for datum in datums.values():
            self.publish("datum", datum)
        data_keys = {name: {"source": f"derived:{name}", "dtype": "array", "shape": list(shape),
                            "external": "FILESTORE:"} for name in datums}
        images = run.compose_descriptor(name="images", data_keys=data_keys)
        self.publish("descriptor", images.descriptor_doc)
        self.publish("event", images.compose_event(
            data={name: d["datum_id"] for name, d in datums.items()},
            timestamps={name: images.descriptor_doc["time"] for name in datums},
            filled={name: False for name in datums}))

    def _publish_clusters(self, run, clusters) -> None:
        keys = {"label": "integer", "centroid_row": "number", "centroid_col": "number",
                "n_pixels": "integer", "ratio": "number", "variance": "number",
                "texture": "string", "borderline": "boolean", "suspicious": "boolean"}
        table = run.compose_descriptor(name="clusters", data_keys={
            key: {"source": "derived:clusters", "dtype": dtype, "shape": []}
            for key, dtype in keys.items()})
        self.publish("descriptor", table.descriptor_doc)
        for c in clusters:
            row = {"label": int(c.label), "centroid_row": float(c.centroid_px[0]),
                   "centroid_col": float(c.centroid_px[1]), "n_pixels": int(c.n_pixels),
                   "ratio": float(c.ratio), "variance": float(c.variance), "texture": c.texture,
                   "borderline": bool(c.borderline), "suspicious": bool(c.suspicious)}
            self.publish("event", table.compose_event(
                data=row, timestamps={key: table.descriptor_doc["time"] for key in row}))
