"""Bluesky plans of the interferometer: projections, mosaics, and their safety."""

from .alignment import (
           alignment_report,
           g2_alignment,
           use_working_point,
           working_point_metadata,
)
from .calibration import compute_tissue_calibration, tissue_calibration
from .mosaic import darkfield_mosaic, tile_positions
from .projection import darkfield_projection
from .safety import close_shutter, open_shutter, source_suspenders
from .settings import PlanArgumentError, phase_step_positions
from .source import tube_warmup
from .stubs import STREAMS

__all__ = ["PlanArgumentError", "alignment_report", "g2_alignment", "STREAMS", "close_shutter", "compute_tissue_calibration", "darkfield_mosaic", "darkfield_projection",
           "open_shutter", "phase_step_positions", "source_suspenders", "tile_positions", "tissue_calibration", "tube_warmup",
           "use_working_point", "working_point_metadata"]
