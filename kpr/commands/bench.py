"""``kpr bench``: the whole pipeline's throughput next to the machine's limits.

Uses ``KPR_AMQP_URL`` if set, else starts a local broker under a temporary state
directory (stopped at the end); PostgreSQL likewise (``KPR_TEST_POSTGRES_URL``, else a
local server; ``--no-postgres`` skips that phase). ``--quick`` is the short run for
regular checks; the full run pushes one million messages through the memory phase.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from kpr.benchmarks.pipeline import BenchOptions, format_table, run_pipeline_benchmark
from kpr.lifecycle import Interrupted
from kpr.localservices import LocalServiceError, ensure_broker, ensure_postgres
from kpr.options import non_negative_float, non_negative_int, positive_int

__all__ = ["register"]

NO_SERVICE_EXIT = 1  # the local broker or database could not be started (kpr.exits)
INTERRUPTED_EXIT = 130


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="pipeline throughput, latency and memory next to the machine's limits"
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under 3 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--messages", type=positive_int, help="messages per phase (default 20,000; quick 1,000)"
    )
    parser.add_argument("--memory-messages", type=positive_int, help="messages of the memory phase")
    parser.add_argument(
        "--prefetch", type=positive_int, default=128, help="consumer prefetch (128)"
    )
    parser.add_argument(
        "--max-in-flight", type=positive_int, default=256, help="producer confirm window (256)"
    )
    parser.add_argument(
        "--linger-ms",
        type=non_negative_float,
        help="the consumer's group-commit linger (default KPR_GROUP_COMMIT_LINGER_MS's, 10)",
    )
    parser.add_argument(
        "--workers", type=non_negative_int, help="open workers (default: one per core)"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL phase")
    parser.set_defaults(handler=_handle)


def _options(args: argparse.Namespace) -> BenchOptions:
    base = BenchOptions.quick_run(args.messages or 1000) if args.quick else BenchOptions()
    changes: dict[str, Any] = {
        "prefetch": args.prefetch,
        "max_in_flight": args.max_in_flight,
        "workers": args.workers,
        "postgres": not args.no_postgres,
    }
    if args.messages and not args.quick:
        changes["messages"] = args.messages
    if args.memory_messages:
        changes["memory_messages"] = args.memory_messages
    if args.linger_ms is not None:
        changes["linger_s"] = args.linger_ms / 1000
    return BenchOptions(**{**base.__dict__, **changes})


def _handle(args: argparse.Namespace) -> int:
    options = _options(args)
    # SIGINT and SIGTERM raise Interrupted (kpr.exits), so the ExitStack stops the broker
    # and database this bench started (SIGTERM's default action would leave them running).

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with ExitStack() as stack:
        work_dir = Path(tempfile.mkdtemp(prefix="kpr-bench-"))
        stack.callback(shutil.rmtree, work_dir, True)
        # The postgres user must reach its data directory when we run as root.
        work_dir.chmod(0o711)
        try:
            say("broker ...")
            amqp_url, broker = ensure_broker(work_dir)
            if broker is not None:
                stack.callback(broker.stop)
            postgres_url = None
            if options.postgres:
                say("postgresql ...")
                postgres_url, postgres = ensure_postgres(work_dir)
                if postgres is not None:
                    stack.callback(postgres.stop)
        except LocalServiceError as error:
            print(f"kpr bench: error: {error}", file=sys.stderr)
            return NO_SERVICE_EXIT
        try:
            result = run_pipeline_benchmark(
                options,
                amqp_url=amqp_url,
                postgres_url=postgres_url,
                work_dir=work_dir / "bench",
                say=say,
            )
        except (KeyboardInterrupt, Interrupted):
            say("kpr bench: interrupted; stopping what it started")
            raise
    result["cpu_count"] = os.cpu_count()
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print(format_table(result))
    return 0
