"""``kpr backfill``: an EPJ extract (JSON Lines) onto the queue, resumable after a crash.

Exit codes: 0 every line confirmed (or skipped as invalid), 1 a message could not be
confirmed (rerun with the same checkpoint to resume), 2 usage, 3 unreadable file or
checkpoint, 130 stopped by a signal (resume with the same checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from contracts.errors import PublishFailed
from kpr import eventloop
from kpr.config import Settings
from kpr.lifecycle import stop_on_signals
from kpr.logs import configure_logging
from kpr.runtime import build_sealer
from producers.backfill import (
    DEFAULT_MAX_RESEND,
    BackfillReport,
    Checkpoint,
    RejectLog,
    backfill,
    count_lines,
)
from producers.publisher import Publisher

__all__ = ["ProgressBar", "register"]

FAILED_EXIT = 1
USAGE_EXIT = 2
UNREADABLE_EXIT = 3
STOPPED_EXIT = 130


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backfill", help="publish an EPJ extract (JSON Lines), resumable from a checkpoint"
    )
    parser.add_argument("file", type=Path, metavar="FILE.jsonl")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, metavar="FILE",
        help="line offset below which every line is confirmed (created, resumed from)",
    )  # fmt: skip
    parser.add_argument(
        "--rejects", type=Path, metavar="FILE",
        help="where invalid lines are listed (line, reason, field, rule; never content); "
        "default: the checkpoint's name + .rejects.jsonl",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, metavar="N", help="at most N events per second")
    parser.add_argument(
        "--progress", action="store_true", help="progress bar on stderr even when not a TTY"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=256, help="unconfirmed messages at once (256)"
    )
    parser.add_argument(
        "--max-resend", type=int, default=DEFAULT_MAX_RESEND, metavar="N",
        help="after a crash, a resume re-sends fewer than N messages "
        f"(default {DEFAULT_MAX_RESEND}; at least --max-in-flight)",
    )  # fmt: skip
    parser.add_argument(
        "--seal-workers", type=int, default=0,
        help="processes that sign and encrypt (default 0: in the publishing process)",
    )  # fmt: skip
    parser.add_argument("--amqp-url", help="broker URL (env KPR_AMQP_URL)")
    parser.add_argument("--pki-dir", type=Path, help="development PKI directory (env KPR_PKI_DIR)")
    parser.add_argument("--queue-prefix", help="prefix of every exchange and queue name")
    parser.set_defaults(handler=_handle)


class ProgressBar:
    """``[#####-----] 51% 5,100/10,000 lines 812 ev/s`` redrawn in place on ``stream``."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self._total = max(total, 1)
        self._stream = stream
        self._width = width

    def __call__(self, line: int, rate: float) -> None:
        done = min(line / self._total, 1.0)
        filled = int(done * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r[{bar}] {done:4.0%} {line:,}/{self._total:,} lines {rate:,.0f} ev/s")
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


def _handle(args: argparse.Namespace) -> int:
    if args.max_resend < args.max_in_flight:
        print("kpr backfill: --max-resend must be at least --max-in-flight", file=sys.stderr)
        return USAGE_EXIT
    settings = Settings.from_env().with_overrides(
        amqp_url=args.amqp_url, pki_dir=args.pki_dir, queue_prefix=args.queue_prefix
    )
    checkpoint = Checkpoint(args.checkpoint)
    rejects = RejectLog(
        args.rejects or args.checkpoint.with_name(args.checkpoint.name + ".rejects.jsonl")
    )
    try:
        total = count_lines(args.file)
        start = checkpoint.read()
    except (OSError, ValueError) as error:
        print(f"kpr backfill: {error}", file=sys.stderr)
        return UNREADABLE_EXIT
    configure_logging()
    bar = ProgressBar(total, sys.stderr) if args.progress or sys.stderr.isatty() else None
    stopped = False

    async def run() -> BackfillReport:
        nonlocal stopped
        stop = asyncio.Event()

        def on_stop() -> None:
            nonlocal stopped
            stopped = True
            stop.set()

        with stop_on_signals(on_stop):
            async with Publisher(
                settings.amqp_url, topology=settings.topology(), tls=settings.tls_settings()
            ) as publisher:
                return await backfill(
                    args.file,
                    sealer=build_sealer(settings),
                    publisher=publisher,
                    checkpoint=checkpoint,
                    environment=settings.environment,
                    rate=args.rate,
                    max_in_flight=args.max_in_flight,
                    max_resend=args.max_resend,
                    seal_workers=args.seal_workers,
                    progress=bar,
                    stop=stop,
                    rejects=rejects,
                )

    began = time.monotonic()
    try:
        report = eventloop.run(run())
    except PublishFailed as error:
        if bar is not None:
            bar.close()
        print(
            f"kpr backfill: stopped at line {checkpoint.read() + 1}: {error}; "
            "rerun with the same --checkpoint to resume",
            file=sys.stderr,
        )
        return FAILED_EXIT
    finally:
        rejects.close()
    if bar is not None:
        bar(report.end_line, report.published / max(report.seconds, 1e-9))
        bar.close()
    print(
        f"lines {start + 1}-{report.end_line} of {total}: published {report.published}, "
        f"skipped {report.skipped_invalid} (blank or invalid"
        + (f"; {rejects.entries} invalid listed in {rejects.path}" if rejects.entries else "")
        + f"), retried {report.retried}, "
        f"{report.published / max(time.monotonic() - began, 1e-9):,.0f} events/s"
    )
    return STOPPED_EXIT if stopped else 0
