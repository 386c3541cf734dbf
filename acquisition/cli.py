"""The ``talbot-lau`` console command: the one entry point that wires the layers together."""

from __future__ import annotations

import argparse
import sys
import threading
import traceback
from pathlib import Path

from .errors import TalbotLauError

EXIT_USAGE = 2
"""Bad arguments or a command that could not start (its configuration, files, devices)."""
EXIT_FAILED = 1
"""A command that ran but failed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C before a command's own way of ending (the shell's 128 + SIGINT)."""


class CommandFailed(TalbotLauError):
    """A command that had started its work failed (exit 1): the cause is ``__cause__``."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line naming the command's ``--help``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command.  An exception that reaches here is one line on stderr,
    ``talbot-lau: <ExceptionType>: <first line of its message>``, and exit 2 (1 when the
    command had started its work); ``--debug`` prints the whole traceback instead;
    Ctrl-C exits 130 quietly."""
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CommandFailed as failed:
        _report(failed.__cause__ or failed, debug)
        return EXIT_FAILED
    except Exception as err:  # a TalbotLauError (bad input, a broken file) or any other
        _report(err, debug)
        return EXIT_USAGE


def _report(err: BaseException, debug: bool) -> None:
    """The traceback with ``--debug``, else one line: the exception's type and the first
    line of its message."""
    if debug:
        traceback.print_exception(err)
    else:
        print(f"talbot-lau: {_one_line(err)}", file=sys.stderr, flush=True)


ONE_LINE = 300
"""Longest message printed whole (its lines joined); a longer one is cut to its first line."""


