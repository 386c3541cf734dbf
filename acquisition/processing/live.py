"""On-the-fly dark-field processing that follows the documents (DESIGN.md rule 5).

``darkfield_router(out_dir, publish)`` is an ``event_model.RunRouter`` that gives every
phase-stepping run a :class:`ProjectionProcessor`.  Where it receives the documents (on
the RunEngine's thread, or a :class:`DocumentBuffer`'s) it only takes notes: each frame's
file reference (:class:`acquisition.storage.frames.FrameRef`, nothing is read there), G2 position,
tile and shutter reading, sorted into dark, reference and sample sets.  When a
projection's sets are complete, a worker thread reads the frames through the one loader
(:class:`acquisition.storage.frames.FrameLoader`), checks that every frame saw the beam
(:func:`acquisition.processing.analysis.check_beam`), retrieves T, V and dphi, segments and
classifies the calcification clusters (paper Table 1), writes the derived images to NeXus
(``acquisition.storage.derived_store``, linked to the run record ``run_<uid8>.nxs`` expected in
the same directory) and publishes a derived run of its own (``event_model.compose_run``,
linked by ``parent_uid``) to ``publish(name, doc)``.

A mosaic stays bounded: each reference set is fitted once for all the tiles taken with
it (:class:`acquisition.processing.analysis.ReferenceFits`), and of each tile only what the stitch
needs is kept, float32 T, V and dphi (:func:`acquisition.processing.analysis.mosaic_tile`; 35 MB a
full tile, 0.57 GB for 16), until the mosaic is stitched at the run's stop.

Nothing of this reaches the scan: a frame that cannot be read, a set without beam, a
failed retrieval, classification or write ends the derived run with exit_status "fail"
and the reason in its stop document; an exception while taking notes is logged and
reported the same way at the run's stop; ``publish`` errors are logged.  The RunEngine
never waits for the worker (``router.wait()`` does).
"""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import event_model
import numpy as np

from reconstruction import segmentation_kernels

from ..config import embedded_calibration
from ..storage.derived_store import IMAGES, derived_name
from ..storage.frames import FrameLoader, frame_ref, image_key
from ..storage.run_record import record_name, shutter_open
from ..storage.tissue_calibration_file import calibration_record
from .analysis import (
    ProjectionFrames,
    ReferenceFits,
    SetAssembler,
    analyse_tiles,
    classify_image,
    mosaic_tile,
)
from .process_record import write_derived_file

log = logging.getLogger(__name__)

Publish = Callable[[str, dict], None]


class Worker:
    """One daemon thread running submitted jobs in order.

    ``submit`` never blocks and never raises into its caller (a full queue drops the job
    and logs an error); a job's exception is logged.  ``wait(timeout)`` waits until every
    job submitted so far is done; ``close(timeout)`` then stops the thread.  Both are
    bounded, so a stuck job cannot hang the session's exit (the thread is a daemon and an
    ``atexit`` hook closes it with a timeout)."""

    def __init__(self, name: str, maxsize: int = 0, exit_timeout: float = 30.0):
        self.name = name
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._idle = threading.Condition()
        self._pending = 0
        self._closed = False
        self.dropped = 0
        self.failed = 0
        self.completed = 0  # jobs run (failed ones too)
        ref = weakref.ref(self)  # the thread ends when the Worker is dropped
        self._thread = threading.Thread(target=_serve, args=(ref, self._queue), name=name, daemon=True)
        self._thread.start()
        self._atexit = lambda: (w := ref()) is not None and w.close(exit_timeout)
        atexit.register(self._atexit)

    def submit(self, job: Callable[[], object]) -> bool:
        """Queue ``job``; False (and an error logged) if closed or full."""
        with self._idle:
            closed = self._closed
            if not closed:
                self._pending += 1
        if not closed:
            try:
                self._queue.put_nowait(job)
                return True
            except queue.Full:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.error("%s: %s, %d jobs dropped so far", self.name, "closed" if closed else
                      f"queue full ({self._queue.maxsize}): the consumer cannot keep up", self.dropped)
        return False

    def _execute(self, job) -> None:
        try:
            job()
        except Exception:
            self.failed += 1
            log.exception("%s: job failed", self.name)
        finally:
            with self._idle:
                self.completed += 1
                self._pending -= 1
                self._idle.notify_all()

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished yet."""
        return self._pending

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Wait until every job submitted so far is done; False if ``timeout`` (s) passed first."""
        if threading.current_thread() is self._thread:
            return self._pending <= 1
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Finish the queued jobs (at most ``timeout`` s), then stop; True if all were done."""
        with self._idle:
            if self._closed:
                return not self._thread.is_alive() or self._pending == 0
            self._closed = True
        atexit.unregister(self._atexit)
        done = self.wait(timeout)
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # still busy with a full queue: the daemon thread is left behind
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(0 if not done else (5.0 if timeout is None else min(timeout, 5.0)))
        if not done:
            log.error("%s: %d jobs still pending after %s s; given up", self.name, self._pending, timeout)
        return done


def _serve(ref, jobs: queue.Queue) -> None:
    """A Worker's thread: runs its jobs until ``None`` comes or the Worker is gone."""
    while True:
        try:
            job = jobs.get(timeout=5.0)
        except queue.Empty:
            if ref() is None:
                return
            continue
        worker = ref()
        if job is None or worker is None:
            return
        worker._execute(job)
        del worker, job


