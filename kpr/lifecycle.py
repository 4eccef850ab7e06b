"""Process lifecycle: turning SIGTERM / SIGINT into an orderly stop.

A container runtime stops a process with SIGTERM and, after its grace period, SIGKILL.
:func:`stop_on_signals` turns the signal into a callback on the event loop (never an
exception thrown into whatever code happens to run), so the producer and the consumer
can stop taking work, drain what is in flight, close, and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

__all__ = ["TERMINATION_SIGNALS", "stop_on_signals"]

log = logging.getLogger("kpr.lifecycle")

TERMINATION_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[], None], signals: tuple[signal.Signals, ...] = TERMINATION_SIGNALS
) -> Iterator[None]:
    """While inside, each of ``signals`` calls ``stop`` on the running loop.

    Must be entered from a coroutine (it needs the running loop). On leaving, the
    default handlers are back, so a second Ctrl-C after the drain ends the process hard.
    """
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        log.info("received %s: stopping", signum.name)
        stop()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
