"""Process lifecycle: turning SIGTERM / SIGINT into an orderly stop.

A container runtime stops a process with SIGTERM and, after its grace period, SIGKILL.
:func:`stop_on_signals` turns the signal into a callback on the event loop (never an
exception thrown into whatever code happens to run), so the producer and the consumer
can stop taking work, drain what is in flight and close; the command then exits
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as a shell reports a process that a
signal stopped, and :func:`received_signal` tells the command line which it was.

Commands without a drain of their own are stopped by :class:`Interrupted`, raised where
the signal lands (a synchronous command) or as the cancellation of the main task
(``kpr.eventloop.run``); the command line turns it into the same exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator

__all__ = [
    "TERMINATION_SIGNALS",
    "Interrupted",
    "interrupt_on_signals",
    "interrupted_while_opening",
    "note_signal",
    "received_signal",
    "stop_on_signals",
]

log = logging.getLogger("kpr.lifecycle")

TERMINATION_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

# The signals this process has received through either handler, oldest first.
_received: list[signal.Signals] = []
# Tasks still opening (connecting, declaring): a signal cancels them, as nothing is in
# flight to drain yet and a connect may wait long (KPR_CONNECT_TIMEOUT).
_opening: set[asyncio.Task[object]] = set()


class Interrupted(BaseException):
    """A signal stopped a command. A ``BaseException``, like ``KeyboardInterrupt``, so no
    ``except Exception`` on the way out takes it for a failure of the work."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(signum.name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def note_signal(signum: signal.Signals) -> None:
    """Record that ``signum`` arrived (every handler of ours calls it)."""
    _received.append(signum)


@contextlib.asynccontextmanager
async def interrupted_while_opening() -> AsyncIterator[Callable[[], None]]:
    """Inside :func:`stop_on_signals`, make a signal that arrives before the work has
    started cancel the opening (raising :class:`Interrupted`) instead of waiting for it.

    Yields ``opened``: call it once connected; from then on a signal only asks the work to
    stop and drain, as :func:`stop_on_signals` does.
    """
    task = asyncio.current_task()
    assert task is not None, "interrupted_while_opening needs a running task"
    _opening.add(task)

    def opened() -> None:
        _opening.discard(task)

    try:
        yield opened
    except asyncio.CancelledError:
        signum = received_signal()
        if task in _opening and signum is not None:
            task.uncancel()  # the cancellation was ours, for the signal: it is spent
            raise Interrupted(signum) from None
        raise
    finally:
        _opening.discard(task)


def received_signal() -> signal.Signals | None:
    """The first termination signal this process received, or ``None``."""
    return _received[0] if _received else None


@contextlib.contextmanager
def interrupt_on_signals(
    signals: tuple[signal.Signals, ...] = TERMINATION_SIGNALS,
) -> Iterator[None]:
    """While inside, each of ``signals`` raises :class:`Interrupted` where the main thread
    is (for synchronous work); the previous handlers are back on leaving."""

    def on_signal(signum: int, frame: object) -> None:
        note_signal(signal.Signals(signum))
        raise Interrupted(signal.Signals(signum))

    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
        note_signal(signum)
        for task in list(_opening):
            task.cancel()
        stop()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