class DocumentBuffer:
    """A RunEngine subscriber that hands every document to ``target`` in a thread of its
    own, so slow consumers (file and catalogue writers, the processor's note-taking, Qt
    signals) never hold the RunEngine's loop: suspenders and Ctrl-C keep answering.

    Instead of ``bluesky.callbacks.buffer.BufferingWrapper`` (bluesky 1.15), which is
    close but unfit here: its ``put`` blocks without timeout (its ``Full`` branch is
    unreachable) so a stuck consumer with a full queue stalls the RunEngine; it raises
    into the RunEngine after shutdown (failing a scan); it offers no way to wait for the
    queue to drain short of shutting down (no ``task_done``), and its ``shutdown`` and
    ``atexit`` hook join the thread without a timeout.  Here ``__call__`` never blocks or
    raises, ``drain(timeout)`` waits for what was queued so far, ``close(timeout)`` is
    bounded.  Documents are passed on as they are: consumers must not edit them."""

    def __init__(self, target: Publish, name: str | None = None, maxsize: int = 1_000_000):
        self.target = target
        self.name = name or getattr(target, "__name__", type(target).__name__)
        self.worker = Worker(f"buffer-{self.name}", maxsize)

    def __call__(self, name: str, doc: dict) -> None:
        self.worker.submit(functools.partial(self.target, name, doc))

    def drain(self, timeout: float | None = 60.0) -> bool:
        """Wait until every document received so far has been handed on."""
        return self.worker.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> bool:
        return self.worker.close(timeout)

    def __repr__(self) -> str:
        return f"DocumentBuffer({self.name}, pending={self.worker.pending})"


