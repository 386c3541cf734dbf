"""Build the instrument the plans run on: the in-process twins or the EPICS devices.

Plans never ask which kind they got: both expose ``tube``, ``g2``, ``stage`` and ``detector``
with the same component names (DESIGN.md rule 2).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, default_config_dir, load_config

ATTRIBUTES_FILE = "paxscan_attributes.xml"
"""The detector IOC's NDAttributes file among the embedded configs (ADCore's XML)."""


def embedded_attributes_file() -> Path:
    """The embedded NDAttributes file: which readbacks each frame file stores per frame."""
    return default_config_dir() / ATTRIBUTES_FILE


@dataclass
class Instrument:
    """The four devices of the interferometer and the configuration they were built from."""

    tube: Any
    g2: Any
    stage: Any
    detector: Any
    config: Config
    world: Any = None
    """The simulated world (physics setup, phantom, clock) for a twin; None for hardware."""
    working_point: dict | None = None
    """Set by ``acquisition.plans.use_working_point``: the G2 start it put into ``config``
    (``working_point_um``) and where it came from, for the start documents of later runs."""

    @property
    def devices(self) -> tuple:
        return (self.tube, self.g2, self.stage, self.detector)


def twin_options(config: Config) -> dict:
    """The configuration both kinds of twin take: limits (um, mm), settle (s), tube limits,
    time scale and seed."""
    inst, sim = config.instrument, config.simulation
    return dict(time_scale=sim.time_scale, seed=sim.seed, g2_limits_um=inst.g2.limits_um,
                stage_limits_mm=(inst.stage.x_limits_mm, inst.stage.y_limits_mm),
                g2_settle_s=inst.g2.settle_s, kv_max=inst.tube.kv_max, ma_max=inst.tube.ma_max)


def serve_ioc_twin(config: Config | None = None, *, prefix: str | None = None,
                   write_path: str | Path | None = None, phantom=None,
                   write_hosts: list[str] | tuple[str, ...] | None = None, **overrides) -> None:
    """Serve the Channel Access twins of ``config`` until SIGINT (``talbot-lau ioc``).

    On the interfaces of ``EPICS_CAS_INTF_ADDR_LIST`` (loopback when unset) and the port
    ``EPICS_CA_SERVER_PORT`` (5064 when unset); ``overrides`` replace ``twin_options``.
    Everyone reads; only clients at ``write_hosts`` (names, addresses or networks;
    loopback when None) write; the detector writes files only under ``write_path``.
    """
    from simulators.ioc import run_ioc
    from simulators.physics import build_phantom

    config = config or load_config()
    inst = config.instrument
    options = twin_options(config) | dict(g2_start_um=inst.g2.start_um, kv=inst.tube.kv,
                                          ma=inst.tube.ma) | overrides
    if write_hosts is not None:
        options["write_hosts"] = tuple(write_hosts)
    run_ioc(inst.epics.prefix if prefix is None else prefix, config.setup,
            build_phantom(config.simulation.phantom) if phantom is None else phantom,
            write_path=write_path or inst.epics.write_path, **options)


def simulated_instrument(
    config: Config | None = None, *, write_path: str | Path | None = None, phantom=None
) -> Instrument:
    """The in-process twins, driven by the physics engine, ready to use.

    ``config`` defaults to the embedded ``configs/*.yaml``; frames go to ``write_path``
    (a new temporary directory if None); ``phantom`` defaults to the configured one.
    """
    from simulators.physics import build_phantom
    from simulators.twins import build_twins

    config = config or load_config()
    inst, sim = config.instrument, config.simulation
    if write_path is None:
        write_path = tempfile.mkdtemp(prefix="talbot-lau-")
    Path(write_path).mkdir(parents=True, exist_ok=True)
    twins = build_twins(
        config.setup,
        build_phantom(sim.phantom) if phantom is None else phantom,
        write_path=Path(write_path),
        **twin_options(config),
    )
    for signal, value in ((twins.tube.kv, inst.tube.kv), (twins.tube.ma, inst.tube.ma)):
        signal.set(value).wait(timeout=5)
    twins.detector.hdf1.compression.put(inst.detector.compression)
    twins.detector.cam.nd_attributes_file.put(str(embedded_attributes_file()))
    return Instrument(
        tube=twins.tube, g2=twins.g2, stage=twins.stage, detector=twins.detector,
        config=config, world=twins.world,
    )


class InstrumentNotConnected(ConnectionError):
    """Some PVs of the EPICS instrument did not answer."""


def _unconnected_pvs(device) -> list[str]:
    """The PV names of ``device``'s signals that are not connected."""
    return [getattr(walk.item, "pvname", walk.dotted_name) for walk in device.walk_signals()
            if not walk.item.connected]


def epics_instrument(
    config: Config | None = None, *, prefix: str | None = None,
    write_path: str | Path | None = None, connect_timeout_s: float = 10.0,
    attributes_file: str | Path | None = None,
) -> Instrument:
    """The instrument's ``devices/`` classes over Channel Access, connected.

    PVs under ``prefix`` (default ``epics.prefix`` of the config): ``g2``, ``stage:x``,
    ``stage:y``, ``tube:``, ``det:cam1:``, ``det:HDF1:``, ``det:Stats1:``; ``write_path`` (default
    ``epics.write_path``) is the detector IOC's file directory; ``attributes_file`` (default
    the embedded one, right for an IOC on this host) the NDAttributes file as the IOC's host
    sees it; frames are compressed as ``detector.compression`` says.  Raises
    :class:`InstrumentNotConnected` naming the missing PVs; nothing is written to a PV.
    """
    import devices

    config = config or load_config()
    inst = config.instrument
    prefix = inst.epics.prefix if prefix is None else prefix
    attributes = embedded_attributes_file() if attributes_file is None else attributes_file
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    # labels as the twins have them: bluesky's %wa lists "motors", %ct counts "detectors"
    makers = {
        "tube": lambda: devices.XRayTube(prefix + "tube:", name="tube", labels={"source"}),
        "g2": lambda: devices.PiezoStepper(prefix + "g2", name="g2", settle_time=0.0,
                                           tolerance_um=inst.g2.tolerance_um, labels={"motors"}),
        "stage": lambda: devices.SampleStage(prefix, name="stage", labels={"motors"}),
        # ophyd's HDF5 file-store mixin connects one PV while it is built
        "detector": lambda: devices.PaxScanDetector(prefix, name="detector", labels={"detectors"},
                                                    write_path=write_path or inst.epics.write_path,
                                                    compression=inst.detector.compression,
                                                    attributes_file=attributes),
    }
    built, missing = {}, []
    deadline = time.monotonic() + connect_timeout_s  # channels connect in parallel
    for name, make in makers.items():
        try:
            built[name] = make()
            built[name].wait_for_connection(timeout=max(deadline - time.monotonic(), 0.1))
        except TimeoutError as err:
            pvs = _unconnected_pvs(built[name]) if name in built else [str(err)]
            more = f" and {len(pvs) - 3} more" if len(pvs) > 3 else ""
            missing.append(f"{name}: {', '.join(pvs[:3])}{more}")
    if missing:
        addresses = os.environ.get("EPICS_CA_ADDR_LIST", "(unset)")
        raise InstrumentNotConnected(
            f"EPICS instrument at prefix {prefix!r} did not connect within {connect_timeout_s} s "
            f"(EPICS_CA_ADDR_LIST={addresses}); is the IOC running? Not answering:\n  "
            + "\n  ".join(missing))
    return Instrument(config=config, **built)
