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


def _whole(text: str, what: str, minimum: int, maximum: int | None = None) -> int:
    value = int(_number(int, text, what))
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f"in {minimum}-{maximum}" if maximum is not None else f"of at least {minimum}"
        raise argparse.ArgumentTypeError(f"{value} is not {what} {allowed}")
    return value


def positive_int(text: str) -> int:
    """A count where zero would mean nothing (events, messages, a window)."""
    return _whole(text, "a whole number", 1)


def non_negative_int(text: str) -> int:
    return _whole(text, "a whole number", 0)


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
    return _whole(text, "a port number", 0, MAX_PORT)


def her_id(text: str) -> int:
    """A HER-id: a positive whole number (the national address register's id)."""
    return _whole(text, "a HER-id (a whole number)", 1)
