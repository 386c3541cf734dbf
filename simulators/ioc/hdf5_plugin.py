"""ADCore's HDF5 file plugin (``P + "det:HDF1:"``) in Stream mode, writing with h5py.

``Capture`` = 1 opens ``FileTemplate % (FilePath, FileName, FileNumber)``, increments
``FileNumber`` (AutoIncrement Yes) and appends every frame the cam sends to
``/entry/data/data`` (N, rows, cols, uint16), flushing each one; ``Capture`` = 0, or
``NumCapture`` frames when it is > 0, closes the file.  The file is written in SWMR mode,
so frames can be read while it is open.  The plugin looks primed (ArraySize* of the
frame) so ophyd's ``HDF5Plugin.stage()`` accepts it.

Files stay under the write root (:meth:`HDF5PluginGroup.set_write_root`, the IOC's
``--write-path``): a ``FilePath`` outside it (after resolving symlinks and ``..``), or a
file name that leads outside it, is refused: the put fails, ``WriteStatus`` reads "Write
error" and ``WriteMessage`` says why; nothing is created outside.  Without a write root
every path is refused.  A ``FilePath`` without a trailing separator is a directory (ADCore
appends the separator).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from simulators.frame_file import append_frame, close_frame_file, create_frame_file

from .ad_records import DATA_TYPES, DISABLE_ENABLE, NO_YES, readback, setting

log = logging.getLogger(__name__)

WRITE_MODES = ("Single", "Capture", "Stream")


class PathRefused(ValueError):
    """A file path outside the plugin's write root."""


class HDF5PluginGroup(PVGroup):
    """NDFileHDF5 plugin: ``shape`` (rows, cols) of the frames, ``cam_port`` its source."""

    plugin_type = readback("PluginType_RBV", "NDFileHDF5", text="string")
    port_name = readback("PortName_RBV", "HDF1", text="string")
    nd_array_port, nd_array_port_rbv = setting("NDArrayPort", "PAX1", text="string")
    enable, enable_rbv = setting("EnableCallbacks", 1, enum_strings=DISABLE_ENABLE)
    blocking, blocking_rbv = setting("BlockingCallbacks", 1, enum_strings=NO_YES)
    array_counter, array_counter_rbv = setting("ArrayCounter", 0)
    array_size0 = readback("ArraySize0_RBV", 0)
    array_size1 = readback("ArraySize1_RBV", 0)
    array_size2 = readback("ArraySize2_RBV", 0)
    data_type = readback("DataType_RBV", "UInt16", enum_strings=DATA_TYPES)
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shape = (1, 1)
        self._file: h5py.File | None = None
        self._dataset = None
        self.write_root: str | None = None

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

    def configure(self, *, shape) -> None:
        """(rows, cols) of the frames, before the server starts."""
        self.shape = (int(shape[0]), int(shape[1]))

    @plugin_type.startup
    async def plugin_type(self, instance, async_lib):
        rows, cols = self.shape
        await self.array_size0.write(cols)
        await self.array_size1.write(rows)

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

    @capture.putter
    async def capture(self, instance, value):
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
            await self.capture_rbv.write("Capturing")
        else:
            self._close()
            await self.capture_rbv.write("Done")
        return value

    def _open(self) -> None:
        self._close()
        filename = self.file_template.value % (self.file_path.value, self.file_name.value,
                                               self.file_number.value)
        self._confined(filename, "file")  # a file name or template may lead elsewhere
        rows, cols = self.shape
        self._file, self._dataset = create_frame_file(filename, (rows, cols))

    def _close(self) -> None:
        file, self._file, self._dataset = self._file, None, None
        problem = close_frame_file(file)  # disk full: the file ends here either way; say so
        if problem:
            log.error(problem)

    async def receive(self, frame: np.ndarray) -> None:
        """One NDArray from the cam: counted, and appended to the file while capturing."""
        if self.enable.value != "Enable":
            return
        counter = self.array_counter.value + 1
        await self.array_counter.write(counter, verify_value=False)
        await self.array_counter_rbv.write(counter)
        if self._dataset is None:
            return
        try:
            index = append_frame(self._dataset, frame)
        except OSError as err:  # disk full, file removed: not captured, the file closed; say so
            await self.write_status.write("Write error")
            await self.write_message.write(str(err)[:255])
            self._close()
            return
        await self.num_captured.write(index + 1)
        if 0 < self.num_capture.value <= index + 1:
            self._close()
            await self.capture.write("Done", verify_value=False)
            await self.capture_rbv.write("Done")
