"""``kpr synth``: write deterministic synthetic events as JSON Lines.

``kpr synth --count 1000 --seed 7 --out events.jsonl`` writes one event per line, the
same bytes for the same arguments. Only synthetic identities are written; without
``--defects`` every line is a valid event in the test environment.

Exit codes: 0 written, 2 bad arguments (argparse), 3 the output file cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contracts.errors import ContractViolation
from contracts.events.identifiers import check_org_number
from contracts.synth import (
    DEFAULT_SENDER_HER_ID,
    DEFAULT_SENDER_ORG_NUMBER,
    DEFAULT_UNIT_ORG_NUMBERS,
    EVENT_KINDS,
    generate_lines,
)
from kpr.files import STANDARD_STREAM, write_output
from kpr.options import her_id

__all__ = ["register", "run"]


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a share is a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a share is a number between 0 and 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("the count is a whole number >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the count is a whole number >= 0")
    return value


def _kinds(text: str) -> frozenset[str]:
    kinds = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not kinds or not kinds <= EVENT_KINDS:
        raise argparse.ArgumentTypeError("kinds is a comma-separated subset of: kad,hst")
    return kinds


def _org_numbers(text: str) -> tuple[str, ...]:
    numbers = tuple(part.strip() for part in text.split(",") if part.strip())
    if not numbers:
        raise argparse.ArgumentTypeError("give at least one organisation number")
    for number in numbers:
        try:
            check_org_number(number)
        except ContractViolation as error:
            raise argparse.ArgumentTypeError(error.description) from None
    return numbers


def _org_number(text: str) -> str:
    return _org_numbers(text)[0]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write deterministic synthetic events (JSON Lines)",
        description="Write synthetic KAD/ØHD and HST events, one JSON object per line. "
        "Identities are synthetic test ids, accepted only where KPR_ENVIRONMENT=test.",
    )
    parser.add_argument("--count", type=_count, default=1000, help="events to write (1000)")
    parser.add_argument("--seed", type=int, default=2017, help="random seed (2017)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output file (default: standard output)"
    )
    parser.add_argument(
        "--kinds", type=_kinds, default=EVENT_KINDS, help="event families: kad,hst (both)"
    )
    parser.add_argument(
        "--corrections", type=_share, default=0.0, help="share followed by a correction (0)"
    )
    parser.add_argument(
        "--duplicates", type=_share, default=0.0, help="share sent twice, unchanged (0)"
    )
    parser.add_argument(
        "--defects", type=_share, default=0.0, help="share broken on purpose, one rule each (0)"
    )
    parser.add_argument(
        "--unit-org-numbers",
        type=_org_numbers,
        default=DEFAULT_UNIT_ORG_NUMBERS,
        help="comma-separated org numbers of the service units "
        f"(default {','.join(DEFAULT_UNIT_ORG_NUMBERS)})",
    )
    parser.add_argument(
        "--sender-her-id", type=her_id, default=DEFAULT_SENDER_HER_ID, help="sender HER-id (90001)"
    )
    parser.add_argument(
        "--sender-org-number",
        type=_org_number,
        default=DEFAULT_SENDER_ORG_NUMBER,
        help=f"sender organisation number ({DEFAULT_SENDER_ORG_NUMBER})",
    )
    parser.set_defaults(handler=run)


def _write(lines: Sequence[bytes], out: Path | None) -> None:
    write_output(out or STANDARD_STREAM, b"".join(line + b"\n" for line in lines), "events file")


def run(args: argparse.Namespace) -> int:
    """Generate and write the events; returns the exit code."""
    lines = generate_lines(
        args.count,
        seed=args.seed,
        defects=args.defects,
        kinds=args.kinds,
        corrections=args.corrections,
        duplicates=args.duplicates,
        unit_org_numbers=args.unit_org_numbers,
        sender_her_id=args.sender_her_id,
        sender_org_number=args.sender_org_number,
    )
    _write(lines, args.out)
    if args.out is not None and args.out != STANDARD_STREAM:
        print(f"wrote {len(lines)} events to {args.out}", file=sys.stderr)
    return 0
