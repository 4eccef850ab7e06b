"""Running the top-level coroutine: on uvloop when it is installed, else asyncio's loop.

The consumer and producer spend a good part of their CPU per message in the event
loop itself (callbacks, futures, socket reads for aio-pika's frames); uvloop does that
work in C. It is optional: without it, or with ``KPR_UVLOOP=0``, the standard loop
runs the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kpr import lifecycle

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
    """``asyncio.run(main)``, on uvloop when :func:`loop_factory` offers it.

    SIGINT and SIGTERM cancel the main task (so every ``finally`` and ``async with`` on
    the way out runs, and no task is left with an exception nobody reads) and then raise
    :class:`~kpr.lifecycle.Interrupted`. Code that drains on a signal instead installs its
    own handler inside (:func:`~kpr.lifecycle.stop_on_signals`).
    """
    received: list[signal.Signals] = []

    async def cancellable() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_signal(signum: signal.Signals) -> None:
            received.append(signum)
            lifecycle.note_signal(signum)
            if task is not None:
                task.cancel()

        installed = []
        for signum in lifecycle.TERMINATION_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, on_signal, signum)  # main thread only
                installed.append(signum)
        try:
            return await main
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        try:
            return runner.run(cancellable())
        except asyncio.CancelledError:
            if received:
                raise lifecycle.Interrupted(received[0]) from None
            raise
