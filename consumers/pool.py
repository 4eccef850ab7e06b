"""Opening messages in worker processes, so the RSA work uses every core.

:meth:`Opener.open` is pure CPU (an RSA private-key operation, a signature check, CMS
and JSON parsing), and apart from the RSA operation it holds the GIL, so one consumer
process opens on one core however many deliveries it has in flight. :class:`OpenerPool`
runs it in worker processes instead.

The :class:`Opener` (keys, trust store, authorisation) is built once in each worker by
``opener_factory``, a picklable callable such as ``functools.partial(build_opener,
settings)``: keys and certificates never cross the process boundary, only message bytes
in and the result (or the exception) out. Exceptions keep their class and attributes
across the boundary, so the processor's mapping from exception class to disposition is
the same as in-process. A worker that dies (e.g. killed by the OOM killer) breaks the
pool: waiting and later callers get ``BrokenProcessPool``, which is not a sender's fault,
so the consumer treats it as our bug (nack with requeue).

With ``pseudonymiser_factory`` the workers pseudonymise too (:meth:`open_record`), and
what comes back is an :class:`~consumers.store.EventRecord` of primitives and bytes:
pickling a pydantic event and letter out of the worker and back in the consumer costs
about as much CPU as the rest of the consumer's per-message work. The pseudonym key is
loaded by the factory in each worker, never sent with a message.

Each worker is a forked process at the end of a socket pair; requests go out in batches
as length-prefixed pickles, answers come back in order. The event loop writes and reads
the sockets itself (``add_reader``/``add_writer``): no manager or feeder thread, whose
wake-ups and GIL hand-offs cost the consumer more than the pickling (a
``ProcessPoolExecutor`` did this before). At most two batches per worker are out at
once; requests that arrive meanwhile wait and go together in the next batches, so
batches grow with the load (up to :data:`MAX_BATCH`) and stay single messages when it
is light. The pool serves one event loop at a time (a later loop takes over once the
earlier one is closed, as in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Literal, Self

from consumers.opener import Opener, VerifiedEvent
from consumers.pseudonym import Pseudonymiser
from consumers.records import PSEUDONYM_KEY_CHECK, pseudonymise
from consumers.store import EventRecord
from contracts.resources import AsyncResource

__all__ = ["OpenerPool", "default_workers"]

#: At most this many messages in one batch: a batch waits for its slowest member, so
#: large batches would add latency for no further saving.
MAX_BATCH = 16
#: Batches out per worker: one running, one queued, so no worker waits for the next.
BATCHES_PER_WORKER = 2
#: How long a closing pool waits for a worker to exit before it kills it.
EXIT_TIMEOUT_S = 10.0

_Kind = Literal["record", "verified"]
_Request = tuple[_Kind, bytes, str | None, int | None]
_Answer = EventRecord | VerifiedEvent
_FRAME = struct.Struct("!I")


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


# --- the worker process ------------------------------------------------------------------


def _answer(
    opener: Opener, pseudonymiser: Pseudonymiser | None, request: _Request
) -> _Answer | BaseException:
    """One request's answer; a failure is returned in its place, so one bad message in
    a batch does not decide the others."""
    kind, body, message_id, from_her_id = request
    try:
        verified = opener.open(body, message_id=message_id, from_her_id=from_her_id)
        if kind == "verified":
            return verified
        if pseudonymiser is None:
            raise RuntimeError("the opener pool was started without a pseudonymiser")
        return pseudonymise(
            verified.event,
            pseudonymiser,
            message_id or "",
            letter_form=verified.letter.form,
            signature_form=verified.signature_form,
        )
    except Exception as error:
        # The traceback does not cross the boundary; the class and attributes do.
        error.__traceback__ = None
        return error


def _dumps(answer: object) -> bytes:
    try:
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # an unpicklable answer is our bug, reported as one
        data = pickle.dumps(RuntimeError(f"an opener pool answer did not pickle: {error!r}"))
    return _FRAME.pack(len(data)) + data


def _loads(frame: bytes) -> Any:
    # Both ends are our own processes over a private socket pair; message bytes travel
    # inside the pickles as bytes, never as pickles.
    return pickle.loads(frame)  # noqa: S301


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def _worker_main(
    channel: socket.socket,
    opener_factory: Callable[[], Opener],
    pseudonymiser_factory: Callable[[], Pseudonymiser] | None,
    pool_ends: Sequence[socket.socket] = (),
) -> None:
    """Answer batches until the pool closes its end. The first frame out is the key
    check (or the exception the factories raised).

    ``pool_ends`` are the pool's ends of the socket pairs, which the fork copied into
    this process: closed first, so that the pool's end of *our* pair is held by the pool
    alone, and its death (even by SIGKILL) ends our stream and this worker.
    """
    for end in pool_ends:
        end.close()
    # The pool decides when a worker stops (end of stream); a terminal's Ctrl-C goes to
    # the whole process group and must not kill work the consumer is draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stream = channel.makefile("rb")
    try:
        opener = opener_factory()
        pseudonymiser = pseudonymiser_factory() if pseudonymiser_factory else None
    except Exception as error:
        error.__traceback__ = None
        channel.sendall(_dumps(error))
        return
    channel.sendall(
        _dumps(pseudonymiser.mac(PSEUDONYM_KEY_CHECK) if pseudonymiser is not None else None)
    )
    while (header := _read_exactly(stream, _FRAME.size)) is not None:
        payload = _read_exactly(stream, _FRAME.unpack(header)[0])
        if payload is None:
            break
        requests: list[_Request] = _loads(payload)
        channel.sendall(_dumps([_answer(opener, pseudonymiser, r) for r in requests]))


# --- the pool's side ---------------------------------------------------------------------


class _Worker:
    """One worker process, its socket, and the batches it has not answered yet (in order)."""

    def __init__(self, process: multiprocessing.process.BaseProcess, channel: socket.socket):
        self.process = process
        self.channel = channel
        self.batches: deque[list[asyncio.Future[Any]]] = deque()
        self.outgoing = bytearray()
        self.incoming = bytearray()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writing = False

    def read_first_frame(self) -> object:
        """The worker's start-up answer, read blocking (before any event loop is used)."""
        stream = self.channel.makefile("rb")
        header = _read_exactly(stream, _FRAME.size)
        payload = None if header is None else _read_exactly(stream, _FRAME.unpack(header)[0])
        if payload is None:
            raise BrokenProcessPool("an opener pool worker exited while starting")
        return _loads(payload)

    def frames(self) -> list[bytes]:
        """The complete frames received so far (removed from the buffer)."""
        frames = []
        offset = 0
        buffer = self.incoming
        while len(buffer) - offset >= _FRAME.size:
            (size,) = _FRAME.unpack_from(buffer, offset)
            if len(buffer) - offset - _FRAME.size < size:
                break
            start = offset + _FRAME.size
            frames.append(bytes(buffer[start : start + size]))
            offset = start + size
        del buffer[:offset]
        return frames


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

        Raises what a factory raised in a worker, or ``ValueError`` if the workers'
        factories gave different pseudonym keys.
        """
        self.workers = workers or default_workers()
        self._pending: list[tuple[_Request, asyncio.Future[Any]]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._broken: BrokenProcessPool | None = None
        self._closed = False
        self._workers: list[_Worker] = []
        context = multiprocessing.get_context("fork")
        try:
            for _ in range(self.workers):
                ours, theirs = socket.socketpair()
                pool_ends = [ours, *(worker.channel for worker in self._workers)]
                process = context.Process(
                    target=_worker_main,
                    args=(theirs, opener_factory, pseudonymiser_factory, pool_ends),
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._workers.append(_Worker(process, ours))
            # Surface a failing factory here, not on a delivery.
            checks: set[str | None] = set()
            for worker in self._workers:
                answer = worker.read_first_frame()
                if isinstance(answer, BaseException):
                    raise answer
                checks.add(answer if isinstance(answer, str) else None)
                worker.channel.setblocking(False)
            if len(checks) != 1:
                raise ValueError("the pool's workers were given different pseudonym keys")
        except BaseException:
            self.close()
            raise
        #: The workers' MAC of :data:`~consumers.records.PSEUDONYM_KEY_CHECK`: equal to a
        #: pseudonymiser's own MAC of it exactly when both hold the same key. ``None``
        #: when the pool does not pseudonymise.
        self.key_check: str | None = checks.pop()

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The worker processes' ids (for CPU accounting)."""
        return tuple(w.process.pid for w in self._workers if w.process.pid is not None)

    @property
    def pseudonymises(self) -> bool:
        """Whether :meth:`open_record` is available (a pseudonymiser factory was given)."""
        return self.key_check is not None

    async def open(
        self, body: bytes, *, message_id: str | None = None, from_her_id: int | None = None
    ) -> VerifiedEvent:
        """What :meth:`Opener.open` returns or raises, computed in a worker process."""
        answer: VerifiedEvent = await self._submit(("verified", body, message_id, from_her_id))
        return answer

    async def open_record(
        self, body: bytes, *, message_id: str, from_her_id: int | None = None
    ) -> EventRecord:
        """Open, then pseudonymise, in a worker: the stored form of the event.

        Raises what :meth:`Opener.open` raises (class and attributes intact), or
        ``RuntimeError`` if the pool has no pseudonymiser.
        """
        if not self.pseudonymises:
            raise RuntimeError("the opener pool was started without a pseudonymiser")
        answer: EventRecord = await self._submit(("record", body, message_id, from_her_id))
        return answer

    async def _submit(self, request: _Request) -> Any:
        if self._closed:
            raise RuntimeError("the opener pool is shut down")
        if self._broken is not None:
            raise self._broken
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((request, future))
        if self._flush_loop is not loop:
            # Later in this loop iteration: the deliveries that arrived together go together.
            self._flush_loop = loop
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Hand pending requests to the workers: spread over the free batch slots, at most
        :data:`MAX_BATCH` per batch; what does not fit waits for a batch to come back."""
        self._flush_loop = None
        self._pending = [(r, f) for r, f in self._pending if not f.done()]
        if self._closed or self._broken is not None:
            self._fail_pending()
            return
        while self._pending:
            worker = min(self._workers, key=lambda w: len(w.batches))
            free = sum(BATCHES_PER_WORKER - len(w.batches) for w in self._workers)
            if len(worker.batches) >= BATCHES_PER_WORKER:
                return
            size = min(MAX_BATCH, -(-len(self._pending) // free))
            batch, self._pending = self._pending[:size], self._pending[size:]
            self._send(worker, [request for request, _ in batch], [f for _, f in batch])

    def _send(
        self, worker: _Worker, requests: list[_Request], futures: list[asyncio.Future[Any]]
    ) -> None:
        loop = futures[0].get_loop()
        self._attach(worker, loop)
        worker.batches.append(futures)
        worker.outgoing += _dumps(requests)
        if not worker.writing:
            self._write(worker)

    def _attach(self, worker: _Worker, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the worker's socket on ``loop`` (taking it over from a closed loop)."""
        if worker.loop is loop:
            return
        self._detach(worker)
        worker.loop = loop
        loop.add_reader(worker.channel, self._read, worker)

    def _detach(self, worker: _Worker) -> None:
        loop, worker.loop = worker.loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(worker.channel)
            loop.remove_writer(worker.channel)
        worker.writing = False

    def _write(self, worker: _Worker) -> None:
        try:
            sent = worker.channel.send(worker.outgoing)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self._break(f"an opener pool worker's socket failed: {error}")
            return
        del worker.outgoing[:sent]
        waiting = bool(worker.outgoing)
        if waiting != worker.writing and worker.loop is not None:
            if waiting:
                worker.loop.add_writer(worker.channel, self._write, worker)
            else:
                worker.loop.remove_writer(worker.channel)
            worker.writing = waiting

    def _read(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._break("an opener pool worker exited")
            return
        worker.incoming += data
        for frame in worker.frames():
            _settle(worker.batches.popleft(), _loads(frame))
        if self._pending:
            self._flush()

    def _break(self, why: str) -> None:
        """A worker is gone: every caller waiting or to come hears BrokenProcessPool."""
        if self._broken is None:
            self._broken = BrokenProcessPool(why)
        for worker in self._workers:
            self._detach(worker)
            while worker.batches:
                _settle(worker.batches.popleft(), self._broken)
        self._fail_pending()

    def _fail_pending(self) -> None:
        """Callers still waiting for a batch slot hear why there is none (from any
        thread: each future is settled on its own loop)."""
        pending, self._pending = self._pending, []
        error: BaseException = self._broken or RuntimeError("the opener pool is shut down")
        for _, future in pending:
            _settle_threadsafe(future, error)

    def close(self) -> None:
        """Stop the workers (pending work is cancelled); closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        pending, self._pending = self._pending, []
        for _, future in pending:
            _settle_threadsafe(future, None)
        for worker in self._workers:
            self._detach_safely(worker)
            for futures in worker.batches:
                for future in futures:
                    _settle_threadsafe(future, None)
            worker.batches.clear()
            # End of stream: the worker finishes the batch it is on and exits.
            with contextlib.suppress(OSError):
                worker.channel.shutdown(socket.SHUT_WR)
        for worker in self._workers:
            worker.process.join(EXIT_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.channel.close()

    def _detach_safely(self, worker: _Worker) -> None:
        """Stop watching the socket, on the loop's own thread if it runs elsewhere."""
        loop = worker.loop
        if loop is None or loop.is_closed():
            worker.loop = None
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop.is_running() and running is not loop:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._detach, worker)
            return
        self._detach(worker)

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
        """:meth:`close`, waiting for the workers off the event loop."""
        if self._closed:
            return
        for worker in self._workers:
            self._detach(worker)
        await asyncio.to_thread(self.close)


def _settle(futures: Sequence[asyncio.Future[Any]], answers: object) -> None:
    """Give each caller its own answer or exception from the batch's answer (one
    exception for all when the whole batch failed)."""
    results: Sequence[object] = (
        [answers] * len(futures) if isinstance(answers, BaseException) else answers  # type: ignore[assignment]
    )
    for future, result in zip(futures, results, strict=True):
        if future.done() or future.get_loop().is_closed():  # the caller is gone
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _settle_threadsafe(future: asyncio.Future[Any], error: BaseException | None) -> None:
    """Fail (or, with ``None``, cancel) ``future`` on its own loop, from any thread."""

    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.cancel()
        else:
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # that loop is closed already
        future.get_loop().call_soon_threadsafe(settle)
