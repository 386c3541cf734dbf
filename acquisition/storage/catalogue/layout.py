"""The files of a catalogue directory: tiled's run metadata, event tables and arrays."""

from __future__ import annotations

from pathlib import Path

CATALOG_DB = "catalog.db"
"""Run metadata (tiled's SQL catalogue) in the catalogue directory."""
TABLES_DB = "tables.sqlite"
"""Event tables (tiled's tabular SQL storage) in the catalogue directory."""
DATA_DIR = "data"
"""Arrays tiled writes itself, in the catalogue directory."""


def _storage(directory: Path) -> tuple[str, list[str]]:
    """The catalogue database URI and the writable storage of a catalogue directory."""
    return (f"sqlite:///{directory / CATALOG_DB}",
            [str(directory / DATA_DIR), f"sqlite:///{directory / TABLES_DB}"])
