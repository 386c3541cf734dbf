"""ADCore's HDF5 file plugin (``P + "det:HDF1:"``) in Stream mode, writing with h5py.

``Capture`` = 1 opens ``FileTemplate % (FilePath, FileName, FileNumber)``, increments
``FileNumber`` (AutoIncrement Yes) and appends every frame the cam sends, with the
NDAttributes the cam attached to it, in ADCore's default layout (``simulators.shared.frame_file``:
frames at ``/entry/instrument/detector/data``, linked as ``/entry/data/data``), flushing
each one; ``Capture`` = 0, or ``NumCapture`` frames when it is > 0, closes the file.  The
file is written in SWMR mode, so frames can be read while it is open, compressed as
``Compression`` says (None, zlib at ``ZLevel``, BSLZ4).  The plugin looks primed
(ArraySize* of the frame) so ophyd's ``HDF5Plugin.stage()`` accepts it.

Files stay under the write root (:meth:`HDF5PluginGroup.set_write_root`, the IOC's
``--write-path``): a ``FilePath`` outside it (after resolving symlinks and ``..``), or a
file name that leads outside it, is refused: the put fails, ``WriteStatus`` reads "Write
error" and ``WriteMessage`` says why; nothing is created outside.  Without a write root
every path is refused.  A ``FilePath`` without a trailing separator is a directory (ADCore
appends the separator).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import h5py
import numpy as np
from caproto import ChannelType, SkipWrite
from caproto.server import pvproperty

from simulators.shared.frame_file import (
    append_frame,
    close_frame_file,
    compression_name,
    create_frame_file,
)

from .ad_records import NO_YES, readback, setting
from .ndarray_plugin import NDPluginBaseGroup

log = logging.getLogger(__name__)

WRITE_MODES = ("Single", "Capture", "Stream")
COMPRESSIONS = ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG")
"""NDFileHDF5's Compression enum (NDFileHDF5.template); the twin writes None, zlib and BSLZ4
(frame_file.COMPRESSIONS)."""


def _zlib_level(value) -> None:
    if not 0 <= int(value) <= 9:
        raise ValueError(f"ZLevel {value} refused: 0..9")


class PathRefused(ValueError):
    """A file path outside the plugin's write root."""


