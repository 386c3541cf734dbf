"""The code blocks of README.md and docs/*.md, and what tests/test_docs.py needs to run
them as written.

A fenced block whose info string is empty, ``python``, ``sh``, ``shell``, ``bash`` or
``console`` is code; any other (``text``: a diagram, a file layout) is not.  Every code
block carries a marker, an HTML comment in the lines just before its fence::

    <!-- doc-test: NAME -->                a test in tests/test_docs.py runs it (its MAP)
    <!-- doc-test: skip (REASON) -->       it cannot run here, and REASON says why

Commands run through ``bash -c`` exactly as the docs write them, one logical line (``\\``
continuations joined) at a time.  What a test changes to make them small and quick goes
through the environment only:

* ``TALBOT_LAU_DOCTEST_CONFIGS``: a directory with ``instrument.yaml`` and
  ``simulation.yaml`` (complete files, written by :func:`write_configs` from the embedded
  ones with a smaller detector region, a shorter time scale, another write path) that
  replace the embedded configuration, through a ``sitecustomize`` module put first on
  ``PYTHONPATH``: it points ``acquisition.config.default_config_dir`` at that directory when
  ``acquisition.config`` is imported.  Nothing else of the package is touched.
* ``TALBOT_LAU_STATE`` (the RunEngine's metadata), ``QT_QPA_PLATFORM=offscreen``, the
  Channel Access addresses and ports.
* this tree second on ``PYTHONPATH``: the commands run this tree's package even where it is
  installed as a copy (not editable).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from ioc_fixture import _free_port as free_port  # noqa: F401  (one port helper for all tests)

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = ("README.md", "docs/*.md")
CODE_LANGUAGES = {"", "python", "py", "sh", "shell", "bash", "console"}
MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([^\s`]*)")
RESULT = "DOCTEST-RESULT "
"""Prefix of the line a test's epilogue prints its findings on (JSON)."""


@dataclass(frozen=True)
class Block:
    """One fenced block: its file (relative to the repository), the line of its opening
    fence (1-based), language, text and marker (``None`` when it has none)."""

    path: str
    line: int
    language: str
    text: str
    marker: str | None

    @property
    def is_code(self) -> bool:
        return self.language.lower() in CODE_LANGUAGES

    @property
    def skip_reason(self) -> str | None:
        """The reason of a ``skip (REASON)`` marker ('' for a skip without a reason)."""
        if self.marker and self.marker.split("(")[0].strip() == "skip":
            match = re.fullmatch(r"skip\s*\((.*)\)", self.marker, re.DOTALL)
            return match.group(1).strip() if match else ""
        return None

    @property
    def name(self) -> str | None:
        """The marker's test name, None for a skipped or unmarked block."""
        return None if self.marker is None or self.skip_reason is not None else self.marker

    @property
    def where(self) -> str:
        first = next((line for line in self.text.splitlines() if line.strip()), "")
        return f"{self.path}:{self.line} ({first.strip()[:60]!r})"


def doc_files(root: Path = REPO) -> list[Path]:
    files = []
    for pattern in DOC_FILES:
        files += sorted(root.glob(pattern))
    return files


def parse_blocks(text: str, path: str) -> list[Block]:
    """The fenced blocks of one markdown text, each with the doc-test marker found in the
    HTML comments and blank lines just before its fence."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2)
        marker, k = None, i - 1
        while k >= 0 and (not lines[k].strip() or lines[k].strip().startswith("<!--")):
            found = MARKER.search(lines[k])
            if found and marker is None:
                marker = found.group(1)
            k -= 1
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            body.append(lines[j])
            j += 1
        blocks.append(Block(path, i + 1, language, "\n".join(body) + "\n", marker))
        i = j + 1
    return blocks


def blocks(root: Path = REPO) -> list[Block]:
    """Every fenced block of the docs."""
    found = []
    for file in doc_files(root):
        found += parse_blocks(file.read_text(), file.relative_to(root).as_posix())
    return found


def code_blocks(root: Path = REPO) -> list[Block]:
    return [b for b in blocks(root) if b.is_code]


def block(path: str, name: str) -> Block:
    """The code block of ``path`` marked ``<!-- doc-test: name -->``."""
    found = [b for b in code_blocks() if b.path == path and b.name == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} code blocks marked doc-test: {name} in {path}")
    return found[0]


def commands(text: str) -> list[str]:
    """The shell commands of a block: one per logical line (``\\`` continuations joined),
    blank lines and whole-line comments left out; each runs as written with ``bash -c``."""
    result, current = [], ""
    for line in text.splitlines():
        if current:
            current += "\n" + line
        elif line.strip() and not line.lstrip().startswith("#"):
            current = line
        else:
            continue
        if not current.rstrip().endswith("\\"):
            result.append(current)
            current = ""
    if current:
        result.append(current)
    return result


def argv(command: str) -> list[str]:
    """A command's words without its comment and leading ``NAME=value`` assignments."""
    words = shlex.split(command.replace("\\\n", " "), comments=True)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    return words


# --- configuration and environment ------------------------------------------------------

