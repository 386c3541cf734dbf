"""Motion constants both motor twins use (in-process and the Channel Access motor record)."""

G2_VELOCITY_UM_S = 100.0
"""Piezo slew rate, um per recorded second."""
STAGE_VELOCITY_MM_S = 20.0
"""Sample-stage speed, mm per recorded second."""
