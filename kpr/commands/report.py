"""``kpr report``: data-quality and guideline report from the pathway store."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from kpr.config import Settings
from kpr.files import output_folder
from kpr.options import positive_int
from kpr.reports import DEFAULT_THRESHOLD, ReportOptions, build_report, write_report

__all__ = ["register"]


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "report", help="write the data-quality and guideline report (HTML, JSON, CSV)"
    )
    report.add_argument("--out", type=Path, required=True, help="directory to write into")
    report.add_argument("--municipality", help="only this municipality (4 digits)")
    report.add_argument("--year", type=int, help="only this calendar year")
    report.add_argument("--store-url", help="SQLite path or PostgreSQL URL (env KPR_STORE_URL)")
    report.add_argument(
        "--min-count",
        type=positive_int,
        default=DEFAULT_THRESHOLD,
        help=f"counts below this are suppressed (default {DEFAULT_THRESHOLD})",
    )
    report.add_argument(
        "--max-stay-days",
        type=positive_int,
        default=30,
        help="flag stays longer than this (default 30)",
    )
    report.add_argument(
        "--as-of",
        type=datetime.fromisoformat,
        help="reference time, ISO 8601 with offset (default now)",
    )
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    if args.municipality is not None and not (
        len(args.municipality) == 4 and args.municipality.isdigit()
    ):
        print("kpr report: error: --municipality takes four digits", file=sys.stderr)
        return 2
    if args.as_of is not None and args.as_of.tzinfo is None:
        print("kpr report: error: --as-of needs a UTC offset", file=sys.stderr)
        return 2
    store_url = args.store_url or Settings.from_env().store_url
    options = ReportOptions(
        municipality=args.municipality,
        year=args.year,
        threshold=args.min_count,
        max_stay_days=args.max_stay_days,
        as_of=args.as_of,
    )
    output_folder(args.out, "report")
    report = build_report(store_url, options)
    written = write_report(report, args.out)
    print(f"wrote {len(written)} files to {args.out} ({args.out / 'index.html'})")
    return 0
