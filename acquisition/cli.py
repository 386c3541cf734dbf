"""The ``talbot-lau`` console command: the one entry point that wires the layers together."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talbot-lau", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="measure and classify a simulated specimen end to end")
    demo.add_argument("--out", default="talbot-lau-demo", help="output directory (default: %(default)s)")
    demo.add_argument("--config", help="instrument YAML (default: the embedded configs/instrument.yaml)")
    demo.add_argument("--simulation", help="simulation YAML (default: the embedded configs/simulation.yaml)")
    session = commands.add_parser("session", help="IPython with the RunEngine, devices, plans and processing")
    session.add_argument("--sim", action="store_true", help="the simulated twins (the default for now)")
    session.add_argument("--out", default="talbot-lau-data", help="frames, records, derived images")
    session.add_argument("--config", help="instrument YAML")
    session.add_argument("--simulation", help="simulation YAML")
    session.add_argument("--monitor", action="store_true", help="open the live pyqtgraph monitor")
    session.add_argument("-c", dest="lines", help="run these IPython lines and exit")
    rebuild = commands.add_parser("reconstruct", help="retrieve and classify stored runs offline")
    rebuild.add_argument("runs", nargs="+", metavar="RUN.h5", help="run records (run_<uid>.h5)")
    rebuild.add_argument("--out", default="reconstructed", help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "reconstruct":
        return _reconstruct(args.runs, args.out)

    try:
        config = load_config(args.config, args.simulation)
    except ConfigError as err:
        print(f"talbot-lau: {err}", file=sys.stderr)
        return 2
    if args.command == "session":
        from .instrument import simulated_instrument
        from .session import start_session

        out = Path(args.out)
        return start_session(simulated_instrument(config, write_path=out / "raw"), out,
                             kind="simulated", command=args.lines, with_monitor=args.monitor)
    if args.command == "demo":
        from .demo import run_demo

        rows = run_demo(args.out, config)
        return 0 if rows else 1
    return 2


def _reconstruct(runs: list[str], out: str) -> int:
    """Reconstruct each run; a broken one is named and the others still run."""
    from .reconstruct import reconstruct_run

    failures = 0
    for run in runs:
        try:
            rows = reconstruct_run(run, out)
        except (OSError, ValueError) as err:
            print(f"talbot-lau: {err}", file=sys.stderr)
            failures += 1
            continue
        summary = ", ".join(f"{r['texture']} {r['ratio']:.2f}" for r in rows) or "no clusters"
        print(f"{run}: {len(rows)} clusters ({summary})")
    print(f"derived images and reports in {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
