"""A recorded projection of one pleomorphic cluster, live-processed: the run that the
offline-reconstruction tests read back."""

from pathlib import Path

from acquisition.processing.derived_collector import DerivedCollector
from acquisition.instrument import simulated_instrument
from acquisition.plans import darkfield_projection
from acquisition.processing.live import darkfield_router
from acquisition.storage.run_recorder import run_recorder
from simulators.physics import Phantom, TissueSlab
from specimens import class_cluster
from support import run_engine


def record_pleomorphic_run(folder: Path, config) -> tuple[Path, list[dict]]:
    """Run a projection of a pleomorphic cluster with ``config`` into ``folder`` (raw frames
    in ``raw/``, the live processor's files in ``live/``); returns the run record's path and
    the clusters the live processor published."""
    phantom = Phantom(TissueSlab(), (class_cluster("pleomorphic", (0.0, 0.0), seed=5),))
    instrument = simulated_instrument(config, write_path=folder / "raw", phantom=phantom)
    collector = DerivedCollector()
    with run_engine() as engine:
        engine.subscribe(run_recorder(folder))
        processor = darkfield_router(out_dir=folder / "live", publish=collector)
        engine.subscribe(processor)
        (uid,) = engine(darkfield_projection(instrument, dark_frames=2))
        processor.wait()
        processor.close()
        return folder / f"run_{uid[:8]}.nxs", collector.clusters
