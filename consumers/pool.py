"""Opening messages in worker processes, so the RSA work uses every core.

:meth:`Opener.open` is pure CPU (an RSA private-key operation, a signature check, CMS
and JSON parsing) and holds the GIL for most of it, so one consumer process opens on one
core however many deliveries it has in flight. :class:`OpenerPool` runs it in a
:class:`~concurrent.futures.ProcessPoolExecutor` instead.

The :class:`Opener` (keys, trust store, authorisation) is built once in each worker by
``opener_factory``, a picklable callable such as ``functools.partial(build_opener,
settings)``: keys and certificates never cross the process boundary, only message bytes
in and the result (or the exception) out. Exceptions keep their class and attributes
across the boundary, so the processor's mapping from exception class to disposition is
the same as in-process. A worker that dies (e.g. killed by the OOM killer) breaks the
pool: :meth:`open` then raises ``BrokenProcessPool``, which is not a sender's fault, so
the consumer treats it as our bug (nack with requeue).

With ``pseudonymiser_factory`` the workers pseudonymise too (:meth:`open_record`), and
what comes back is an :class:`~consumers.store.EventRecord` of primitives and bytes:
pickling a pydantic event and letter out of the worker and back in the consumer costs
about as much CPU as the rest of the consumer's per-message work. The pseudonym key is
loaded by the factory in each worker, never sent with a message.

Requests go to the workers in batches, one executor task per batch: the executor's
per-task cost (a manager thread, a feeder thread, pipes and locks) is most of what the
pool costs the consumer per message. At most two batches per worker are out at once;
requests that arrive meanwhile wait and go together in the next batches, so batches
grow with the load (up to :data:`MAX_BATCH`) and stay single messages when it is light.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from consumers.opener import Opener, VerifiedEvent
from consumers.pseudonym import Pseudonymiser
from consumers.records import PSEUDONYM_KEY_CHECK, pseudonymise
from consumers.store import EventRecord
from contracts.resources import AsyncResource

__all__ = ["OpenerPool", "default_workers"]

# Per worker process, set once by the pool's initializer.
_worker_opener: Opener | None = None
_worker_pseudonymiser: Pseudonymiser | None = None

#: At most this many messages in one executor task: a batch waits for its slowest
#: member, so large batches would add latency for no further saving.
MAX_BATCH = 16
#: Batches out per worker: one running, one queued, so no worker waits for the next.
BATCHES_PER_WORKER = 2

_Request = tuple[bytes, str, int | None]


def _init_worker(
    opener_factory: Callable[[], Opener],
    pseudonymiser_factory: Callable[[], Pseudonymiser] | None,
) -> None:
    global _worker_opener, _worker_pseudonymiser  # per-process state, set once by the pool
    _worker_opener = opener_factory()
    _worker_pseudonymiser = pseudonymiser_factory() if pseudonymiser_factory else None


def _opener_in_worker() -> Opener:
    if _worker_opener is None:
        raise RuntimeError("the opener pool worker was not initialised")
    return _worker_opener


def _key_check_in_worker() -> str | None:
    """The worker's MAC of :data:`PSEUDONYM_KEY_CHECK` (``None``: it does not pseudonymise)."""
    _opener_in_worker()
    if _worker_pseudonymiser is None:
        return None
    return _worker_pseudonymiser.mac(PSEUDONYM_KEY_CHECK)


def _open_in_worker(body: bytes, message_id: str | None, from_her_id: int | None) -> VerifiedEvent:
    return _opener_in_worker().open(body, message_id=message_id, from_her_id=from_her_id)


def _open_records_in_worker(
    requests: Sequence[_Request],
) -> list[EventRecord | BaseException]:
    """Open and pseudonymise each request; a failure is returned in its place, so one
    bad message in a batch does not decide the others."""
    opener = _opener_in_worker()
    pseudonymiser = _worker_pseudonymiser
    if pseudonymiser is None:
        raise RuntimeError("the opener pool was started without a pseudonymiser")
    results: list[EventRecord | BaseException] = []
    for body, message_id, from_her_id in requests:
        try:
            verified = opener.open(body, message_id=message_id, from_her_id=from_her_id)
            results.append(pseudonymise(verified.event, pseudonymiser, message_id))
        except Exception as error:
            # The traceback does not cross the boundary; the class and attributes do.
            error.__traceback__ = None
            results.append(error)
    return results


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


