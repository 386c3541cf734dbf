"""The catalogue behind a tiled server: its configuration (``tiled.yml``), command line and
API key (never on a command line), and a client connecting to it."""

from __future__ import annotations

import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

API_KEY_ENV = "TALBOT_LAU_API_KEY"
"""The environment variable that gives the catalogue server's API key."""
API_KEY_FILE = "api_key"
"""The file (mode 0600) in the catalogue directory that holds a generated API key."""
TILED_KEY_ENV = "TILED_SINGLE_USER_API_KEY"
"""Where ``tiled serve`` reads its single-user API key from (tiled.server.settings)."""
SERVER_CONFIG = "tiled.yml"
"""The tiled server configuration :func:`open_catalogue` writes into the catalogue directory."""


def write_server_config(directory: str | Path, readable: Iterable[str | Path] = ()) -> Path:
    """Write ``DIR/tiled.yml``: a tiled server configuration serving :func:`served_catalogue`
    of ``directory`` and ``readable`` (absolute paths, rewritten at every open, so a moved
    catalogue serves its new place once opened there)."""
    import yaml

    directory = Path(directory).resolve()
    # the package's path, which re-exports served_catalogue (adapters.py defines it)
    config = {"trees": [{"path": "/", "tree": f"{__package__}:served_catalogue",
                         "args": {"directory": str(directory),
                                  "readable": [str(Path(p).resolve()) for p in readable]}}]}
    path = directory / SERVER_CONFIG
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tiled-", suffix=".yml")
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write("# written by acquisition.storage.catalogue.open_catalogue; serve with "
                    "`tiled serve config` (docs/catalogue.md)\n")
            yaml.safe_dump(config, f, sort_keys=False)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def server_command(directory: str | Path, *, host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """The command line of a tiled server on the catalogue in ``directory``, as configured by
    the last :func:`open_catalogue` there (``directory/tiled.yml``: the readable directories
    and our adapters).  It holds no API key: run it with ``env=server_environment(key)``."""
    config = Path(directory).resolve() / SERVER_CONFIG
    return [sys.executable, "-m", "tiled", "serve", "config", str(config),
            "--host", host, "--port", str(port)]


def server_environment(api_key: str, base: dict | None = None) -> dict[str, str]:
    """The environment of the server process: ``base`` (this process's) plus the key."""
    base = os.environ if base is None else base
    return {**base, TILED_KEY_ENV: _checked_key(api_key, "the API key")}


def _checked_key(key: str, source: str) -> str:
    key = key.strip()
    if not key or not key.isalnum():
        raise ValueError(f"{source}: an API key is letters and digits only (tiled's rule), "
                         f"e.g. from `openssl rand -hex 32`")
    return key


def read_api_key(path: str | Path) -> str:
    """The key in ``path``, a regular file of this user that nobody else may read."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise ValueError(f"API key file {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"API key file {path}: not a regular file")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ValueError(f"API key file {path}: must belong to you and be readable by you only "
                         f"(chmod 600 {path})")
    return _checked_key(path.read_text(), f"API key file {path}")


def server_api_key(directory: str | Path,
                   key_file: str | Path | None = None) -> tuple[str, str, Path | None]:
    """The catalogue server's API key, from ``key_file``, else ``TALBOT_LAU_API_KEY``, else
    a fresh one written to ``directory/API_KEY_FILE`` (mode 0600, replacing an old one).

    Returns ``(key, where it came from, the file that holds it or None)``."""
    if key_file is not None:
        return read_api_key(key_file), str(key_file), Path(key_file).resolve()
    if os.environ.get(API_KEY_ENV):
        return _checked_key(os.environ[API_KEY_ENV], API_KEY_ENV), f"${API_KEY_ENV}", None
    key = secrets.token_hex(32)
    path = Path(directory).resolve() / API_KEY_FILE
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".api_key-")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write(key + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return key, f"new, in {path}", path


def connect_catalogue(uri: str, api_key: str | None = None, *, api_key_file: str | Path | None = None):
    """A tiled client on a catalogue behind a tiled server, e.g. ``http://127.0.0.1:8000``;
    the key is ``api_key``, else read from ``api_key_file``, else ``$TALBOT_LAU_API_KEY``.
    Close with ``client.context.close()``."""
    from tiled.client import from_context
    from tiled.client.context import Context

    if api_key is None and api_key_file is not None:
        api_key = read_api_key(api_key_file)
    if api_key is None and os.environ.get(API_KEY_ENV):
        api_key = _checked_key(os.environ[API_KEY_ENV], API_KEY_ENV)
    # tiled's from_uri, except that a refused connection (401: a wrong key) closes its context
    context, node_path_parts = Context.from_any_uri(uri, api_key=api_key)
    try:
        return from_context(context, node_path_parts=node_path_parts)
    except BaseException:
        context.close()
        raise