class _KeepReferences(event_model.DocumentRouter):
    """The RunRouter's "filler" that fills nothing: frames are read in the worker."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def descriptor(self, doc):
        return doc

    def event_page(self, doc):
        return doc

    def datum_page(self, doc):
        return doc

    def resource(self, doc):
        return doc

    def stream_resource(self, doc):
        return doc

    def stream_datum(self, doc):
        return doc


class DarkFieldRouter(event_model.RunRouter):
    """The RunRouter of :func:`darkfield_router`; ``wait()`` blocks until every projection
    handed to the worker thread is processed and published.  It never raises into its
    caller (the RunEngine): a document it cannot route is logged."""

    def __init__(self, factories, worker: Worker | None):
        super().__init__(factories, filler_class=_KeepReferences)
        self.worker = worker

    def __call__(self, name, doc, *args, **kwargs):
        try:
            return super().__call__(name, doc, *args, **kwargs)
        except Exception:
            log.exception("dark-field processor: %s document not handled (the scan goes on)", name)
            return name, doc

    def submit(self, job) -> None:
        if self.worker is None:
            job()
        else:
            self.worker.submit(job)

    def wait(self, timeout: float | None = 60.0) -> None:
        """Wait for every submitted projection; raises TimeoutError after ``timeout`` s."""
        if self.worker is not None and not self.worker.wait(timeout):
            raise TimeoutError(f"dark-field processing still busy after {timeout} s "
                               f"({self.worker.pending} jobs pending)")

    def close(self, timeout: float | None = 60.0) -> bool:
        """Finish the pending work (bounded) and stop the worker thread."""
        return True if self.worker is None else self.worker.close(timeout)


def darkfield_router(out_dir: str | Path | None = None, publish: Publish | None = None, *,
                     background: bool = True, calibration="configured") -> DarkFieldRouter:
    """A RunRouter that processes every phase-stepping run; subscribe it to a RunEngine.

    With ``background`` the frame reading, retrieval and classification run in a worker
    thread, so the RunEngine never waits for them; ``router.wait()`` waits for the results.
    ``calibration``: the tissue calibration applied to every cluster's ratio
    (``acquisition.storage.tissue_calibration_file``; "configured": the embedded configuration's,
    ``configured_calibration(config)`` for another configuration; None: none)."""
    out = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "talbot-lau-derived"
    if isinstance(calibration, str) and calibration == "configured":
        calibration = embedded_calibration()
    router = None

    def factory(name, start_doc):
        if "phase_stepping" not in start_doc:
            return [], []
        return [ProjectionProcessor(out, publish or (lambda name, doc: None), router.submit,
                                    calibration=calibration)], []

    router = DarkFieldRouter([factory], Worker("darkfield") if background else None)
    if background:  # numba and the compiled closing loaded while the scan starts, not after it
        router.submit(segmentation_kernels.warm_up)
    return router


class ProjectionProcessor(event_model.DocumentRouter):
    """Collects one projection's frame references by set and has each complete set
    processed by ``submit`` (the worker)."""

    def __init__(self, out_dir: Path, publish: Publish, submit=lambda job: job(), *, calibration=None):
        super().__init__()
        self.out_dir = out_dir
        self.calibration = calibration  # a TissueCalibration, or None
        self.correction = None if calibration is None else calibration.correction
        self._publish = publish
        self.submit = submit
        self.failure: str | None = None  # the first error while taking notes
        self.resources: dict[str, dict] = {}
        self.datums: dict[str, dict] = {}

    def __call__(self, name, doc, *args, **kwargs):
        try:
            return super().__call__(name, doc, *args, **kwargs)
        except Exception as err:
            log.exception("dark-field processor: %s document of run %s not understood",
                          name, getattr(self, "parent_uid", "?"))
            self.failure = self.failure or f"{name} document not understood: {err!r}"
            if name == "stop":
                self._report_failure()
            return name, doc

    def publish(self, name: str, doc: dict) -> None:
        """Hand a derived document on; a consumer's error is logged, never raised."""
        try:
            self._publish(name, doc)
        except Exception:
            log.exception("dark-field processor: a consumer of the derived %s document failed", name)

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
        self.sets = SetAssembler.from_start(stepping)
        self.references = ReferenceFits()  # each reference set fitted once
        self.tiles: dict = {}  # mosaic tile -> reconstruction.Tile (float32 T, V, dphi), for the stitch
        self.published = 0  # derived runs handed to the worker

    def descriptor(self, doc):
        self.stream_of[doc["uid"]] = doc["name"]
        self.image_key = image_key(doc) or self.image_key

    def resource(self, doc):
        self.resources[doc["uid"]] = doc

    def datum(self, doc):
        self.datums[doc["datum_id"]] = doc

    def event(self, doc):
        data = doc["data"]
        if self.image_key not in data:
            return
        frame = data[self.image_key]
        if isinstance(frame, str):  # a datum id: remember where the frame is, read it later
            datum = self.datums[frame]
            frame = frame_ref(self.resources[datum["resource"]], datum)
        ready = self.sets.add(self.stream_of.get(doc["descriptor"]), float(data.get(self.g2_key, np.nan)),
                              frame, int(data.get("tile", 0)), shutter_open(self.start_doc, data))
        self._submit(ready)

    def stop(self, doc):
        self._submit(self.sets.finish())
        if self.mosaic:  # the worker runs jobs in order: after the last tile's
            self.submit(self._stitch_and_publish)
        self.submit(self.references.clear)
        if self.failure:
            self._report_failure()

    def _report_failure(self) -> None:
        reason, self.failure = self.failure, None
        if reason and hasattr(self, "start_doc"):
            self.submit(functools.partial(self._derived_run, self._metadata("darkfield_retrieval"),
                                          functools.partial(_raise, RuntimeError(reason))))

    def _submit(self, ready) -> None:
        for tile, frames in ready:
            self.published += 1
            self.submit(functools.partial(self._tile_and_publish, tile, frames))

    def _metadata(self, plan_name: str) -> dict:
        stepping = self.start_doc["phase_stepping"]
        return {"parent_uid": self.parent_uid, "plan_name": plan_name,
                "sample": self.start_doc.get("sample", {}),
                "detector_pixel": self.start_doc.get("detector_pixel", {}),
                "tissue_calibration": calibration_record(self.calibration),
                # the low-dose protocol: exposures (s) and the stored reference fit used, if any
                "exposure_s": stepping.get("exposure_s"),
                "reference_exposure_s": stepping.get("reference_exposure_s", stepping.get("exposure_s")),
                **({"reference_fit": stepping["reference_fit"]} if stepping.get("reference_fit") else {})}

    def _tile_and_publish(self, tile: int, frames: ProjectionFrames) -> None:
        metadata = self._metadata("darkfield_retrieval")
        if self.mosaic:
            metadata["tile"] = next(t for t in self.mosaic["tiles"] if t["tile"] == tile)

        def analyse():
            with FrameLoader() as loader:  # the frames are read here, in the worker
                retrieval = self.references.retrieve(frames, loader, self.period_um)
            analysis = classify_image(retrieval, self.correction)
            if self.mosaic:
                self.tiles[tile] = mosaic_tile(retrieval, self.mosaic, tile)
            return analysis, derived_name(self.parent_uid, tile if self.mosaic else None)

        self._derived_run(metadata, analyse, tile=tile if self.mosaic else None, frames=frames)

    def _stitch_and_publish(self) -> None:
        """The whole mosaic: stitched from the tiles retrieved so far, then classified; the
        tiles are let go once stitched."""
        if not self.tiles:
            return
        tiles, self.tiles = self.tiles, {}
        metadata = self._metadata("darkfield_mosaic_stitch")
        metadata["tiles"] = sorted(tiles)
        self._derived_run(metadata, lambda: (
            analyse_tiles(tiles, self.start_doc["detector_pixel"]["sample_pixel_mm"], self.correction),
            derived_name(self.parent_uid)), tiles=sorted(tiles))

    def _derived_run(self, metadata: dict, analyse, **context) -> None:
        """Publish one derived run around ``analyse() -> (analysis, file name)``."""
        run = event_model.compose_run(metadata=metadata)
        self.publish("start", run.start_doc)
        try:
            analysis, name = analyse()
            path = self.out_dir / name
            write_derived_file(path, analysis, self.parent_uid,
                               run_record=self.out_dir / record_name(self.parent_uid),
                               tissue_calibration=calibration_record(self.calibration),
                               start=self.start_doc, **context)
            self._publish_images(run, path, analysis.labels.shape)
            self._publish_clusters(run, analysis.clusters)
        except Exception as err:  # a failed processor reports, it never stops a scan
            log.error("dark-field processing of run %s failed: %s", self.parent_uid, err,
                      exc_info=not isinstance(err, (OSError, ValueError)))
            self.publish("stop", run.compose_stop(exit_status="fail", reason=f"{type(err).__name__}: {err}"))
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
                "texture": "string", "borderline": "boolean", "suspicious": "boolean",
                "tissue_factor": "number", "uncorrected_ratio": "number", "Ts": "number"}
        table = run.compose_descriptor(name="clusters", data_keys={
            key: {"source": "derived:clusters", "dtype": dtype, "shape": []}
            for key, dtype in keys.items()})
        self.publish("descriptor", table.descriptor_doc)
        for c in clusters:
            row = {"label": int(c.label), "centroid_row": float(c.centroid_px[0]),
                   "centroid_col": float(c.centroid_px[1]), "n_pixels": int(c.n_pixels),
                   "ratio": float(c.ratio), "variance": float(c.variance), "texture": c.texture,
                   "borderline": bool(c.borderline), "suspicious": bool(c.suspicious),
                   "tissue_factor": float(c.tissue_factor),
                   "uncorrected_ratio": float(c.uncorrected_ratio), "Ts": float(c.Ts)}
            self.publish("event", table.compose_event(
                data=row, timestamps={key: table.descriptor_doc["time"] for key in row}))


def _raise(err: Exception):
    raise err
