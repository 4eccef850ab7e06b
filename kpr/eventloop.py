"""Running the top-level coroutine: on uvloop when it is installed, else asyncio's loop.

The consumer and producer spend a good part of their CPU per message in the event
loop itself (callbacks, futures, socket reads for aio-pika's frames); uvloop does that
work in C. It is optional: without it, or with ``KPR_UVLOOP=0``, the standard loop
runs the same code.

``SIGUSR1`` writes the stack of every task to the log (``kpr.diagnostics``, one WARNING
line per task) and the process goes on: what a hung consumer is waiting for, read
without stopping it (docs/OPERATIONS.md, "A consumer that does not stop").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kpr import lifecycle

__all__ = ["DUMP_SIGNAL", "UVLOOP_VARIABLE", "dump_tasks", "loop_factory", "run"]

UVLOOP_VARIABLE = "KPR_UVLOOP"
DUMP_SIGNAL = signal.SIGUSR1

log = logging.getLogger("kpr.diagnostics")

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


def dump_tasks() -> int:
    """Log the stack of every task of the running loop; how many there were."""
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    for task in tasks:
        stack = io.StringIO()
        task.print_stack(limit=12, file=stack)
        log.warning("task %s", task.get_name(), extra={"stack": stack.getvalue()})
    return len(tasks)


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
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(DUMP_SIGNAL, dump_tasks)
            installed.append(DUMP_SIGNAL)
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
