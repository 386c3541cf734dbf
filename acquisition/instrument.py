"""Build the instrument the plans run on: the simulated twins (or, later, the EPICS devices).

Plans never ask which kind they got: both expose ``tube``, ``g2``, ``stage`` and ``detector``
with the same component names (DESIGN.md rule 2).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config


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

    @property
    def devices(self) -> tuple:
        return (self.tube, self.g2, self.stage, self.detector)


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
        time_scale=sim.time_scale,
        seed=sim.seed,
        g2_limits_um=inst.g2.limits_um,
        stage_limits_mm=(inst.stage.x_limits_mm, inst.stage.y_limits_mm),
        g2_settle_s=inst.g2.settle_s,
        kv_max=inst.tube.kv_max,
        ma_max=inst.tube.ma_max,
    )
    for signal, value in ((twins.tube.kv, inst.tube.kv), (twins.tube.ma, inst.tube.ma)):
        signal.set(value).wait(timeout=5)
    return Instrument(
        tube=twins.tube, g2=twins.g2, stage=twins.stage, detector=twins.detector,
        config=config, world=twins.world,
    )
