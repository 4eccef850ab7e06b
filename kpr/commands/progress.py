"""The progress bar of the commands that send many messages (produce, backfill), and the
rule for when to draw one: on a terminal, or when asked; never under ``--json``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "show_progress"]


class ProgressBar:
    """``[#####-----] 51% 5,100/10,000 lines 812 ev/s`` redrawn in place on ``stream``.

    Under ``NO_COLOR`` or on a stream that is not a terminal it prints a plain line at
    most every 10 % instead of redrawing (a log file gets lines, not carriage returns).
    """

    def __init__(self, total: int, stream: TextIO, width: int = 30, unit: str = "lines") -> None:
        self._total = max(total, 1)
        self._stream = stream
        self._width = width
        self._unit = unit
        self._started = time.monotonic()
        self._redraw = stream.isatty() and not os.environ.get("NO_COLOR")
        self._last_decile = -1

    def __call__(self, done_count: int, rate: float | None = None) -> None:
        if rate is None:
            rate = done_count / max(time.monotonic() - self._started, 1e-9)
        done = min(done_count / self._total, 1.0)
        text = f"{done:4.0%} {done_count:,}/{self._total:,} {self._unit} {rate:,.0f} ev/s"
        if self._redraw:
            filled = int(done * self._width)
            bar = "#" * filled + "-" * (self._width - filled)
            self._stream.write(f"\r[{bar}] {text}")
        else:
            decile = int(done * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self._stream.write(text.strip() + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._redraw:
            self._stream.write("\n")
            self._stream.flush()


def show_progress(args: argparse.Namespace) -> bool:
    """A bar on a terminal, or with ``--progress``; never with ``--json``."""
    if getattr(args, "json", False):
        return False
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()
