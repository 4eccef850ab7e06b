"""Files the commands read and write, with ``-`` for standard input and output, and
every failure as one :class:`~contracts.errors.InputRefused` that names the path."""

from __future__ import annotations

import sys
from pathlib import Path

from contracts.errors import InputRefused

__all__ = ["STANDARD_STREAM", "output_folder", "read_input", "write_output"]

STANDARD_STREAM = Path("-")


def _why(error: OSError) -> str:
    return error.strerror or type(error).__name__


def read_input(path: Path, what: str) -> bytes:
    """The bytes of ``path`` (``-``: all of standard input)."""
    if path == STANDARD_STREAM:
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise InputRefused(f"the {what} {path} is a folder, not a file") from None
    except OSError as error:
        raise InputRefused(f"cannot read the {what} {path}: {_why(error)}") from None


def write_output(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` (``-``: standard output), replacing a file there."""
    if path == STANDARD_STREAM:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if not path.parent.is_dir():
        raise InputRefused(
            f"cannot write the {what} {path}: no folder {path.parent}",
            "create the folder first, or give another --out",
        )
    try:
        path.write_bytes(data)
    except IsADirectoryError:
        raise InputRefused(f"cannot write the {what} {path}: it is a folder") from None
    except OSError as error:
        raise InputRefused(f"cannot write the {what} {path}: {_why(error)}") from None


def output_folder(path: Path, what: str) -> Path:
    """``path`` as a folder to write into, created if missing (with its parents)."""
    if path.exists() and not path.is_dir():
        raise InputRefused(
            f"cannot write the {what} into {path}: it is a file, not a folder",
            "give --out a folder (it is created if missing)",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputRefused(f"cannot create the {what} folder {path}: {_why(error)}") from None
    probe = path / ".kpr-write-test"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise InputRefused(f"cannot write into the {what} folder {path}: {_why(error)}") from None
    return path
