"""The ``kpr`` command line.

Each command lives in its own module under ``kpr.commands`` and exposes
``register(subparsers)``; the handler it sets returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# Order is the order of ``kpr --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "kpr.commands.demo",
    "kpr.commands.pipeline",
    "kpr.commands.synth",
    "kpr.commands.crypto",
    "kpr.commands.pki",
    "kpr.commands.broker",
    "kpr.commands.dlq",
    "kpr.commands.dedup",
    "kpr.commands.report",
    "kpr.commands.bench",
    "kpr.commands.backfill",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpr",
        description="kpr-stream: clinical events from EPJ systems to KPR over AMQP.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    exit_code: int = args.handler(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
