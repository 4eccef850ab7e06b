"""Option types shared by the ``kpr`` commands: a value out of range is a usage error
(exit 2, argparse's own message), never a traceback or a silent default."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "MAX_PORT",
    "her_id",
    "non_negative_float",
    "non_negative_int",
    "port",
    "positive_float",
    "positive_int",
]

MAX_PORT = 65535


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """A count where zero would mean nothing (events, messages, a window)."""
    value = int(_number(int, text, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(int, text, "a whole number"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """A rate or a duration where zero would mean nothing."""
    value = _number(float, text, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def port(text: str) -> int:
    """A TCP port to listen on: 0 (any free port) to 65535."""
    value = int(_number(int, text, "a port number"))
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-{MAX_PORT}")
    return value


def her_id(text: str) -> int:
    """A HER-id: a positive whole number (the national address register's id)."""
    value = int(_number(int, text, "a HER-id (a whole number)"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"HER-id {value} must be positive")
    return value