class OpenerPool(AsyncResource):
    """``await pool.open(body, ...)``: :meth:`Opener.open` in one of ``workers`` processes.

    Use as a context manager (sync or async) or call :meth:`close`; workers start
    eagerly so that the first deliveries do not pay for process start-up and key loading.
    """

    def __init__(
        self,
        opener_factory: Callable[[], Opener],
        *,
        workers: int | None = None,
        pseudonymiser_factory: Callable[[], Pseudonymiser] | None = None,
    ) -> None:
        """``pseudonymiser_factory`` (picklable, the same key on every call, e.g.
        ``functools.partial(Pseudonymiser.from_file, path)``) enables :meth:`open_record`.

        Raises ``ValueError`` if the workers' factories gave different pseudonym keys.
        """
        self.workers = workers or default_workers()
        self._executor = concurrent.futures.ProcessPoolExecutor(
            self.workers, initializer=_init_worker, initargs=(opener_factory, pseudonymiser_factory)
        )
        self._pending: list[tuple[_Request, asyncio.Future[EventRecord]]] = []
        # The loop a flush is scheduled on (None: none is), and the batches out. Both
        # survive an event loop that closes mid-way (tests run one loop per test).
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._batches_out: set[concurrent.futures.Future[list[EventRecord | BaseException]]] = set()
        # Start every worker now (and surface a failing factory here, not on a delivery).
        try:
            checks = {
                future.result()
                for future in [
                    self._executor.submit(_key_check_in_worker) for _ in range(self.workers)
                ]
            }
            if len(checks) != 1:
                raise ValueError("the pool's workers were given different pseudonym keys")
        except BaseException:
            self._executor.shutdown(wait=True, cancel_futures=True)
            raise
        #: The workers' MAC of :data:`~consumers.records.PSEUDONYM_KEY_CHECK`: equal to a
        #: pseudonymiser's own MAC of it exactly when both hold the same key. ``None``
        #: when the pool does not pseudonymise.
        self.key_check: str | None = checks.pop()

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The worker processes' ids (for CPU accounting)."""
        return tuple(self._executor._processes or ())

    @property
    def pseudonymises(self) -> bool:
        """Whether :meth:`open_record` is available (a pseudonymiser factory was given)."""
        return self.key_check is not None

    async def open(
        self, body: bytes, *, message_id: str | None = None, from_her_id: int | None = None
    ) -> VerifiedEvent:
        """What :meth:`Opener.open` returns or raises, computed in a worker process."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(_open_in_worker, body, message_id, from_her_id)
        )

    async def open_record(
        self, body: bytes, *, message_id: str, from_her_id: int | None = None
    ) -> EventRecord:
        """Open, then pseudonymise, in a worker: the stored form of the event.

        Raises what :meth:`Opener.open` raises (class and attributes intact), or
        ``RuntimeError`` if the pool has no pseudonymiser.
        """
        if not self.pseudonymises:
            raise RuntimeError("the opener pool was started without a pseudonymiser")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EventRecord] = loop.create_future()
        self._pending.append(((body, message_id, from_her_id), future))
        if self._flush_loop is not loop:
            # Later in this loop iteration: the deliveries that arrived together go together.
            self._flush_loop = loop
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Hand pending requests to the workers: spread over the free batch slots, at most
        :data:`MAX_BATCH` per batch; what does not fit waits for a batch to come back."""
        self._flush_loop = None
        self._batches_out = {batch for batch in self._batches_out if not batch.done()}
        self._pending = [
            (request, future)
            for request, future in self._pending
            if not future.done() and not future.get_loop().is_closed()
        ]
        free = self.workers * BATCHES_PER_WORKER - len(self._batches_out)
        while self._pending and free > 0:
            size = min(MAX_BATCH, -(-len(self._pending) // free))
            batch, self._pending = self._pending[:size], self._pending[size:]
            free -= 1
            futures = [future for _, future in batch]
            try:
                submitted = self._executor.submit(
                    _open_records_in_worker, [request for request, _ in batch]
                )
            except Exception as error:  # shut down or broken: every caller hears of it
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
                continue
            self._batches_out.add(submitted)
            asyncio.wrap_future(submitted).add_done_callback(
                functools.partial(self._batch_done, futures)
            )

    def _batch_done(
        self,
        futures: Sequence[asyncio.Future[EventRecord]],
        batch: asyncio.Future[list[EventRecord | BaseException]],
    ) -> None:
        _settle(futures, batch)
        if self._pending:
            self._flush()

    def _cancel_pending(self) -> None:
        """Callers still waiting for a batch slot hear that the pool is gone (from any
        thread: the futures are cancelled on their own loop)."""
        pending, self._pending = self._pending, []
        for _, future in pending:
            with contextlib.suppress(RuntimeError):  # that loop is closed already
                future.get_loop().call_soon_threadsafe(future.cancel)

    def close(self) -> None:
        """Stop the workers (pending work is cancelled); closing twice is harmless."""
        self._cancel_pending()
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

    async def aclose(self) -> None:
        """:meth:`close` off the event loop (it waits for the workers to exit)."""
        await asyncio.to_thread(self.close)


def _settle(
    futures: Sequence[asyncio.Future[EventRecord]],
    batch: asyncio.Future[list[EventRecord | BaseException]],
) -> None:
    """Give each caller its own result or exception from the batch's answer."""
    if batch.cancelled():
        for future in futures:
            future.cancel()
        return
    error = batch.exception()
    results: Sequence[EventRecord | BaseException] = (
        [error] * len(futures) if error is not None else batch.result()
    )
    for future, result in zip(futures, results, strict=True):
        if future.done():  # the caller was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
