"""``kpr backfill``: an EPJ extract (JSON Lines) onto the queue, resumable after a crash.

Exit codes (kpr.exits): 0 every line confirmed (or skipped as invalid), 1 a message could
not be confirmed (rerun with the same checkpoint to resume), 2 usage, 3 unreadable file
or checkpoint, 130 / 143 stopped by SIGINT / SIGTERM (resume with the same checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from contracts.errors import InputRefused, PublishFailed
from kpr import eventloop
from kpr.commands.progress import ProgressBar, show_progress
from kpr.config import Settings
from kpr.lifecycle import interrupted_while_opening, stop_on_signals
from kpr.logs import configure_logging
from kpr.options import non_negative_int, positive_float, positive_int
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

__all__ = ["register"]

FAILED_EXIT = 1
USAGE_EXIT = 2


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
    parser.add_argument(
        "--rate", type=positive_float, metavar="N", help="at most N events per second"
    )
    parser.add_argument(
        "--progress", action="store_true", help="progress bar on stderr even when not a TTY"
    )
    parser.add_argument(
        "--max-in-flight", type=positive_int, default=256, help="unconfirmed messages at once (256)"
    )
    parser.add_argument(
        "--max-resend", type=non_negative_int, default=DEFAULT_MAX_RESEND, metavar="N",
        help="after a crash, a resume re-sends fewer than N messages "
        f"(default {DEFAULT_MAX_RESEND}; at least --max-in-flight)",
    )  # fmt: skip
    parser.add_argument(
        "--seal-workers", type=non_negative_int, default=0,
        help="processes that sign and encrypt (default 0: in the publishing process)",
    )  # fmt: skip
    parser.add_argument("--amqp-url", help="broker URL (env KPR_AMQP_URL)")
    parser.add_argument("--pki-dir", type=Path, help="development PKI directory (env KPR_PKI_DIR)")
    parser.add_argument("--queue-prefix", help="prefix of every exchange and queue name")
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.max_resend < args.max_in_flight:
        print("kpr backfill: error: --max-resend must be at least --max-in-flight", file=sys.stderr)
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
    except OSError as error:
        raise InputRefused(
            f"cannot read the extract {args.file}: {error.strerror or error}",
            "give a JSON Lines file of events",
        ) from None
    try:
        start = checkpoint.read()
    except OSError as error:
        raise InputRefused(
            f"cannot read the checkpoint {args.checkpoint}: {error.strerror or error}"
        ) from None
    except ValueError as error:
        raise InputRefused(str(error)) from None
    configure_logging()
    bar = ProgressBar(total, sys.stderr) if show_progress(args) else None

    async def run() -> BackfillReport:
        stop = asyncio.Event()
        # A signal stops the reading, the confirms in flight are awaited, the checkpoint
        # is written; the command line then exits 130 / 143.
        with stop_on_signals(stop.set):
            async with (
                interrupted_while_opening() as opened,
                Publisher(
                    settings.amqp_url,
                    topology=settings.topology(),
                    tls=settings.tls_settings(),
                    connect_timeout_s=settings.connect_timeout_s,
                ) as publisher,
            ):
                opened()
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
            f"kpr backfill: error: stopped at line {checkpoint.read() + 1}: {error} "
            "(rerun with the same --checkpoint to resume)",
            file=sys.stderr,
        )
        return FAILED_EXIT
    finally:
        rejects.close()
    if bar is not None:
        bar(report.end_line, report.published / max(report.seconds, 1e-9))
        bar.close()
    rate = report.published / max(time.monotonic() - began, 1e-9)
    if args.json:
        summary = {
            "first_line": start + 1,
            "end_line": report.end_line,
            "lines": total,
            "published": report.published,
            "skipped_invalid": report.skipped_invalid,
            "rejects_listed": rejects.entries,
            "retried": report.retried,
            "events_per_s": round(rate, 1),
        }
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return 0
    print(
        f"lines {start + 1}-{report.end_line} of {total}: published {report.published}, "
        f"skipped {report.skipped_invalid} (blank or invalid"
        + (f"; {rejects.entries} invalid listed in {rejects.path}" if rejects.entries else "")
        + f"), retried {report.retried}, {rate:,.0f} events/s"
    )
    return 0
