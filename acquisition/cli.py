"""The ``talbot-lau`` console command: the one entry point that wires the layers together."""

from __future__ import annotations

import argparse
import sys
import threading
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
    which = session.add_mutually_exclusive_group()
    which.add_argument("--sim", action="store_true", help="the in-process simulated twins")
    which.add_argument("--ioc", metavar="PREFIX",
                       help="the EPICS instrument at this PV prefix (a lab's IOCs or `talbot-lau ioc`)")
    session.add_argument("--out", default="talbot-lau-data", help="records and derived images")
    session.add_argument("--config", help="instrument YAML; without --sim or --ioc, the EPICS "
                         "instrument at its epics.prefix")
    session.add_argument("--write-path", help="where the detector writes frames, as its IOC sees it "
                         "(default: OUT/raw with --sim, else the config's epics.write_path)")
    session.add_argument("--simulation", help="simulation YAML")
    session.add_argument("--monitor", action="store_true", help="open the live pyqtgraph monitor")
    session.add_argument("--publish", metavar="HOST:PORT",
                         help="also publish every document to a 0MQ proxy (e.g. 127.0.0.1:5577)")
    session.add_argument("-c", dest="lines", help="run these IPython lines and exit")
    ioc = commands.add_parser("ioc", help="serve the Channel Access twins (loopback unless "
                              "EPICS_CAS_INTF_ADDR_LIST says otherwise; port EPICS_CA_SERVER_PORT)")
    ioc.add_argument("--prefix", help="PV prefix (default: epics.prefix of the config)")
    ioc.add_argument("--config", help="instrument YAML")
    ioc.add_argument("--simulation", help="simulation YAML")
    ioc.add_argument("--write-path", help="where the detector twin writes its HDF5 files "
                     "(default: epics.write_path of the config)")
    ioc.add_argument("--time-scale", type=float, help="wall seconds per recorded second")
    ioc.add_argument("--region", type=_region, help="detector read-out region first_row,first_col,rows,cols")
    proxy = commands.add_parser("proxy", help="bluesky's 0MQ proxy on this machine")
    proxy.add_argument("--in-port", type=int, default=5577)
    proxy.add_argument("--out-port", type=int, default=5578)
    monitor = commands.add_parser("monitor", help="the live monitor, fed from the 0MQ proxy")
    monitor.add_argument("--zmq", default="127.0.0.1:5578", help="the proxy's output (default %(default)s)")
    monitor.add_argument("--process", action="store_true",
                         help="run a processor in the monitor (when no `talbot-lau processor` publishes)")
    monitor.add_argument("--out", default="talbot-lau-derived", help="where its processor writes")
    processor = commands.add_parser("processor", help="the on-the-fly processor, fed from the 0MQ proxy")
    processor.add_argument("--zmq", default="127.0.0.1:5578", help="the proxy's output (default %(default)s)")
    processor.add_argument("--publish", metavar="HOST:PORT",
                           help="send the derived runs to the proxy's input (e.g. 127.0.0.1:5577)")
    processor.add_argument("--out", default="talbot-lau-derived", help="derived images and records")
    serve = commands.add_parser("catalogue", help="serve a run catalogue (OUT/catalogue) with tiled")
    serve.add_argument("directory", help="the catalogue directory, e.g. talbot-lau-data/catalogue")
    serve.add_argument("--readable", nargs="*", default=[], metavar="DIR",
                       help="directories of the frame and derived files the runs reference")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    rebuild = commands.add_parser("reconstruct", help="retrieve and classify stored runs offline")
    rebuild.add_argument("runs", nargs="+", metavar="RUN.nxs", help="run records (run_<uid8>.nxs)")
    rebuild.add_argument("--out", default="reconstructed", help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "reconstruct":
        return _reconstruct(args.runs, args.out)
    if args.command == "catalogue":
        return _serve_catalogue(args)
    if args.command == "proxy":
        from .remote import run_proxy

        run_proxy(args.in_port, args.out_port)
        return 0
    if args.command in ("monitor", "processor"):
        return _remote(args)

    try:
        config = load_config(args.config, args.simulation)
    except ConfigError as err:
        print(f"talbot-lau: {err}", file=sys.stderr)
        return 2
    if args.command == "session":
        return _session(args, config)
    if args.command == "ioc":
        return _serve_ioc(args, config)
    if args.command == "demo":
        from .demo import run_demo

        rows = run_demo(args.out, config)
        return 0 if rows else 1
    return 2


def _session(args, config) -> int:
    """``talbot-lau session``: IPython on the simulated or the EPICS instrument."""
    from .instrument import InstrumentNotConnected, epics_instrument, simulated_instrument
    from .session import start_session

    out = Path(args.out)
    if args.sim:
        frames = args.write_path or out / "raw"
        instrument = simulated_instrument(config, write_path=frames)
        kind = "simulated"
    else:
        frames = args.write_path or config.instrument.epics.write_path
        try:
            instrument = epics_instrument(config, prefix=args.ioc, write_path=frames)
        except (InstrumentNotConnected, ValueError) as err:
            print(f"talbot-lau: {err}", file=sys.stderr)
            return 2
        kind = f"EPICS ({args.ioc or config.instrument.epics.prefix})"
    return start_session(instrument, out, kind=kind, command=args.lines, with_monitor=args.monitor,
                         publish=args.publish, frames_dir=frames)


def _serve_catalogue(args) -> int:
    """``talbot-lau catalogue DIR``: the catalogue behind a tiled server, with a fresh API key."""
    import secrets
    import subprocess

    from .catalogue import open_catalogue, server_command

    open_catalogue(args.directory, readable=args.readable).context.close()  # created if new
    api_key = secrets.token_hex(16)
    print(f"serving {args.directory} at http://{args.host}:{args.port}; from Python:\n"
          f"  from acquisition.catalogue import connect_catalogue, find_runs\n"
          f"  catalogue = connect_catalogue('http://{args.host}:{args.port}', api_key='{api_key}')",
          flush=True)
    try:
        return subprocess.call(server_command(args.directory, readable=args.readable, api_key=api_key,
                                              host=args.host, port=args.port))
    except KeyboardInterrupt:
        return 0


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--region must be first_row,first_col,rows,cols, got {text!r}")
    return values


def _serve_ioc(args, config) -> int:
    """``talbot-lau ioc``: the twins over Channel Access until Ctrl-C."""
    import dataclasses
    import os

    from .instrument import serve_ioc_twin

    if args.region is not None:
        detector = dataclasses.replace(config.setup.detector, region=args.region)
        config = dataclasses.replace(config, setup=dataclasses.replace(config.setup, detector=detector))
    overrides = {} if args.time_scale is None else {"time_scale": args.time_scale}
    prefix = args.prefix or config.instrument.epics.prefix
    print(f"serving {prefix}g2, {prefix}stage:x/y, {prefix}tube:, {prefix}det:cam1:/HDF1: on "
          f"{os.environ.get('EPICS_CAS_INTF_ADDR_LIST', '127.0.0.1')} port "
          f"{os.environ.get('EPICS_CA_SERVER_PORT', '5064')}; Ctrl-C ends", flush=True)
    try:
        serve_ioc_twin(config, prefix=prefix, write_path=args.write_path, **overrides)
    except ValueError as err:
        print(f"talbot-lau: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _remote(args) -> int:
    """The monitor or the processor in a process of its own, fed over 0MQ."""
    from .processing import darkfield_router
    from .remote import by_origin, parse_address, start_dispatcher
    from .run_record import run_recorder

    address = parse_address(args.zmq)
    if args.command == "processor":
        from .demo import DerivedCollector

        publish = DerivedCollector()
        if args.publish:
            from bluesky.callbacks.zmq import Publisher

            publish = Publisher(parse_address(args.publish))  # used by the worker thread only
        start_dispatcher(address, [run_recorder(args.out), darkfield_router(args.out, publish=publish)])
        print(f"processing documents from {address[0]}:{address[1]} into {args.out}"
              f"{'; derived runs to ' + args.publish if args.publish else ''}; Ctrl-C ends", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            return 0
    import pyqtgraph as pg

    from .monitor import MonitorWindow

    app = pg.mkQApp("talbot-lau monitor")
    window = MonitorWindow()
    window.show()
    callbacks = [by_origin(window.raw_callback, window.derived_callback)]
    if args.process:
        callbacks.append(darkfield_router(args.out, publish=window.derived_callback))
    start_dispatcher(address, callbacks)
    return app.exec()


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
