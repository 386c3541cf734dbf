"""bluesky's document normaliser and consolidator taught our two file specs (``AD_HDF5``
frames, ``TL_DERIVED_HDF5`` derived images), built at first use: bluesky's tiled writer,
their base, takes about 2 s to import."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import defaultdict
from pathlib import Path

from event_model import DocumentNames

from ..frames import DERIVED_DATASET, FRAME_DATASET
from ..frames import _open as _open_hdf5  # SWMR or not, as the file needs
from .adapters import DERIVED_MIMETYPE, FRAMES_MIMETYPE, _adapter_classes, relative_uri

log = logging.getLogger(__package__)  # the catalogue's one logger name, as before its split


def _path(resource: dict) -> Path:
    """The absolute path of the file of a Resource document."""
    return Path("/" + resource["root"].strip("/")) / resource["resource_path"].strip("/")


@functools.cache
def frame_normalizer_class() -> type:
    """The class ``FrameNormalizer`` (bluesky's ``RunNormalizer`` taught our file specs)."""
    from bluesky.callbacks.tiled_writer import RunNormalizer

    class FrameNormalizer(RunNormalizer):
        """bluesky's document normaliser, taught our two file specs.

        ``RunNormalizer`` turns a Resource into one StreamResource a data key and counts a
        stream's frames from 0, but our detector writes all streams of a run into one file
        (dark, reference, sample one after the other, ``point_number`` counting on), so it
        would put every frame into the first stream.  ``AD_HDF5`` references are therefore
        collected here and, at the stop document, given one StreamResource per stream
        (``slice`` = that stream's points in the file) and one StreamDatum.
        ``TL_DERIVED_HDF5`` datums name their image: the name becomes the HDF5 dataset, whose
        dtype (float32, labels int32) and chunks, which the processor's descriptor does not
        give, are read from the (finished) file and put into the descriptor; a file not yet
        readable is checked by bluesky at the stop document instead (``_validate``).

        Both get our mimetypes (read by :func:`_adapter_classes`' adapters, through
        acquisition.storage.frames' handlers) and, with ``relative_to`` (the catalogue directory),
        the parameter that makes :class:`_RelativeConsolidator` register their files by
        relative paths."""

        SPECS = {"AD_HDF5": FRAMES_MIMETYPE, "TL_DERIVED_HDF5": DERIVED_MIMETYPE}  # noqa: RUF012  read only

        def __init__(self, patches=None, spec_to_mimetype=None, relative_to: str | Path | None = None):
            super().__init__(patches=patches, spec_to_mimetype={**self.SPECS, **(spec_to_mimetype or {})})
            self._relative = {} if relative_to is None else {RELATIVE_TO: str(relative_to)}
            self._frame_resources: dict[str, dict] = {}
            self._frame_datums: dict[str, tuple[str, int]] = {}
            self._derived_resources: dict[str, dict] = {}
            self._derived_dtypes: dict[str, str] = {}  # image name -> numpy dtype string
            self._descriptors: dict[str, dict] = {}  # uid -> descriptor
            # (stream, data key) -> [(seq_num, resource uid, point number)], and its first descriptor
            self._frames: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
            self._first_descriptor: dict[tuple[str, str], str] = {}

        def resource(self, doc):
            if doc["spec"] == "AD_HDF5":
                self._frame_resources[doc["uid"]] = doc
                return
            if doc["spec"] == "TL_DERIVED_HDF5":
                self._derived_resources[doc["uid"]] = doc
            # RunNormalizer edits resource_kwargs in place: give it a copy, not the document
            # every other subscriber (the processor's Filler) reads too
            super().resource({**doc, "resource_kwargs": dict(doc.get("resource_kwargs", {}))})

        def datum(self, doc):
            if doc["resource"] in self._frame_resources:
                self._frame_datums[doc["datum_id"]] = (doc["resource"], int(doc["datum_kwargs"]["point_number"]))
                return
            if doc["resource"] in self._derived_resources:
                kwargs = self._derived_image(self._derived_resources[doc["resource"]], doc["datum_kwargs"]["name"])
            else:
                kwargs = dict(doc.get("datum_kwargs", {}))  # edited in place, as resource_kwargs
            super().datum({**doc, "datum_kwargs": kwargs})

        def _derived_image(self, resource: dict, name: str) -> dict:
            """StreamResource parameters of a derived image; remembers its dtype."""
            dataset = DERIVED_DATASET.format(name=name)
            try:  # acquisition.storage.frames' opener: no SWMR flag mismatch with a reader holding it
                with _open_hdf5(str(_path(resource))) as f:
                    data = f[dataset]
                    self._derived_dtypes[name] = data.dtype.str
                    # one chunk an image: the adapter reads whole images
                    return {"dataset": dataset, "chunk_shape": list(data.shape), **self._relative}
            except (OSError, KeyError):
                return {"dataset": dataset, "_validate": True, **self._relative}

        def descriptor(self, doc):
            self._descriptors[doc["uid"]] = doc
            missing = {key for key, info in doc["data_keys"].items()
                       if "external" in info and "dtype_numpy" not in info and key in self._derived_dtypes}
            if missing:
                doc = {**doc, "data_keys": {key: {**info, "dtype_numpy": self._derived_dtypes[key]}
                                            if key in missing else info
                                            for key, info in doc["data_keys"].items()}}
            super().descriptor(doc)

        def event(self, doc):
            filled = doc.get("filled", {})
            frames = {key: value for key, value in doc["data"].items()
                      if not filled.get(key) and isinstance(value, str) and value in self._frame_datums}
            if frames:
                stream = self._descriptors[doc["descriptor"]]["name"]
                for key, datum_id in frames.items():
                    resource, point = self._frame_datums.pop(datum_id)
                    self._frames[(stream, key)].append((doc["seq_num"], resource, point))
                    self._first_descriptor.setdefault((stream, key), doc["descriptor"])
                doc = {**doc,
                       "data": {k: v for k, v in doc["data"].items() if k not in frames},
                       "timestamps": {k: v for k, v in doc["timestamps"].items() if k not in frames},
                       "filled": {k: v for k, v in filled.items() if k not in frames}}
            super().event(doc)

        def stop(self, doc):
            for (stream, key), frames in self._frames.items():  # in the order the events came
                self._emit_frames(self._first_descriptor[(stream, key)], key, frames)
            self._frames.clear()
            super().stop(doc)

        def _emit_frames(self, descriptor: str, key: str, frames: list[tuple[int, str, int]]) -> None:
            """One StreamResource (a slice of the file) for a stream's frames, row i the frame of
            the stream's i-th event (its row in the event table), and one StreamDatum per run of
            consecutive seq_nums.  A resumed plan repeats the points since its last checkpoint
            with the same seq_nums (bluesky rewinds its counters): the interrupted frames and
            their repeats are all kept, in the order taken, as the event table keeps their rows."""
            stream, data_keys = self._descriptors[descriptor]["name"], self._descriptors[descriptor]["data_keys"]
            points = [p for _, _, p in frames]
            resources = {r for _, r, _ in frames}
            resource = self._frame_resources[frames[0][1]]
            per_point = int(resource.get("resource_kwargs", {}).get("frame_per_point", 1))
            n = len(frames)
            if len(resources) > 1 or per_point != 1 or points != list(range(points[0], points[0] + n)):
                log.warning("run stream %r: the %d frames of %r are not one block of consecutive "
                            "points of one file; no image array in the catalogue", stream, n, key)
                return
            path = _path(resource)
            parameters = {"dataset": FRAME_DATASET, "slice": f"{points[0]}:{points[0] + n}",
                          "join_method": "stack", "chunk_shape": [1], **self._relative}
            if "dtype_numpy" not in data_keys.get(key, {}):
                parameters["_validate"] = True
            uid = f"{resource['uid']}-{stream}-{key}"
            self.emit(DocumentNames.stream_resource, {
                "uid": uid, "data_key": key, "mimetype": FRAMES_MIMETYPE,
                "uri": "file://localhost" + path.as_posix(), "parameters": parameters})
            runs, first = [], 0  # [(first index, last index + 1)] of consecutive seq_nums
            for i in range(1, n + 1):
                if i == n or frames[i][0] != frames[i - 1][0] + 1:
                    runs.append((first, i))
                    first = i
            for number, (start, stop) in enumerate(runs):
                self.emit(DocumentNames.stream_datum, {
                    "uid": f"{uid}/{number}", "stream_resource": uid, "descriptor": descriptor,
                    "indices": {"start": start, "stop": stop},
                    "seq_nums": {"start": frames[start][0], "stop": frames[start][0] + stop - start}})

    FrameNormalizer.__qualname__ = "FrameNormalizer"
    FrameNormalizer.__module__ = __package__  # found there by name (the package's __getattr__)
    _register_consolidator()
    return FrameNormalizer


RELATIVE_TO = "_relative_to"
"""StreamResource parameter: the catalogue directory the files' assets are relative to
(the writer's only: not among the data source's parameters)."""


def _register_consolidator() -> None:
    """Register :class:`_RelativeConsolidator` for our mimetypes in bluesky's consolidator registry."""
    from bluesky import consolidators
    from bluesky.consolidators import HDF5Consolidator

    class _RelativeConsolidator(HDF5Consolidator):
        """bluesky's HDF5 consolidator for our mimetypes: the data source's assets are relative
        to the catalogue directory (``RELATIVE_TO``), and the writer validates the files
        (absolute) with our adapters, through acquisition.storage.frames' handlers."""

        supported_mimetypes = frozenset({FRAMES_MIMETYPE, DERIVED_MIMETYPE})

        def adapter_parameters(self) -> dict:
            parameters = super().adapter_parameters()
            parameters.pop("swmr", None)  # acquisition.storage.frames decides how a file is opened
            return parameters

        def get_data_source(self):
            source = super().get_data_source()
            base = self._sres_parameters.get(RELATIVE_TO)
            if base is None:
                return source
            return dataclasses.replace(source, assets=[
                dataclasses.replace(asset, data_uri=relative_uri(asset.data_uri, base))
                for asset in source.assets])

        def get_adapter(self, adapters_by_mimetype=None):
            """Our adapter on the files as written (absolute paths)."""
            node = type("Node", (), {"metadata_": {}, "specs": []})
            absolute = HDF5Consolidator.get_data_source(self)
            return _adapter_classes()[self.mimetype].from_catalog(absolute, node, **self.adapter_parameters())

        def validate(self, adapters_by_mimetype=None, fix_errors=False):
            return super().validate({**_adapter_classes(), **(adapters_by_mimetype or {})}, fix_errors)

    for mimetype in _RelativeConsolidator.supported_mimetypes:
        consolidators.CONSOLIDATOR_REGISTRY[mimetype] = _RelativeConsolidator
