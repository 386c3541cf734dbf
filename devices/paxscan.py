"""The Varian PaxScan 2520D flat panel as an ophyd areaDetector (cam + HDF5 plugin).

PVs ``P + "det:cam1:"`` (an ADVarian-style cam) and ``P + "det:HDF1:"`` (ADCore's HDF5
plugin).  Frames are written by the IOC to ``/entry/data/data`` and the documents carry
Resource/Datum references (spec ``AD_HDF5``), the same shape as the simulated twin.
A 9 s exposure may be a sum of shorter frames: set ``cam.num_exposures``.
"""

from ophyd import ADComponent as ADCpt
from ophyd import Component as Cpt
from ophyd.areadetector import DetectorBase, SingleTrigger
from ophyd.areadetector.cam import AreaDetectorCam
from ophyd.areadetector.base import EpicsSignalWithRBV
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin_V34


class PaxScanCam(AreaDetectorCam):
    """The cam with the PaxScan's gain mode and offset/gain correction switches."""

    gain_mode = ADCpt(EpicsSignalWithRBV, "GainMode", kind="config")
    offset_correction = ADCpt(EpicsSignalWithRBV, "OffsetCorrection", kind="config")
    gain_correction = ADCpt(EpicsSignalWithRBV, "GainCorrection", kind="config")


class HDF5PluginWithFileStore(HDF5Plugin_V34, FileStoreHDF5IterativeWrite):
    """HDF5 plugin that emits a Resource per file and a Datum per frame."""


class PaxScanDetector(SingleTrigger, DetectorBase):
    """PaxScan flat panel; the image field of a detector named ``detector`` is ``detector_image``."""

    cam = Cpt(PaxScanCam, "det:cam1:")
    hdf1 = Cpt(HDF5PluginWithFileStore, "det:HDF1:", write_path_template="/data/talbot-lau/",
               read_attrs=[])

    def __init__(self, prefix="", *, name, write_path=None, **kwargs):
        super().__init__(prefix, name=name, **kwargs)
        if write_path is not None:
            self.hdf1.write_path_template = str(write_path).rstrip("/") + "/"
