"""Running the top-level coroutine: on uvloop when it is installed, else asyncio's loop.

The consumer and producer spend a good part of their CPU per message in the event
loop itself (callbacks, futures, socket reads for aio-pika's frames); uvloop does that
work in C. It is optional: without it, or with ``KPR_UVLOOP=0``, the standard loop
runs the same code.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["UVLOOP_VARIABLE", "loop_factory", "run"]

UVLOOP_VARIABLE = "KPR_UVLOOP"

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory if uvloop is installed and not disabled, else ``None``
    (asyncio's default loop)."""
    if os.environ.get(UVLOOP_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when :func:`loop_factory` offers it."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