SITECUSTOMIZE = '''\
"""tests/docs_snippets.py: the embedded configuration replaced by $TALBOT_LAU_DOCTEST_CONFIGS."""
import os
import sys

_CONFIGS = os.environ.get("TALBOT_LAU_DOCTEST_CONFIGS")


class _ConfigDir:
    def find_spec(self, name, path=None, target=None):
        if name != "acquisition.config":
            return None
        import importlib.machinery
        from pathlib import Path

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.default_config_dir = lambda: Path(_CONFIGS)

        spec.loader.exec_module = exec_module
        return spec


if _CONFIGS:
    sys.meta_path.insert(0, _ConfigDir())
'''


def embedded_config_dir() -> Path:
    from acquisition.config import default_config_dir

    return default_config_dir()


def write_configs(directory: Path, *, region=None, time_scale=None, write_path=None) -> Path:
    """Complete copies of the embedded YAML files with the given changes, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    embedded = embedded_config_dir()
    instrument = yaml.safe_load((embedded / "instrument.yaml").read_text())
    simulation = yaml.safe_load((embedded / "simulation.yaml").read_text())
    if region is not None:
        simulation["detector"]["region"] = list(region)
    if time_scale is not None:
        simulation["time_scale"] = time_scale
    if write_path is not None:
        instrument["epics"]["write_path"] = str(write_path)
    (directory / "instrument.yaml").write_text(yaml.safe_dump(instrument, sort_keys=False))
    (directory / "simulation.yaml").write_text(yaml.safe_dump(simulation, sort_keys=False))
    for other in embedded.iterdir():  # the files the YAML names (the tissue calibration)
        if other.is_file() and other.suffix not in (".yaml", ".yml"):
            shutil.copy2(other, directory / other.name)
    return directory


def doc_env(tmp: Path, configs: Path | None = None, **extra) -> dict:
    """The environment a documented command runs in: this Python's ``talbot-lau`` first on
    PATH, headless Qt, metadata under ``tmp``, and (``configs``) the replaced configuration."""
    shim = tmp / "doctest-site"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    for key in ("TALBOT_LAU_DOCTEST_CONFIGS", "PYTHONPATH"):
        env.pop(key, None)
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join([str(shim), str(REPO)]),  # this tree's package, however installed
        PYTHONUNBUFFERED="1",
        QT_QPA_PLATFORM="offscreen",
        TALBOT_LAU_STATE=str(tmp / "state"),
        EPICS_CA_AUTO_ADDR_LIST="NO",
        EPICS_CA_ADDR_LIST="127.0.0.1",
        EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
    )
    if configs is not None:
        env["TALBOT_LAU_DOCTEST_CONFIGS"] = str(configs)
    env.update({key: str(value) for key, value in extra.items()})
    return env


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- running ------------------------------------------------------------------------------

def run_shell(command: str, cwd: Path, env: dict, *, stdin: str | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """One documented command, as written, through ``bash -c``; ``stdin``: lines typed into it."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, input=stdin, text=True, check=False,
                          capture_output=True, timeout=timeout)


def start_python(source: str, cwd: Path, env: dict, *, epilogue: str = "",
                 name: str = "doc_snippet.py") -> subprocess.Popen:
    """Documented Python, as written, then the test's ``epilogue`` (which reports with
    :data:`REPORT`'s ``report``), in a fresh interpreter started now (``communicate()``)."""
    script = cwd / name
    script.write_text(source + "\n# --- the test's epilogue ---\n" + epilogue)
    return subprocess.Popen([sys.executable, str(script)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    """Wait for a started process (killed after ``timeout`` s); its result."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        err += f"\n(killed after {timeout} s)"
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_python(source: str, cwd: Path, env: dict, *, epilogue: str = "",
               timeout: float = 120) -> subprocess.CompletedProcess:
    """:func:`start_python`, waited for."""
    return finish(start_python(source, cwd, env, epilogue=epilogue), timeout)


REPORT = f"""
import json as _json
def report(**values):
    print({RESULT!r} + _json.dumps(values, default=str), flush=True)
"""
"""Python an epilogue starts with: ``report(name=value, ...)`` prints one result line."""


def results(output: str) -> dict:
    """Every ``report(...)`` of a run's output, merged."""
    found = {}
    for line in output.splitlines():
        index = line.find(RESULT)
        if index >= 0:
            found.update(json.loads(line[index + len(RESULT):]))
    return found


def ipython_lines(*lines: str) -> str:
    """Lines typed into IPython (its stdin is a pipe: one line is one cell), then EOF."""
    return "\n".join(lines) + "\n"


class Server:
    """A documented long-running command (a server), started as written with ``bash -c``
    in a session of its own; its output is collected; ``stop()`` sends SIGINT, as Ctrl-C."""

    def __init__(self, command: str, cwd: Path, env: dict):
        self.command = command
        self.process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first output line matching ``pattern`` (waited for); AssertionError if the
        server exits or ``timeout`` passes first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{self.command!r} printed no line matching {pattern!r} "
                                         f"(exit {self.process.poll()}):\n{chr(10).join(self.lines)[-3000:]}")
                self._changed.wait(min(left, 0.5))

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT to its process group), then SIGKILL after ``timeout`` s; its status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5)
        if not self._reader.is_alive():  # its pipe read to the end (a grandchild may hold it)
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
