"""The ``talbot-lau`` command: a fast ``--help``, one-line errors (``--debug`` for the
traceback), quiet starts, servers that say where they listen, and a catalogue server that
does not make an empty catalogue of a mistyped directory (issue 13, part 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ioc_fixture import _free_port as free_port  # TCP and UDP free on 127.0.0.1

from acquisition import cli

SCRIPT = Path(sys.executable).with_name("talbot-lau")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "acquisition.cli"]
HEAVY = ("spekpy", "xraydb", "simulators.physics")


def talbot_lau(*args, cwd=None, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def stderr_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


# --- start-up time --------------------------------------------------------------------------

def test_help_is_fast():
    best = float("inf")
    for _ in range(3):
        start = time.monotonic()
        done = talbot_lau("--help")
        best = min(best, time.monotonic() - start)
        assert done.returncode == 0 and "session" in done.stdout
    assert best < 1.0, f"talbot-lau --help took {best:.2f} s at best"


def imported_modules(statement: str) -> list[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2][1:]  # [0]: the header


@pytest.mark.parametrize("module", ["acquisition.cli", "acquisition.config", "acquisition.dose"])
def test_no_simulator_stack_on_import(module):
    """The physics' spectrum and materials (spekpy, xraydb: seconds) load only when a
    simulated instrument, a configuration or a dose is computed; the CLI not even the
    physics' dataclasses."""
    modules = imported_modules(f"import {module}")
    assert module in modules
    heavy = HEAVY if module == "acquisition.cli" else HEAVY[:2]
    assert not [m for m in modules if m.split(".")[0] in heavy or m.startswith(heavy)]


# --- errors: one line, or the traceback with --debug ----------------------------------------

@pytest.mark.parametrize("args, code", [
    (["session", "--sim", "--config", "/nonexistent.yaml"], 2),
    (["reconstruct", "nothing.nxs", "--out", "out"], 1),
])
@pytest.mark.slow
def test_an_error_is_one_line_and_debug_gives_the_traceback(tmp_path, args, code):
    done = talbot_lau(*args, cwd=tmp_path)
    lines = stderr_lines(done)
    assert done.returncode == code and len(lines) == 1, done.stderr
    assert lines[0].startswith("talbot-lau: ") and "Traceback" not in done.stderr
    assert "nonexistent.yaml" in lines[0] or "nothing.nxs" in lines[0]
    assert "derived images" not in done.stdout  # a failed reconstruction claims no results
    for debug in (["--debug", *args], [args[0], "--debug", *args[1:]]):  # before or after the command
        done = talbot_lau(*debug, cwd=tmp_path)
        assert done.returncode == code and "Traceback (most recent call last)" in done.stderr


def test_main_reports_exceptions_by_kind(monkeypatch, capsys):
    def fail(error):
        def run(args):
            raise error
        return run

    monkeypatch.setattr(cli, "_run", fail(ValueError("short:\n  joined")))
    assert cli.main(["proxy"]) == 2
    assert capsys.readouterr().err == "talbot-lau: ValueError: short: joined\n"
    monkeypatch.setattr(cli, "_run", fail(ValueError("first line\n" + "x" * 400)))
    assert cli.main(["proxy"]) == 2
    assert capsys.readouterr().err == "talbot-lau: ValueError: first line ... (--debug shows all)\n"
    failed = cli.CommandFailed()
    failed.__cause__ = OSError("disk full")
    monkeypatch.setattr(cli, "_run", fail(failed))
    assert cli.main(["proxy"]) == 1  # a command that ran but failed
    assert capsys.readouterr().err == "talbot-lau: OSError: disk full\n"
    monkeypatch.setattr(cli, "_run", fail(KeyboardInterrupt()))
    assert cli.main(["proxy"]) == 130
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "_run", fail(RuntimeError("boom")))
    assert cli.main(["--debug", "proxy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "RuntimeError: boom" in err


def test_a_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["session", "--sim", "--ioc", "TL:"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith("talbot-lau session: error: argument --ioc: not allowed with argument --sim")


# --- the catalogue server -------------------------------------------------------------------

def test_catalogue_refuses_a_directory_that_is_not_one(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    done = talbot_lau("catalogue", directory, "--port", free_port())
    lines = stderr_lines(done)
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("talbot-lau: ") and "not a catalogue" in lines[0] and "--create" in lines[0]
    assert list(directory.iterdir()) == []  # nothing made there


# --- servers say where they listen ----------------------------------------------------------

def first_line(args, timeout_s: float = 30.0) -> str:
    """The first line a server prints on stdout (it must flush it); then it is killed."""
    with subprocess.Popen([*COMMAND, *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as process:  # its pipe closed at the end
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
        try:
            reader.start()
            reader.join(timeout_s)
            assert lines and lines[0].endswith("\n"), f"no line printed within {timeout_s} s"
            assert process.poll() is None, "the server ended"
            return lines[0]
        finally:
            process.kill()
            process.wait()
            reader.join(timeout_s)  # the pipe's end (EOF) ends a read still waiting


@pytest.mark.slow
def test_proxy_and_processor_print_their_addresses(tmp_path):
    in_port, out_port = free_port(), free_port()
    line = first_line(["proxy", "--in-port", in_port, "--out-port", out_port])
    assert f"tcp://127.0.0.1:{in_port}" in line and f"tcp://127.0.0.1:{out_port}" in line
    line = first_line(["processor", "--zmq", f"127.0.0.1:{out_port}", "--out", tmp_path / "derived"])
    assert f"127.0.0.1:{out_port}" in line


# --- a quiet session ------------------------------------------------------------------------

@pytest.mark.slow
def test_session_starts_quietly(tmp_path):
    env = dict(os.environ, TALBOT_LAU_STATE=str(tmp_path / "state"))
    done = talbot_lau("session", "--sim", "--out", tmp_path / "data", "-c", "print('READY', 1)",
                      env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "READY 1" in done.stdout
    noisy = [line for line in done.stderr.splitlines()
             if "DeprecationWarning" in line or "Tiled version" in line]
    assert not noisy, noisy