class HDF5PluginGroup(NDPluginBaseGroup):
    """NDFileHDF5 plugin: ``shape`` (rows, cols) of the frames, ``cam_port`` its source."""

    plugin_type = readback("PluginType_RBV", "NDFileHDF5", text="string")
    port_name = readback("PortName_RBV", "HDF1", text="string")
    file_path, file_path_rbv = setting("FilePath", "", text=True)
    file_path_exists = readback("FilePathExists_RBV", 0, enum_strings=NO_YES)
    create_directory, create_directory_rbv = setting("CreateDirectory", -5)
    file_name, file_name_rbv = setting("FileName", "", text=True)
    file_number, file_number_rbv = setting("FileNumber", 0)
    file_template, file_template_rbv = setting("FileTemplate", "%s%s_%6.6d.h5", text=True)
    full_file_name = readback("FullFileName_RBV", "", text=True)
    auto_increment, auto_increment_rbv = setting("AutoIncrement", 1, enum_strings=NO_YES)
    auto_save, auto_save_rbv = setting("AutoSave", 1, enum_strings=NO_YES)
    file_write_mode, file_write_mode_rbv = setting("FileWriteMode", 2, enum_strings=WRITE_MODES)
    capture = pvproperty(name="Capture", value="Done", dtype=ChannelType.ENUM,
                         enum_strings=("Done", "Capture"))
    capture_rbv = readback("Capture_RBV", "Done", enum_strings=("Done", "Capturing"))
    num_capture, num_capture_rbv = setting("NumCapture", 0)
    num_captured = readback("NumCaptured_RBV", 0)
    write_status = readback("WriteStatus", 0, enum_strings=("Write OK", "Write error"))
    write_message = readback("WriteMessage", "", text=True)
    compression, compression_rbv = setting("Compression", 0, enum_strings=COMPRESSIONS)
    z_level, z_level_rbv = setting("ZLevel", 6, check=_zlib_level)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._capture_done = asyncio.Event()
        self._capture_done.set()
        self._file: h5py.File | None = None
        self._dataset = None
        self.write_root: str | None = None
        self.attributes = lambda: ()

    def configure(self, *, shape, attributes=None) -> None:
        """Frames of ``shape`` (rows, cols); ``attributes()`` gives the NDAttributes (a tuple
        of ``frame_file.NDAttribute``) the cam attaches to each frame, read when a file opens."""
        super().configure(shape=shape)
        if attributes is not None:
            self.attributes = attributes

    def set_write_root(self, root) -> None:
        """Confine FilePath and the files to ``root`` (resolved now; None refuses all)."""
        self.write_root = None if root is None else os.path.realpath(root)

    def _confined(self, path: str, what: str) -> str:
        """``path`` resolved (symlinks, ``..``); PathRefused unless it is inside the root."""
        if self.write_root is None:
            raise PathRefused(f"{what} refused: no write root configured")
        if not os.path.isabs(path):
            raise PathRefused(f"{what} {path!r} refused: not an absolute path")
        resolved = os.path.realpath(path)
        if os.path.commonpath([resolved, self.write_root]) != self.write_root:
            raise PathRefused(f"{what} {path!r} refused: outside the write root {self.write_root}")
        return resolved

    async def _write_error(self, message: str) -> None:
        await self.write_status.write("Write error")
        await self.write_message.write(message[:255])

    @file_path.putter
    async def file_path(self, instance, value):
        if value and not value.endswith(os.sep):
            value += os.sep  # a directory, as ADCore's checkPath makes it
        try:
            path = Path(self._confined(value, "FilePath"))
        except PathRefused as err:
            await self._write_error(str(err))
            raise
        if not path.is_dir() and self.create_directory.value != 0:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
        await self.file_path_rbv.write(value)
        await self.file_path_exists.write(1 if path.is_dir() and os.access(path, os.W_OK) else 0)
        return value

    @compression.putter
    async def compression(self, instance, value):
        try:
            compression_name(value)
        except ValueError:
            raise ValueError(f"Compression {value} is not simulated: None, zlib or BSLZ4") from None
        await self.compression_rbv.write(value)
        return value

    @capture.putter
    async def capture(self, instance, value):
        """Capture = 1 opens the file and completes (put callback) when capture ends."""
        if value in ("Capture", 1):
            if self.file_write_mode.value != "Stream":
                raise ValueError("only Stream mode is simulated")
            try:
                self._open()
            except (OSError, ValueError, TypeError) as err:  # refused or unwritable: no file
                await self._write_error(str(err))
                raise
            await self.write_status.write("Write OK")
            await self.write_message.write("")
            await self.full_file_name.write(self._file.filename)
            await self.num_captured.write(0)
            if self.auto_increment.value == "Yes":
                number = self.file_number.value + 1
                await self.file_number.write(number, verify_value=False)
                await self.file_number_rbv.write(number)
            self._capture_done.clear()
            await instance.write(value, verify_value=False)
            await self.capture_rbv.write("Capturing")
            await self._capture_done.wait()
            raise SkipWrite()  # _end_capture wrote Capture = Done
        await self._end_capture()
        return value

    async def _end_capture(self) -> None:
        self._close()
        self._capture_done.set()
        await self.capture.write("Done", verify_value=False)
        await self.capture_rbv.write("Done")

    def _open(self) -> None:
        self._close()
        filename = self.file_template.value % (self.file_path.value, self.file_name.value,
                                               self.file_number.value)
        self._confined(filename, "file")  # a file name or template may lead elsewhere
        rows, cols = self.shape
        level = int(self.z_level.value)
        self._file, self._dataset = create_frame_file(
            filename, (rows, cols), compression=self.compression.value, level=level,
            attributes=self.attributes())

    def _close(self) -> None:
        file, self._file, self._dataset = self._file, None, None
        problem = close_frame_file(file)  # disk full: the file ends here either way; say so
        if problem:
            log.error(problem)

    async def receive(self, frame: np.ndarray, unique_id: int | None = None,
                      time_stamp_s: float | None = None, attributes: dict | None = None) -> None:
        """One NDArray from the cam: counted, and appended to the file while capturing, with
        its unique id, time stamp (POSIX s) and ``attributes`` (NDAttribute name -> value)."""
        if not await self.count(frame, unique_id):
            return
        if self._dataset is None:
            return
        try:
            index = append_frame(self._dataset, frame, unique_id=unique_id,
                                 time_stamp_s=time_stamp_s, attributes=attributes)
        except OSError as err:  # disk full, file removed: not captured, the file closed; say so
            await self.write_status.write("Write error")
            await self.write_message.write(str(err)[:255])
            await self._end_capture()
            return
        await self.num_captured.write(index + 1)
        if 0 < self.num_capture.value <= index + 1:
            await self._end_capture()
