"""A motor record axis whose moves succeed only in position, and never wait forever.

ophyd's ``EpicsMotor`` reports a move done when DMOV returns to 1, wherever the axis is:
an IOC restarted mid-move answers DMOV = 1 at its start-up position, and the move
"succeeds".  :class:`CheckedMotor` fails such a move with :class:`NotInPosition`, gives
every move a timeout, and a move stopped on purpose (the RunEngine stops every axis on
pause and suspension, and then repeats the move) finishes without the position check.
"""

from __future__ import annotations

import logging

from ophyd import EpicsMotor
from ophyd.positioner import PositionerBase
from ophyd.status import Status

log = logging.getLogger(__name__)


class NotInPosition(RuntimeError):
    """The move finished but the readback is further from the target than the tolerance."""


class CheckedMotor(EpicsMotor):
    """A motor record (PV ``prefix``): a move succeeds only within ``tolerance`` (EGU) of
    its target, and fails after ``timeout`` s (default 120 s)."""

    def __init__(self, prefix="", *, name, tolerance=0.005, timeout=120.0, **kwargs):
        super().__init__(prefix, name=name, timeout=timeout, **kwargs)
        self.tolerance = tolerance
        self._stopped = False

    def move(self, position, wait=True, **kwargs):
        self._stopped = False
        motion = super().move(position, wait=False, **kwargs)
        status = Status(obj=self)

        def arrived(done):
            error = done.exception()
            if error is not None:
                status.set_exception(error)
            elif not self._stopped and abs(self.position - position) > self.tolerance:
                status.set_exception(NotInPosition(
                    f"{self.name} ({self.prefix}): at {self.position:.4f} {self.egu} after a move "
                    f"to {position:.4f} (tolerance {self.tolerance})"))
            else:
                status.set_finished()

        motion.add_callback(arrived)
        if wait:
            status.wait()
        return status

    def stop(self, *, success=False):
        """Stop the axis; the move in progress ends without its position check (it is
        stopped, not arrived), also when the STOP put fails because the IOC is gone."""
        self._stopped = True
        try:
            self.motor_stop.put(1, wait=False)
        except Exception as err:  # disconnected or read-only: still end the move's status
            log.warning("%s: STOP not sent (%r)", self.name, err)
        PositionerBase.stop(self, success=success)