def _one_line(err: BaseException) -> str:
    """``Type: message`` on one line: a short message's lines joined, a long one's first line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = " ".join(lines)
    if len(text) > ONE_LINE and len(lines) > 1:
        text = f"{lines[0]} ... (--debug shows all)"
    return f"{type(err).__name__}: {text}"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the whole traceback of an error (default: one line)")
    parser = _Parser(prog="talbot-lau", description=__doc__, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **kwargs)

    demo = command("demo", help="measure and classify a simulated specimen end to end")
    demo.add_argument("--out", default="talbot-lau-demo", help="output directory (default: %(default)s)")
    demo.add_argument("--config", help="instrument YAML (default: the embedded configs/instrument.yaml)")
    demo.add_argument("--simulation", help="simulation YAML (default: the embedded configs/simulation.yaml)")
    study = command("study", help="accuracy of the mu/eps classification against dose (simulated cohorts)")
    study.add_argument("--doses", default="72,36,18,9,4.5,2.5",
                       help="mean glandular doses in mGy, comma-separated (default: %(default)s)")
    study.add_argument("--tissue", default="breast45,paraffin10",
                       help="specimens, comma-separated, e.g. breast45, paraffin10 (default: %(default)s)")
    study.add_argument("--clusters", type=int, default=40, help="clusters per specimen (default: %(default)s)")
    study.add_argument("--out", default="talbot-lau-study", help="output directory (default: %(default)s)")
    study.add_argument("--seed", type=int, default=1, help="seed of specimens and noise (default: %(default)s)")
    study.add_argument("--workers", type=int, help="processes (default: the cores)")
    study.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tasks on this dask.distributed scheduler (e.g. tcp://10.0.0.5:8786)")
    study.add_argument("--config", help="instrument YAML (default: the embedded configs/instrument.yaml)")
    study.add_argument("--simulation", help="simulation YAML (default: the embedded configs/simulation.yaml)")
    session = command("session", help="IPython with the RunEngine, devices, plans and processing")
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
    ioc = command("ioc", help="serve the Channel Access twins (loopback unless "
                  "EPICS_CAS_INTF_ADDR_LIST says otherwise; port EPICS_CA_SERVER_PORT)")
    ioc.add_argument("--prefix", help="PV prefix (default: epics.prefix of the config)")
    ioc.add_argument("--config", help="instrument YAML")
    ioc.add_argument("--simulation", help="simulation YAML")
    ioc.add_argument("--write-path", help="where the detector twin writes its HDF5 files "
                     "(default: epics.write_path of the config)")
    ioc.add_argument("--time-scale", type=float, help="wall seconds per recorded second")
    ioc.add_argument("--region", type=_region, help="detector read-out region first_row,first_col,rows,cols")
    ioc.add_argument("--write-hosts", nargs="+", metavar="HOST",
                     help="clients that may write PVs: names, addresses or networks such as "
                     "192.168.1.0/24 (default: loopback only); everyone that reaches the IOC reads")
    proxy = command("proxy", help="bluesky's 0MQ proxy on this machine (loopback "
                    "unless --bind says otherwise; documents as msgpack)")
    proxy.add_argument("--in-port", type=int, default=5577)
    proxy.add_argument("--out-port", type=int, default=5578)
    proxy.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                       help="interface to listen on (default: %(default)s, this machine only)")
    monitor = command("monitor", help="the live monitor, fed from the 0MQ proxy")
    monitor.add_argument("--zmq", default="127.0.0.1:5578", help="the proxy's output (default %(default)s)")
    monitor.add_argument("--process", action="store_true",
                         help="run a processor in the monitor (when no `talbot-lau processor` publishes)")
    monitor.add_argument("--out", default="talbot-lau-derived", help="where its processor writes")
    processor = command("processor", help="the on-the-fly processor, fed from the 0MQ proxy")
    processor.add_argument("--zmq", default="127.0.0.1:5578", help="the proxy's output (default %(default)s)")
    processor.add_argument("--publish", metavar="HOST:PORT",
                           help="send the derived runs to the proxy's input (e.g. 127.0.0.1:5577)")
    processor.add_argument("--out", default="talbot-lau-derived", help="derived images and records")
    serve = command("catalogue", help="serve a run catalogue (OUT/catalogue) with tiled")
    serve.add_argument("directory", help="the catalogue directory, e.g. talbot-lau-data/catalogue")
    serve.add_argument("--readable", nargs="*", default=[], metavar="DIR",
                       help="directories of the frame and derived files the runs reference")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--create", action="store_true",
                       help="make a new, empty catalogue if DIRECTORY holds none (default: refuse)")
    serve.add_argument("--api-key-file", metavar="FILE",
                       help="the API key, in a file only you can read (default: $TALBOT_LAU_API_KEY, "
                       "else a fresh key in DIR/api_key, mode 0600)")
    rebuild = command("reconstruct", help="retrieve and classify stored runs offline")
    rebuild.add_argument("runs", nargs="+", metavar="RUN.nxs", help="run records (run_<uid8>.nxs)")
    rebuild.add_argument("--out", default="reconstructed", help="output directory (default: %(default)s)")
    return parser


def _run(args) -> int:
    if args.command == "reconstruct":
        return _reconstruct(args.runs, args.out, debug=getattr(args, "debug", False))
    if args.command == "catalogue":
        return _serve_catalogue(args)
    if args.command == "proxy":
        return _proxy(args)
    if args.command in ("monitor", "processor"):
        return _remote(args)

    from .config import (
        load_config,  # not for --help: it imports the physics' dataclasses
    )

    config = load_config(args.config, args.simulation)
    if args.command == "session":
        return _session(args, config)
    if args.command == "ioc":
        return _serve_ioc(args, config)
    if args.command == "study":
        return _study(args, config)
    if args.command == "demo":
        from .demo import run_demo

        try:
            rows = run_demo(args.out, config)
        except Exception as err:
            raise CommandFailed() from err
        return 0 if rows else EXIT_FAILED
    return EXIT_USAGE


def _study(args, config) -> int:
    """``talbot-lau study``: arguments checked first (a wrong one exits 2, naming it)."""
    from .study import check_arguments, run_study

    check_arguments(args.doses, args.tissue, args.clusters, args.seed, args.workers, config)
    try:
        report = run_study(args.out, doses=args.doses, tissues=args.tissue, clusters=args.clusters,
                           seed=args.seed, workers=args.workers, scheduler=args.scheduler, config=config)
    except Exception as err:
        raise CommandFailed() from err
    print(Path(args.out, "report.md").read_text().split("\n## ")[0])
    print(f"report.json, report.md and plots in {args.out} ({report['wall_seconds']:.0f} s)")
    return 0


def _proxy(args) -> int:
    """``talbot-lau proxy``: bound first, then one line with both addresses, until Ctrl-C."""
    from .processing.remote import make_proxy

    proxy = make_proxy(args.in_port, args.out_port, host=args.bind)

    def address(port) -> str:  # bluesky 1.15's Proxy holds "tcp://host:port", older ones the port
        return str(port) if "://" in str(port) else f"tcp://{args.bind}:{port}"

    print(f"0MQ proxy: publishers to {address(proxy.in_port)}, subscribers from "
          f"{address(proxy.out_port)}; Ctrl-C ends", flush=True)
    try:
        proxy.start()
    except KeyboardInterrupt:
        pass
    return 0


def _session(args, config) -> int:
    """``talbot-lau session``: IPython on the simulated or the EPICS instrument."""
    from .instrument import epics_instrument, simulated_instrument
    from .session import start_session

    out = Path(args.out)
    if args.sim:
        frames = args.write_path or out / "raw"
        instrument = simulated_instrument(config, write_path=frames)
        kind = "simulated"
    else:
        frames = args.write_path or config.instrument.epics.write_path
        instrument = epics_instrument(config, prefix=args.ioc, write_path=frames)
        kind = f"EPICS ({args.ioc or config.instrument.epics.prefix})"
    return start_session(instrument, out, kind=kind, command=args.lines, with_monitor=args.monitor,
                         publish=args.publish, frames_dir=frames)


def _serve_catalogue(args) -> int:
    """``talbot-lau catalogue DIR``: the catalogue behind a tiled server.  A directory that
    holds no catalogue is refused (a mistyped path must not become a new, empty catalogue)
    unless ``--create``.  The API key goes to the server through its environment, never a
    command line, and is never printed: the server's own output is passed on (to stderr)
    with the key masked."""
    import subprocess

    from .storage.catalogue import (
        API_KEY_ENV,
        CATALOG_DB,
        open_catalogue,
        server_api_key,
        server_command,
        server_environment,
    )

    if not args.create and not (Path(args.directory) / CATALOG_DB).is_file():
        raise FileNotFoundError(f"{args.directory} is not a catalogue (no {CATALOG_DB}); "
                                "give --create to make a new, empty one there")
    open_catalogue(args.directory, readable=args.readable).context.close()  # created if new
    key, source, key_file = server_api_key(args.directory, args.api_key_file)
    url = f"http://{args.host}:{args.port}"
    connect = (f"connect_catalogue({url!r}, api_key_file={str(key_file)!r})" if key_file
               else f"connect_catalogue({url!r})  # reads ${API_KEY_ENV}")
    print(f"serving {args.directory} at {url}; API key: {source}; from Python:\n"
          f"  from acquisition.storage.catalogue import connect_catalogue, find_runs\n"
          f"  catalogue = {connect}", flush=True)
    server = subprocess.Popen(server_command(args.directory, host=args.host, port=args.port),  # tiled.yml
                              env=server_environment(key), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        for line in server.stdout:  # tiled prints ?api_key=... at startup
            sys.stderr.write(line.replace(key, "<api key>"))
        return server.wait()
    except KeyboardInterrupt:  # the server had the same SIGINT
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.terminate()
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
    print(f"serving {prefix}g2, {prefix}stage:x/y, {prefix}tube:, {prefix}det:cam1:/HDF1:/Stats1:/image1: on "
          f"{os.environ.get('EPICS_CAS_INTF_ADDR_LIST', '127.0.0.1')} port "
          f"{os.environ.get('EPICS_CA_SERVER_PORT', '5064')}; writes from "
          f"{' '.join(args.write_hosts) if args.write_hosts else 'loopback'} only; files under "
          f"{args.write_path or config.instrument.epics.write_path} only; Ctrl-C ends", flush=True)
    try:
        serve_ioc_twin(config, prefix=prefix, write_path=args.write_path, write_hosts=args.write_hosts,
                       **overrides)
    except KeyboardInterrupt:  # how it ends
        pass
    return 0


def _remote(args) -> int:
    """The monitor or the processor in a process of its own, fed over 0MQ."""
    from .processing.live import darkfield_router
    from .processing.remote import by_origin, parse_address, start_dispatcher
    from .storage.run_recorder import run_recorder

    address = parse_address(args.zmq)
    if args.command == "processor":
        from .processing.derived_collector import DerivedCollector

        publish = DerivedCollector()
        if args.publish:
            from .processing.remote import publisher

            publish = publisher(parse_address(args.publish))  # used by the worker thread only
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
    # Ctrl-C ends it too: Qt's loop holds Python's signal handlers until it returns to the
    # interpreter, so a timer hands it control now and then
    import signal

    from pyqtgraph.Qt import QtCore

    signal.signal(signal.SIGINT, lambda *_: app.quit())
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    print(f"monitoring documents from {address[0]}:{address[1]}"
          f"{'; its processor writes into ' + args.out if args.process else ''}; "
          "closing the window or Ctrl-C ends", flush=True)
    try:
        return app.exec()
    except Exception as err:
        raise CommandFailed() from err


def _reconstruct(runs: list[str], out: str, *, debug: bool = False) -> int:
    """Reconstruct each run; a broken one is named (one line, or its traceback with
    ``debug``) and the others still run.  The closing line says where the results are
    only when every run succeeded."""
    from .processing.offline import reconstruct_run

    failures = 0
    for run in runs:
        try:
            rows = reconstruct_run(run, out)
        except (TalbotLauError, OSError) as err:  # OSError: HDF5's own, on a file it cannot read
            if debug or run in str(err):
                _report(err, debug)
            else:  # e.g. a frame file: say which run needed it
                print(f"talbot-lau: {_one_line(err)} (reconstructing {run})", file=sys.stderr, flush=True)
            failures += 1
            continue
        summary = ", ".join(f"{r['texture']} {r['ratio']:.2f}" for r in rows) or "no clusters"
        print(f"{run}: {len(rows)} clusters ({summary})")
    if failures:
        done = len(runs) - failures
        if done:
            print(f"talbot-lau: {failures} of {len(runs)} runs failed; the derived files of the "
                  f"other {done} are in {out}", file=sys.stderr, flush=True)
        return 1
    print(f"derived images and reports in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
