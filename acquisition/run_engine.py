"""A RunEngine on an event loop of its own, and its cleanup.

bluesky has no ``RunEngine.close()``: its loop runs forever in a daemon thread.  Every
place that builds a RunEngine (the session, the demo, the twin's calibration, the tests'
``RE`` fixture) takes it from here and ends it with :func:`close_run_engine`, as bluesky's
own ``RE`` test fixture does: a plan still running is halted, the subscriptions are
dropped, the loop is stopped, its thread joined and the loop closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


def new_run_engine(md: dict | None = None, **kwargs):
    """A ``RunEngine(md or {})`` on a new event loop (``kwargs`` go to RunEngine); end it
    with :func:`close_run_engine`."""
    from bluesky import RunEngine

    loop = asyncio.new_event_loop()
    try:
        return RunEngine({} if md is None else md, loop=loop, **kwargs)
    except BaseException:
        loop.close()
        raise


def close_run_engine(engine, timeout: float = 10.0) -> bool:
    """Halt a plan still running, drop every subscription, stop the loop, join its thread
    (at most ``timeout`` s) and close the loop; True if the thread ended in time.  Calling
    it again does nothing."""
    from bluesky.utils import TransitionError

    loop = engine.loop
    if loop.is_closed():
        return True
    if engine.state not in ("idle", "panicked"):
        with contextlib.suppress(TransitionError):
            engine.halt()
    engine.dispatcher.unsubscribe_all()
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join(timeout)
    if engine._th.is_alive():  # a callback holds the loop: leave it to the daemon thread
        log.error("RunEngine: its loop did not stop within %s s", timeout)
        return False
    loop.close()
    return True


@contextlib.contextmanager
def run_engine(md: dict | None = None, **kwargs):
    """:func:`new_run_engine` for the block, closed (:func:`close_run_engine`) at its end."""
    engine = new_run_engine(md, **kwargs)
    try:
        yield engine
    finally:
        close_run_engine(engine)
