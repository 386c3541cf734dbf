"""A quick probe of the fringe phase in the open beam, to refresh references when it drifts.

Three frames at three G2 positions over one period, with the sample out of the beam
(stream ``phase_probe``), are read back from the detector's own file (the HDF5 plugin's
``full_file_name``, the frames' point numbers from ``num_captured``: the same for the
EPICS detector and its twin) and fitted per pixel; the field's circular mean phase is the
fringe phase.  A mosaic compares it with the phase probed at its last reference scan.
"""

from __future__ import annotations

import bluesky.plan_stubs as bps
import numpy as np

from reconstruction import fit_stepping

from ..instrument import Instrument
from ..storage.frames import HDF5FrameHandler
from .checks import HEARTBEAT_MARGIN_S, checked_frame
from .safety import close_shutter, open_shutter
from .settings import SteppingSettings

PROBE_STEPS = 3


def probe_fringe_phase(instrument: Instrument, settings: SteppingSettings,
                       reference_position_mm: tuple[float, float], extra=()):
    """Plan stub: the mean fringe phase (rad) of the open beam; returns it."""
    tube, g2, stage, detector = instrument.tube, instrument.g2, instrument.stage, instrument.detector
    positions = [settings.positions_um[0] + k * settings.period_um / PROBE_STEPS
                 for k in range(PROBE_STEPS)]
    yield from close_shutter(tube)
    yield from bps.mv(stage.x, reference_position_mm[0], stage.y, reference_position_mm[1])
    yield from open_shutter(tube, settings.exposure_s + HEARTBEAT_MARGIN_S)
    for x_um in positions:
        yield from bps.mv(g2, x_um)
        yield from checked_frame(instrument, settings, "phase_probe", extra, beam=True)
    yield from close_shutter(tube)
    last = int(detector.hdf1.num_captured.get())
    handler = HDF5FrameHandler(detector.hdf1.full_file_name.get())
    try:
        frames = np.stack([handler(point) for point in range(last - PROBE_STEPS, last)])
    finally:
        handler.close()
    fit = fit_stepping(frames.astype(np.float32), positions, settings.period_um)
    return float(np.angle(np.nanmean(np.exp(1j * fit.phi))))


def phase_drift(now: float, before: float) -> float:
    """The wrapped difference of two fringe phases (rad)."""
    return float(np.angle(np.exp(1j * (now - before))))
