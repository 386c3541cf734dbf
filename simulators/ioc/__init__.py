"""Channel Access twins: the instrument's PVs served by caproto on loopback (or a lab LAN),
driven by the same physics engine as the in-process twins.  Served by
``talbot-lau ioc --prefix TL:`` (which reads the configuration); see :func:`run_ioc`.
"""

from .server import TwinIOC, build_ioc, interfaces_from_environment, run_ioc

__all__ = ["TwinIOC", "build_ioc", "interfaces_from_environment", "run_ioc"]
