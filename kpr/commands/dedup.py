"""``kpr bench-dedup``: measure how deduplication cost grows with the number of events."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from kpr.benchmarks.dedup import measure_dedup_growth
from kpr.options import positive_int

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench-dedup", help="dedup record size and lookup cost over millions of events"
    )
    parser.add_argument(
        "--sizes",
        default="0,100000,1000000,3000000",
        help="row counts to measure at (default 0,100000,1000000,3000000)",
    )
    parser.add_argument("--sample", type=positive_int, default=200, help="applies timed per size")
    parser.add_argument("--json", action="store_true", help="a JSON array")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    sizes = tuple(int(part) for part in args.sizes.split(",") if part)
    results = measure_dedup_growth(sizes, sample=args.sample)
    if args.json:
        sys.stdout.write(orjson.dumps(results).decode() + "\n")
        return 0
    print(f"{'rows':>10} {'file MB':>9} {'B/row':>7} {'apply new ms':>13} {'apply dup ms':>13}")
    for row in results:
        print(
            f"{row['rows']:>10} {row['file_bytes'] / 1e6:>9.1f} {row['bytes_per_row']:>7}"
            f" {row['apply_new_ms']:>13} {row['apply_duplicate_ms']:>13}"
        )
    print(f"lookup: {results[-1]['lookup_plan']}")
    return 0
