"""Back-fill: an EPJ extract (JSON Lines) onto the queue, resumable and rate-limited.

The checkpoint is a line offset: every line below it is confirmed by the broker (or was
not an event, see below). It is written atomically (temporary file, fsync, rename,
fsync of the directory) as confirms arrive, never ahead of them, every
:data:`CHECKPOINT_INTERVAL_S`. Two windows bound the work under way:

- ``max_in_flight``: publishes awaiting their confirm at once (throughput). Once it is
  full, sealing waits until a quarter of it is free again (:data:`REFILL_SHARE`), so
  lines are sealed and published in bursts, not one per confirm: interleaving one seal
  with one publish made each cost more (sealing a line 0.54 -> 0.73 ms of CPU; the
  broker too does less per message when publishes come together);
- ``max_resend``: a line is published only while it lies less than ``max_resend`` lines
  above the checkpoint *as written* (the checkpoint is written early when that window
  is full), so after a crash a restart with the same checkpoint re-sends fewer than
  ``max_resend`` messages, and never a line below the checkpoint.

Keeping them apart matters for speed: with one window, a full window forced a
checkpoint (two fsyncs) for almost every confirm batch, which cost more CPU than
sealing. Message ids are stable per event revision
(:func:`producers.sealer.message_id_for`), so whatever is re-sent is deduplicated by
the consumer.

A line that is blank or not a valid event is skipped and counted: a back-fill of millions
of lines must not stop at one bad record, and the sender corrects it at the source. Each
invalid line is listed in the reject log (:class:`RejectLog`: line number, reason, field,
rule; never the content, which holds a national id), made durable before the checkpoint
passes it, so the sender learns of every line that did not go. A message the broker refuses (nack,
unroutable) or does not answer for is retried ``attempts`` times; then the back-fill
stops with :class:`~contracts.errors.PublishFailed`, the checkpoint below that line.

Sealing (one RSA private-key operation per event) may run in a process pool
(``seal_workers``), so that it does not compete with publishing for one core.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import orjson

from contracts.errors import ContractViolation, KprError, PublishFailed
from contracts.events import Environment, parse_event
from producers.sealer import SealedMessage, Sealer

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "DEFAULT_MAX_RESEND",
    "REFILL_SHARE",
    "BackfillReport",
    "Checkpoint",
    "LineRejected",
    "RejectLog",
    "TokenBucket",
    "backfill",
    "count_lines",
]

log = logging.getLogger("kpr.backfill")

#: How often the checkpoint is written while confirms arrive.
CHECKPOINT_INTERVAL_S = 0.2
#: The default re-send bound: a few checkpoint intervals of a fast back-fill.
DEFAULT_MAX_RESEND = 1024
#: The share of the confirm window that must be free before a full window takes more.
REFILL_SHARE = 0.25


class SealedPublisher(Protocol):
    async def publish(self, sealed: SealedMessage) -> None: ...


@dataclass(frozen=True)
class BackfillReport:
    """What one run did: lines from ``start_line`` to ``end_line`` (exclusive)."""

    start_line: int
    end_line: int
    published: int
    skipped_invalid: int
    retried: int
    seconds: float


class Checkpoint:
    """The line offset below which everything is confirmed, in one small file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> int:
        """The stored offset; 0 when there is no checkpoint yet. A corrupt file raises
        ``ValueError`` (resuming from 0 silently would re-send a whole extract)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        line = data.get("line") if isinstance(data, dict) else None
        if not isinstance(line, int) or isinstance(line, bool) or line < 0:
            raise ValueError(
                f'{self.path} is not a back-fill checkpoint (it should hold {{"line": N}}); '
                "restore it, or give a new --checkpoint to start from the first line"
            )
        return line

    def write(self, line: int) -> None:
        """Replace the checkpoint atomically and durably."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{self.path.name}.tmp"
        with temporary.open("wb") as handle:
            handle.write(orjson.dumps({"line": line}))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@dataclass(frozen=True)
