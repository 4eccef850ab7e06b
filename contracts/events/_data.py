"""Reading the package data under ``contracts/data/`` (code lists, municipality list)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATA_DIRECTORY", "read_package_data"]

# A plain path rather than importlib.resources: `contracts` may be a namespace package,
# whose resource reader refuses some layouts, and the package is never installed zipped.
DATA_DIRECTORY = Path(__file__).resolve().parent.parent / "data"


def read_package_data(name: str) -> str:
    """Return the text of ``contracts/data/<name>`` (UTF-8). ``OSError`` if it is missing."""
    return (DATA_DIRECTORY / name).read_text(encoding="utf-8")
