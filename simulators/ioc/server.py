"""One caproto server hosting all four twins as SubGroups under one prefix.

PVs: ``P g2``, ``P stage:x``, ``P stage:y`` (motor records), ``P tube:*`` (generator),
``P det:cam1:*`` and ``P det:HDF1:*`` (PaxScan).  Frames come from the same physics
engine and the same :class:`simulators.twins.SimWorld` as the in-process twins, fed with
the readbacks served here.  One process, because several caproto servers sharing UDP
5064 on loopback do not all receive unicast searches.

Access rule, as EPICS access security with ``asCheckClientIP``: anyone who reaches the
server reads every PV; only clients at the IP addresses of ``write_hosts`` (names,
addresses or networks; loopback by default) write any.  The rule is decided on the peer
address of the client's TCP connection, never on the host name a client claims, so serve
with :func:`serve` (:func:`run_ioc`), which provides that; under caproto's stock server
every write is refused.  The HDF5 plugin writes files only under ``write_path``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

from caproto import AccessRights
from caproto.asyncio.server import Context, VirtualCircuit
from caproto.server import PVGroup, SubGroup

from simulators.physics import Phantom, Setup, detector_shape
from simulators.shared.motion import G2_VELOCITY_UM_S, STAGE_VELOCITY_MM_S
from simulators.shared.world import SimWorld

from .detector import PaxScanGroup
from .motor import MotorAxis
from .tube import TubeGroup

DEFAULT_WRITE_HOSTS = ("127.0.0.1", "::1")
"""Who may write by default: clients on this machine's loopback only."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def write_networks(hosts: Iterable[str]) -> tuple[Network, ...]:
    """The networks of ``hosts``: addresses, networks (``192.168.1.0/24``) or host names
    (every address they resolve to, now); ValueError for one that does not resolve."""
    if isinstance(hosts, str):
        hosts = [hosts]
    networks = []
    for host in hosts:
        try:
            networks.append(ipaddress.ip_network(host, strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as err:
            raise ValueError(f"write host {host!r} does not resolve: {err}") from None
        networks += [ipaddress.ip_network(info[4][0].split("%")[0]) for info in infos]
    return tuple(dict.fromkeys(networks))


def write_allowed(address: str | None, networks: Iterable[Network]) -> bool:
    """True if the client at IP ``address`` is in one of ``networks`` (a host name, as a
    stock caproto server passes, never is)."""
    try:
        ip = ipaddress.ip_address(str(address).split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class TwinIOC(PVGroup):
    """The instrument's twins over Channel Access; call :meth:`configure` before serving."""

    g2 = SubGroup(MotorAxis, prefix="g2")
    stage_x = SubGroup(MotorAxis, prefix="stage:x")
    stage_y = SubGroup(MotorAxis, prefix="stage:y")
    tube = SubGroup(TubeGroup, prefix="tube:")
    det = SubGroup(PaxScanGroup, prefix="det:")

    def configure(self, setup: Setup, phantom: Phantom | None, *, time_scale: float = 1.0,
                  seed: int = 0, write_path: str | Path | None = None,
                  g2_limits_um=(-5.0, 15.0), stage_limits_mm=((-150.0, 150.0), (-150.0, 150.0)),
                  g2_settle_s: float = 0.05, g2_start_um: float = 0.0,
                  g2_retry_deadband_um: float = 0.001, kv_max: float = 50.0,
                  ma_max: float = 100.0, kv: float = 0.0, ma: float = 0.0,
                  watchdog_s: float = 30.0,
                  write_hosts: Iterable[str] = DEFAULT_WRITE_HOSTS) -> SimWorld:
        """Set limits, speeds and the physics world; returns the world the detector uses.

        ``write_hosts``: who may write PVs (see the module); ``write_path``: the only
        directory tree the HDF5 plugin writes in (no files at all when None)."""
        if not isinstance(setup, Setup):
            raise TypeError(f"setup must be a simulators.physics.Setup, got {type(setup).__name__}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        if len(stage_limits_mm) != 2:
            raise ValueError(f"stage_limits_mm must be ((x_low, x_high), (y_low, y_high)), "
                             f"got {stage_limits_mm!r}")
        self.g2.configure(limits=g2_limits_um, egu="um", velocity=G2_VELOCITY_UM_S,
                          settle_s=g2_settle_s, retry_deadband=g2_retry_deadband_um,
                          start=g2_start_um, time_scale=time_scale)
        for axis, limits in ((self.stage_x, stage_limits_mm[0]), (self.stage_y, stage_limits_mm[1])):
            axis.configure(limits=limits, egu="mm", velocity=STAGE_VELOCITY_MM_S,
                           retry_deadband=0.001, time_scale=time_scale)
        self.tube.configure(kv_max=kv_max, ma_max=ma_max, kv=kv, ma=ma, time_scale=time_scale,
                            watchdog_s=watchdog_s)
        world = SimWorld(setup=setup, phantom=phantom, time_scale=time_scale, seed=seed)
        world.g2 = self.g2
        world.stage = SimpleNamespace(x=self.stage_x, y=self.stage_y)
        world.tube = self.tube
        det = setup.detector
        self.det.configure(world=world, shape=detector_shape(setup),
                           full_shape=(det.rows, det.columns))
        if write_path is not None:
            try:
                Path(write_path).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(f"write_path {str(write_path)!r} cannot be created: {err}") from err
        self.det.hdf1.set_write_root(write_path)
        self.write_networks = write_networks(write_hosts)
        self._guard_every_channel()
        self.world = world
        return world

    def _guard_every_channel(self) -> None:
        """Apply the write rule to every PV and record field: each channel's own rights
        (read-only ones stay read-only), less WRITE for a client not in ``write_networks``."""
        for channel in self.pvdb.values():
            for data in (channel, *getattr(channel, "fields", {}).values()):
                if "check_access" not in vars(data):
                    data.check_access = _GuardedAccess(self, data)

    def access_rights(self, channel, hostname, username) -> AccessRights:
        """The rights of the client at IP ``hostname`` on ``channel``."""
        rights = type(channel).check_access(channel, hostname, username)
        if write_allowed(hostname, getattr(self, "write_networks", ())):
            return rights
        return rights & ~AccessRights.WRITE


class _GuardedAccess:
    """``ChannelData.check_access`` of one channel, deciding through its IOC's rule."""

    def __init__(self, ioc: TwinIOC, channel):
        self.ioc, self.channel = ioc, channel

    def __call__(self, hostname, username) -> AccessRights:
        return self.ioc.access_rights(self.channel, hostname, username)


class _PeerAddressCircuit(VirtualCircuit):
    """A client connection whose ``client_hostname``, the host every access check is
    given, is the peer's IP address; the name the client claims is only kept."""

    @property
    def client_hostname(self) -> str:
        return self.circuit.address[0]

    @client_hostname.setter
    def client_hostname(self, name) -> None:
        self.claimed_hostname = name


class _PeerAddressContext(Context):
    CircuitClass = _PeerAddressCircuit


def interfaces_from_environment() -> list[str]:
    """``EPICS_CAS_INTF_ADDR_LIST`` (space separated), loopback when unset."""
    return os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1").split() or ["127.0.0.1"]


def build_ioc(prefix: str, setup: Setup, phantom: Phantom | None, **options) -> TwinIOC:
    """A configured :class:`TwinIOC` (options: see :meth:`TwinIOC.configure`)."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    ioc = TwinIOC(prefix=prefix)
    ioc.configure(setup, phantom, **options)
    return ioc


BEACON_VARIABLES = ("EPICS_CAS_BEACON_ADDR_LIST", "EPICS_CAS_AUTO_BEACON_ADDR_LIST")


def _broadcast_address(address: str) -> str | None:
    """The IPv4 broadcast address of the local interface that holds ``address`` (Linux
    ioctls SIOCGIFADDR/SIOCGIFBRDADDR), or None when it cannot be found."""
    try:
        import fcntl
        import struct

        names = [name for _, name in socket.if_nameindex()]
    except (ImportError, OSError, AttributeError):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                if socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24]) == address:
                    return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8919, request)[20:24])
            except OSError:
                continue
    return None


def beacon_environment(interfaces: Iterable[str], environ=None) -> dict[str, str]:
    """The beacon settings for a server on ``interfaces``: CA beacons go to those
    interfaces only (loopback for a loopback server, an interface's broadcast address
    otherwise), never to caproto's default 255.255.255.255 on every network.

    caproto (1.3, ``caproto._utils.get_beacon_address_list``) sends beacons to the
    addresses of ``EPICS_CAS_BEACON_ADDR_LIST`` plus 255.255.255.255 unless that list is
    non-empty and ``EPICS_CAS_AUTO_BEACON_ADDR_LIST`` is not YES: hence both variables.
    Empty when the user set either of them (their choice stands) or when the server
    listens on every interface (0.0.0.0: beacons everywhere, caproto's default)."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name, "").strip() for name in BEACON_VARIABLES):
        return {}
    addresses = []
    for interface in interfaces:
        address = interface.split(":")[0].strip()
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if ip.version != 4:
            continue
        if ip.is_unspecified:
            return {}
        addresses.append(address if ip.is_loopback else (_broadcast_address(address) or address))
    if not addresses:
        return {}
    return {"EPICS_CAS_BEACON_ADDR_LIST": " ".join(dict.fromkeys(addresses)),
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO"}


def serve(ioc: PVGroup, interfaces: list[str] | None = None) -> None:
    """Serve ``ioc`` until interrupted (SIGINT), access decided on client IP addresses,
    on ``interfaces`` (default ``interfaces_from_environment()``) and the port
    ``EPICS_CA_SERVER_PORT`` (5064 when unset); CA beacons go only to the served
    interfaces (:func:`beacon_environment`) unless the beacon variables are set."""
    interfaces = interfaces or interfaces_from_environment()
    beacons = beacon_environment(interfaces)
    saved = {name: os.environ.get(name) for name in beacons}
    os.environ.update(beacons)  # caproto reads them when the server starts

    async def run() -> None:  # the context must be made in its event loop
        await _PeerAddressContext(ioc.pvdb, interfaces).run(log_pv_names=False)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_ioc(prefix: str, setup: Setup, phantom: Phantom | None, **options) -> None:
    """Serve the twins until interrupted (SIGINT), on ``interfaces_from_environment()``
    and the port ``EPICS_CA_SERVER_PORT`` (5064 when unset); ``options`` as for
    :meth:`TwinIOC.configure` (``write_hosts``, ``write_path``, ...)."""
    serve(build_ioc(prefix, setup, phantom, **options))
