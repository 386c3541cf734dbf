"""The Varian PaxScan 2520D flat panel as an ophyd areaDetector (cam + HDF5 + stats plugins).

PVs ``P + "det:cam1:"`` (an ADVarian-style cam), ``P + "det:HDF1:"`` (ADCore's HDF5
plugin in Stream mode) and ``P + "det:Stats1:"`` (ADCore's NDStats plugin).  Frames are
written by the IOC to ``/entry/data/data`` and the documents carry Resource/Datum
references (spec ``AD_HDF5``): one 2-D image per event, described as ``[rows, cols]``, the
same shape as the simulated twin.  Beside the image, each event carries the image's mean
(ADU, ``detector_stats1_mean_value``, hinted): what ``%ct`` prints and what
BestEffortCallback tabulates and finds peaks in.  The panel caps a
single frame at a few seconds, so a 9 s exposure is ``AcquireTime`` x ``NumExposures``
summed into one image.  A trigger fails (``StatusTimeoutError``) when the image has not
come ``READOUT_MARGIN_S`` after its exposure time: a lost or hung IOC never hangs a plan.

At stage the HDF5 plugin's ``Compression`` is set to ``compression`` ("None", "zlib" or
"bslz4", the names of the configuration, put as ADCore's enum strings) before capture
starts, and, when ``attributes_file`` is given, the cam's ``NDAttributesFile`` to that file
(a path on the IOC's host; configs/paxscan_attributes.xml is the instrument's), which stays
set: the IOC then stores the readbacks it names with every frame
(``/entry/instrument/NDAttributes``).
"""

import time

from ophyd import ADComponent as ADCpt
from ophyd import Component as Cpt
from ophyd.areadetector import DetectorBase, SingleTrigger
from ophyd.areadetector.base import EpicsSignalWithRBV
from ophyd.areadetector.cam import AreaDetectorCam
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin_V34, StatsPlugin
from ophyd.status import DeviceStatus

CAM_CONFIGURATION = ("acquire_time", "num_exposures", "image_mode", "num_images", "trigger_mode",
                     "gain_mode", "offset_correction", "gain_correction", "manufacturer", "model")
"""The cam settings recorded in every descriptor (the twin records the same names)."""
READOUT_MARGIN_S = 30.0
COMPRESSION_ENUM = {"None": "None", "zlib": "zlib", "bslz4": "BSLZ4"}
"""The configuration's compression names to NDFileHDF5's ``Compression`` enum strings."""
"""How long after its exposure time an image may take to arrive before the trigger fails (s)."""


class PaxScanCam(AreaDetectorCam):
    """The cam with the PaxScan's gain mode and offset/gain correction switches."""

    gain_mode = ADCpt(EpicsSignalWithRBV, "GainMode", kind="config")
    offset_correction = ADCpt(EpicsSignalWithRBV, "OffsetCorrection", kind="config")
    gain_correction = ADCpt(EpicsSignalWithRBV, "GainCorrection", kind="config")


class HDF5PluginWithFileStore(HDF5Plugin_V34, FileStoreHDF5IterativeWrite):
    """HDF5 plugin that emits a Resource per file and a Datum per frame."""


class PaxScanDetector(SingleTrigger, DetectorBase):
    """PaxScan flat panel; the image field of a detector named ``detector`` is ``detector_image``.

    ``write_path``: the directory the IOC writes into, as the IOC's host sees it;
    ``compression``: a key of COMPRESSION_ENUM; ``attributes_file``: the NDAttributes XML
    file as the IOC's host sees it (None: the cam's setting is left as it is).
    """

    cam = Cpt(PaxScanCam, "det:cam1:")
    hdf1 = Cpt(HDF5PluginWithFileStore, "det:HDF1:", write_path_template="/data/talbot-lau/")
    stats1 = Cpt(StatsPlugin, "det:Stats1:")  # NDStats: the image's mean is a hinted reading

    def __init__(self, prefix="", *, name, write_path=None, compression="None",
                 attributes_file=None, **kwargs):
        if compression not in COMPRESSION_ENUM:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_ENUM)}, "
                             f"got {compression!r}")
        super().__init__(prefix, name=name, **kwargs)
        if write_path is not None:
            self.hdf1.write_path_template = str(write_path).rstrip("/") + "/"
        capture = self.hdf1.stage_sigs.pop("capture")  # the file opens at capture: set before
        self.hdf1.stage_sigs["compression"] = COMPRESSION_ENUM[compression]
        self.hdf1.stage_sigs["capture"] = capture
        self._attributes_file = None if attributes_file is None else str(attributes_file)
        # the image reference and the image's mean are the event's readings
        self.read_attrs = ["hdf1", "stats1.mean_value"]
        self.stats1.mean_value.kind = "hinted"  # after read_attrs, which makes it plain normal
        self.hdf1.read_attrs = []
        self.cam.configuration_attrs = list(CAM_CONFIGURATION)
        self.hdf1.configuration_attrs = []
        self.stats1.configuration_attrs = []
        self.stats1.stage_sigs["compute_statistics"] = "Yes"  # NDStats computes nothing otherwise
        self.stage_sigs["cam.num_images"] = 1  # one image (a sum of NumExposures frames) a trigger

    def stage(self):
        """Point the cam at the NDAttributes file (it stays set after unstage, as an IOC's
        autosave keeps it), then stage as ophyd's detectors do."""
        if self._attributes_file is not None:
            self.cam.nd_attributes_file.set(self._attributes_file).wait(timeout=READOUT_MARGIN_S)
        return super().stage()

    def trigger(self):
        """One image (``SingleTrigger``'s), whose status times out READOUT_MARGIN_S after
        ``AcquireTime x NumExposures``."""
        if self._staged.value != "yes":
            raise RuntimeError(f"{self.name}: trigger before stage")
        exposure_s = float(self.cam.acquire_time.get()) * max(int(self.cam.num_exposures.get()), 1)
        status = self._status = DeviceStatus(self, timeout=exposure_s + READOUT_MARGIN_S)
        self._acquisition_signal.put(1, wait=False)
        self.generate_datum(self._image_name, time.time(), {})
        return status  # not self._status: a quick image may have cleared it already

    def make_data_key(self):
        """The image field's data key: one ``[rows, cols]`` frame an event."""
        key = super().make_data_key()
        key["shape"] = list(key["shape"][1:])
        return key
