"""The ``talbot-lau`` console command: the one entry point that wires the layers together."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talbot-lau", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="measure and classify a simulated specimen end to end")
    demo.add_argument("--out", default="talbot-lau-demo", help="output directory (default: %(default)s)")
    demo.add_argument("--config", help="instrument YAML (default: the embedded configs/instrument.yaml)")
    demo.add_argument("--simulation", help="simulation YAML (default: the embedded configs/simulation.yaml)")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, args.simulation)
    except ConfigError as err:
        print(f"talbot-lau: {err}", file=sys.stderr)
        return 2
    if args.command == "demo":
        from .demo import run_demo

        rows = run_demo(args.out, config)
        return 0 if rows else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