class LineRejected:
    """Why a line of the extract is not an event (no value from the line itself)."""

    reason: str
    field: str = ""
    rule: str = ""

    @classmethod
    def of(cls, error: Exception) -> LineRejected:
        if isinstance(error, orjson.JSONDecodeError):
            return cls("not-json")
        if isinstance(error, ContractViolation):
            return cls(error.reason.value, error.field, error.rule)
        reason = getattr(error, "reason", None)
        return cls(reason.value if reason is not None else type(error).__name__)


class RejectLog:
    """The extract's invalid lines, one JSON object per line, appended.

    Entries are flushed as they come and fsynced by :meth:`sync`, which the back-fill calls
    before every checkpoint write. A resume re-reads the lines above the checkpoint, so a
    line may be listed twice after a crash: read the log by line number.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle: BinaryIO | None = None
        self.entries = 0

    def add(self, line: int, rejection: LineRejected) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        entry = {"line": line + 1, **dataclasses.asdict(rejection)}
        self._handle.write(orjson.dumps(entry) + b"\n")
        self._handle.flush()
        self.entries += 1

    def sync(self) -> None:
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Sync and close; harmless twice."""
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst``."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock()

    def delay(self) -> float:
        """Take one token; the seconds to wait before using it (0 if one was there)."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            await asyncio.sleep(wait)


def count_lines(path: Path) -> int:
    """Lines in ``path`` (a last line without newline counts)."""
    count = 0
    last = b"\n"
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _lines_from(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle):
            if number >= start:
                yield number, line


# The sealer a pool worker uses, set once per worker process by the initializer.
_worker_sealer: Sealer | None = None
_worker_environment = Environment.PRODUCTION


def _init_worker(sealer: Sealer, environment: Environment) -> None:
    global _worker_sealer, _worker_environment  # per-process state, set once by the pool
    _worker_sealer = sealer
    _worker_environment = environment


def _seal_line(line: bytes) -> SealedMessage | LineRejected | None:
    assert _worker_sealer is not None
    return seal_line(_worker_sealer, line, _worker_environment)


def seal_line(
    sealer: Sealer, line: bytes, environment: Environment
) -> SealedMessage | LineRejected | None:
    """Parse and seal one JSON line; ``None`` for a blank line, why for an invalid event."""
    if not line.strip():
        return None
    try:
        event = parse_event(orjson.loads(line), environment=environment)
    except (orjson.JSONDecodeError, KprError) as error:
        return LineRejected.of(error)
    return sealer.seal(event)


class _Watermark:
    """Lines handed out in order, finished in any order; the offset below which all are done."""

    def __init__(self, start: int) -> None:
        self._next = start
        self._open: deque[int] = deque()
        self._finished: set[int] = set()
        self.low = start

    def started(self, line: int) -> None:
        self._open.append(line)
        self._next = line + 1

    def finished(self, line: int) -> None:
        self._finished.add(line)
        while self._open and self._open[0] in self._finished:
            self._finished.discard(self._open.popleft())
        self.low = self._open[0] if self._open else self._next


async def backfill(
    path: Path,
    *,
    sealer: Sealer,
    publisher: SealedPublisher,
    checkpoint: Checkpoint,
    environment: Environment,
    rate: float | None = None,
    max_in_flight: int = 256,
    max_resend: int = DEFAULT_MAX_RESEND,
    seal_workers: int = 0,
    attempts: int = 3,
    progress: Callable[[int, float], None] | None = None,
    stop: asyncio.Event | None = None,
    rejects: RejectLog | None = None,
) -> BackfillReport:
    """Publish every event of ``path`` from the checkpoint on; see the module docstring.

    ``rejects`` lists the invalid lines (else they are only counted and logged).
    ``progress(line, events_per_s)`` is called a few times per second. Once ``stop`` is
    set, no more lines are read; those in flight are confirmed and checkpointed. Raises
    :class:`PublishFailed` when a message cannot be confirmed after ``attempts``;
    ``ValueError`` when ``max_resend`` is below ``max_in_flight``.
    """
    if max_resend < max_in_flight:
        raise ValueError("max_resend must be at least max_in_flight")
    start = checkpoint.read()
    started = time.monotonic()
    bucket = TokenBucket(rate) if rate else None
    watermark = _Watermark(start)
    advanced = asyncio.Event()
    loop = asyncio.get_running_loop()
    pool: concurrent.futures.ProcessPoolExecutor | None = None
    if seal_workers > 0:
        pool = concurrent.futures.ProcessPoolExecutor(
            seal_workers, initializer=_init_worker, initargs=(sealer, environment)
        )
    counts = {"published": 0, "skipped": 0, "retried": 0, "in_flight": 0}
    failure: list[PublishFailed] = []
    written = start
    last_write = time.monotonic()
    end = start

    def maybe_checkpoint(force: bool = False) -> None:
        nonlocal written, last_write
        now = time.monotonic()
        if watermark.low != written and (force or now - last_write >= CHECKPOINT_INTERVAL_S):
            if rejects is not None:
                rejects.sync()
            checkpoint.write(watermark.low)
            written, last_write = watermark.low, now
            if progress is not None:
                progress(watermark.low, counts["published"] / max(now - started, 1e-9))

    async def publish(line: int, sealed: SealedMessage) -> None:
        try:
            for attempt in range(attempts):
                try:
                    await publisher.publish(sealed)
                    break
                except PublishFailed as error:
                    if attempt + 1 == attempts:
                        failure.append(error)
                        return  # the watermark stays below this line
                    counts["retried"] += 1
                    log.warning("publish of line %d not confirmed, retrying", line + 1)
                    await asyncio.sleep(0.2 * (attempt + 1))
            counts["published"] += 1
            watermark.finished(line)
            maybe_checkpoint()
        finally:
            counts["in_flight"] -= 1
            advanced.set()

    # After the window was full: how far it must drain before sealing goes on.
    refill_below = max(1, int(max_in_flight * (1 - REFILL_SHARE)))
    window_limit = max_in_flight

    async def room_for(line: int) -> None:
        """Wait for a free publish slot (after a full window, for a quarter of it) and
        until ``line`` is within ``max_resend`` of the written checkpoint (writing it
        early if that is what holds the line back)."""
        nonlocal window_limit
        while not failure:
            beyond_resend = line >= written + max_resend
            if beyond_resend and watermark.low > written:
                maybe_checkpoint(force=True)
            elif beyond_resend or counts["in_flight"] >= window_limit:
                window_limit = refill_below
                advanced.clear()
                await advanced.wait()
            else:
                window_limit = max_in_flight
                return

    # Sealing runs ahead of publishing by a bounded window of futures.
    lookahead: deque[tuple[int, asyncio.Future[SealedMessage | LineRejected | None]]] = deque()
    window = max(2, 4 * seal_workers)

    def submit(line: int, text: bytes) -> None:
        if pool is not None:
            future = loop.run_in_executor(pool, _seal_line, text)
        else:
            future = loop.create_future()
            future.set_result(seal_line(sealer, text, environment))
        lookahead.append((line, future))

    try:
        async with asyncio.TaskGroup() as group:
            lines = _lines_from(path, start)
            exhausted = False
            while not failure and not (stop is not None and stop.is_set()):
                while not exhausted and len(lookahead) < window:
                    item = next(lines, None)
                    if item is None:
                        exhausted = True
                    else:
                        submit(*item)
                if not lookahead:
                    break
                line, future = lookahead.popleft()
                sealed = await future
                watermark.started(line)
                end = line + 1
                if not isinstance(sealed, SealedMessage):
                    counts["skipped"] += 1
                    if sealed is not None:
                        log.warning(
                            "line %d is not a valid event (%s); skipped", line + 1, sealed.reason
                        )
                        if rejects is not None:
                            rejects.add(line, sealed)
                    watermark.finished(line)
                    continue
                if bucket is not None:
                    await bucket.acquire()
                await room_for(line)
                if failure:
                    break
                counts["in_flight"] += 1
                group.create_task(publish(line, sealed))
    finally:
        for _, future in lookahead:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    maybe_checkpoint(force=True)
    if failure:
        raise failure[0]
    return BackfillReport(
        start_line=start,
        end_line=end,
        published=counts["published"],
        skipped_invalid=counts["skipped"],
        retried=counts["retried"],
        seconds=time.monotonic() - started,
    )
