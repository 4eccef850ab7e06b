"""The ``kpr`` command line.

Each command lives in its own module under ``kpr.commands`` and exposes
``register(subparsers)``; the handler it sets returns the process exit code, and
:func:`kpr.exits.run_command` turns whatever it raises into one line and one code of
:data:`kpr.exits.EXIT_CODES` (``kpr --help`` lists them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

from kpr.exits import DEBUG_VARIABLE, EXIT_CODES, run_command

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


def _version() -> str:
    try:
        return metadata.version("kpr-stream")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    return (
        "conventions:\n"
        "  -  as a file name reads standard input or writes standard output\n"
        "  --json  prints the summary as one JSON object (produce, consume, backfill, open,\n"
        "          dlq list, dlq export, pathways)\n"
        f"  --debug or {DEBUG_VARIABLE}=1  shows the traceback of an internal error\n\n"
        f"exit codes:\n{codes}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpr",
        description="kpr-stream: clinical events from EPJ systems to KPR over AMQP.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kpr-stream {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=None,
        help=f"show the traceback of an internal error (env {DEBUG_VARIABLE}=1)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``dlq list``, ``pki dev``, ``produce``: the words that chose the handler."""
    words = [args.command]
    words += [value for key, value in vars(args).items() if key.endswith("_command") and value]
    return " ".join(words)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(command_name(args), lambda: int(args.handler(args)), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
