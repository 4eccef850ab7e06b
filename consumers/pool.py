"""Opening messages in worker processes, so the RSA work uses every core.

:meth:`Opener.open` is pure CPU (an RSA private-key operation, a signature check, CMS
and JSON parsing) and holds the GIL for most of it, so one consumer process opens on one
core however many deliveries it has in flight. :class:`OpenerPool` runs it in a
:class:`~concurrent.futures.ProcessPoolExecutor` instead.

The :class:`Opener` (keys, trust store, authorisation) is built once in each worker by
``opener_factory``, a picklable callable such as ``functools.partial(build_opener,
settings)``: keys and certificates never cross the process boundary, only message bytes
in and a :class:`VerifiedEvent` (or the exception) out. Exceptions keep their class and
attributes across the boundary, so the processor's mapping from exception class to
disposition is the same as in-process. A worker that dies (e.g. killed by the OOM
killer) breaks the pool: :meth:`open` then raises ``BrokenProcessPool``, which is not a
sender's fault, so the consumer treats it as our bug (nack with requeue).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Callable
from types import TracebackType
from typing import Self

from consumers.opener import Opener, VerifiedEvent

__all__ = ["OpenerPool", "default_workers"]

# Set once per worker process by the pool's initializer.
_worker_opener: Opener | None = None


def _init_worker(opener_factory: Callable[[], Opener]) -> None:
    global _worker_opener  # per-process state, set once by the pool
    _worker_opener = opener_factory()


def _open_in_worker(body: bytes, message_id: str | None, from_her_id: int | None) -> VerifiedEvent:
    if _worker_opener is None:
        raise RuntimeError("the opener pool worker was not initialised")
    return _worker_opener.open(body, message_id=message_id, from_her_id=from_her_id)


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


class OpenerPool:
    """``await pool.open(body, ...)``: :meth:`Opener.open` in one of ``workers`` processes.

    Use as a context manager (sync or async) or call :meth:`close`; workers start
    eagerly so that the first deliveries do not pay for process start-up and key loading.
    """

    def __init__(self, opener_factory: Callable[[], Opener], *, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._executor = concurrent.futures.ProcessPoolExecutor(
            self.workers, initializer=_init_worker, initargs=(opener_factory,)
        )
        # Start every worker now (and surface a failing factory here, not on a delivery).
        for future in [self._executor.submit(os.getpid) for _ in range(self.workers)]:
            future.result()

    async def open(
        self, body: bytes, *, message_id: str | None = None, from_her_id: int | None = None
    ) -> VerifiedEvent:
        """What :meth:`Opener.open` returns or raises, computed in a worker process."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(_open_in_worker, body, message_id, from_her_id)
        )

    def close(self) -> None:
        """Stop the workers (pending work is cancelled); closing twice is harmless."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)
