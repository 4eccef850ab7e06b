"""``kpr broker start|stop|status``: a local RabbitMQ kept running between commands.

For trying the command-line flow (``pki dev`` -> ``synth`` -> ``produce`` -> ``consume``)
on a machine without a broker: the same local-process node the demo and the tests start
(Debian's ``rabbitmq-server`` under the state directory), but left running until
``kpr broker stop``. Exit codes: 0 done (``status``: running), 1 ``status``: not
running, or the node could not be started or stopped (the line says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kpr.config import Settings
from kpr.localservices import (
    LocalServiceError,
    kept_broker,
    start_kept_broker,
    stop_kept_broker,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    broker = subparsers.add_parser(
        "broker",
        help="a local RabbitMQ kept running for the command line (start, stop, status)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = broker.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    start = actions.add_parser(
        "start",
        help="start a local node (or find the running one) and print its KPR_AMQP_URL",
    )
    start.add_argument(
        "--port", type=_port, default=None, help="AMQP port (default 5672 if free, else any)"
    )
    start.set_defaults(handler=_start)
    actions.add_parser("stop", help="stop the node `kpr broker start` left running").set_defaults(
        handler=_stop
    )
    actions.add_parser("status", help="whether it runs, and its URL").set_defaults(handler=_status)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _directory() -> Path:
    return Settings.from_env().state_dir / "broker"


def _start(args: argparse.Namespace) -> int:
    directory = _directory()
    try:
        kept, started = start_kept_broker(directory, args.port)
    except LocalServiceError as error:
        print(f"kpr broker start: error: {error}", file=sys.stderr)
        return 1
    verb = "started" if started else "already running"
    print(f"export KPR_AMQP_URL={kept.amqp_url}")
    print(
        f"local broker {verb}: {kept.node_name} on port {kept.amqp_port}, state in "
        f"{kept.directory}; stop it with `kpr broker stop`",
        file=sys.stderr,
    )
    return 0


def _stop(args: argparse.Namespace) -> int:
    try:
        kept = stop_kept_broker(_directory())
    except LocalServiceError as error:
        print(f"kpr broker stop: error: {error}", file=sys.stderr)
        return 1
    if kept is None:
        print("no local broker was running (nothing to stop)", file=sys.stderr)
    else:
        print(f"local broker {kept.node_name} stopped", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        kept = kept_broker(_directory())
        running = kept is not None and kept.answers()
    except LocalServiceError as error:
        print(f"kpr broker status: error: {error}", file=sys.stderr)
        return 1
    if kept is None or not running:
        print("not running (start one with `kpr broker start`)")
        return 1
    print(f"running: KPR_AMQP_URL={kept.amqp_url} (node {kept.node_name}, pid {kept.pid})")
    return 0
