"""The pathway store: dedup and apply, in one transaction, on SQLite or PostgreSQL.

One SQL implementation serves both databases through DB-API 2 (``sqlite3`` and
``psycopg``); blocking calls run in a worker thread so the event loop keeps consuming.

``apply`` is the only write path. In one transaction it

1. suppresses a message id seen before (redelivery, resend, replay) -> ``DUPLICATE``;
2. compares an already-stored event id + revision: same content -> ``DUPLICATE``,
   other content -> :class:`~contracts.errors.ConflictingDuplicate`;
3. stores the event and the message id, and recomputes the projections it touches
   (:mod:`consumers.projections`).

The caller acks only after ``apply`` returns, so a crash between commit and ack is a
redelivery that step 1 suppresses. Concurrent consumers on PostgreSQL serialise on a
transaction-scoped advisory lock per pathway, so two halves of one stay committed at
the same moment cannot overwrite each other's projection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum, unique
from pathlib import Path
from typing import Any, Protocol, Self

from consumers.database import (
    Dialect,
    PostgresDialect,
    SqliteDialect,
    create_schema,
    opening_error,
    placeholders,
)
from consumers.projections import Projections
from consumers.queries import PathwayQueries, SenderActivity, StoreSummary, iso
from contracts.envelope import SignatureForm
from contracts.errors import ConflictingDuplicate, StoreUnavailable
from contracts.events.municipalities import municipality_today
from contracts.letter import LetterForm
from contracts.resources import AsyncResource

__all__ = [
    "ApplyResult",
    "EventRecord",
    "PathwayStore",
    "PostgresStore",
    "RejectionRecord",
    "SenderActivity",
    "SqlStore",
    "SqliteStore",
    "StoreSummary",
    "open_store",
]


@unique
class ApplyResult(StrEnum):
    COMMITTED = "committed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class EventRecord:
    """What the store keeps of one event. It holds no national id: ``person_key`` is
    the pseudonym, and ``payload`` is the event with the id replaced by it."""

    message_id: str
    event_id: str
    revision: int
    record_key: str
    event_type: str
    correction: str
    person_key: str
    unit_org: str
    municipality: str
    sender_her_id: int
    stay_id: str | None
    clinical_time: datetime
    registered_at: datetime
    digest: str
    payload: bytes
    #: The letter's wire form and what its signature covers (metrics labels; not stored).
    letter_form: LetterForm = LetterForm.JSON
    signature_form: SignatureForm = SignatureForm.ATTRIBUTES


@dataclass(frozen=True)
class RejectionRecord:
    """A dead-lettered message, for data-quality reports: no content, no personal data.

    Keyed by message id, so recording the same rejection twice (a redelivery after a
    crash) counts once.
    """

    message_id: str
    reason: str
    sender_her_id: int | None
    event_type: str | None
    unit_org: str | None
    municipality: str | None
    rejected_at: datetime
    rule: str | None = None
    field: str | None = None


class PathwayStore(Protocol):
    async def apply(self, record: EventRecord) -> ApplyResult: ...
    async def record_rejection(self, rejection: RejectionRecord) -> None: ...
    async def summary(self) -> StoreSummary: ...
    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...


MAX_GROUP_COMMIT = 128
#: With a linger, a commit waits for this many events (or the linger) before it starts.
DEFAULT_LINGER_BATCH = 32


class _Mode(Enum):
    TOGETHER = "together"
    ONE_BY_ONE = "one-by-one"
    ISOLATED = "isolated"


class _SeenBefore(Exception):
    """A batch holds a message or event stored before: it cannot be applied together."""


_EVENT_COLUMNS = (
    "event_id, revision, record_key, event_type, correction, person_key, unit_org,"
    " municipality, municipality_today, sender_her_id, stay_id, clinical_time,"
    " registered_at, committed_at, digest, payload"
)


# Only placeholders are formatted into these statements; values are always parameters.
@functools.lru_cache(maxsize=256)
def _insert_received(rows: int) -> str:
    return (
        "INSERT INTO received_messages (message_id, event_id, revision, received_at)"  # noqa: S608
        f" VALUES {placeholders(rows, 4)} ON CONFLICT (message_id) DO NOTHING"
    )


@functools.lru_cache(maxsize=256)
def _insert_events(rows: int) -> str:
    return (
        f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {placeholders(rows, 16)}"  # noqa: S608
        " ON CONFLICT (event_id, revision) DO NOTHING"
    )


def _received_row(record: EventRecord, received_at: str | None) -> tuple[Any, ...]:
    return (record.message_id, record.event_id, record.revision, received_at)


def _event_row(record: EventRecord, committed_at: str | None) -> tuple[Any, ...]:
    return (
        record.event_id,
        record.revision,
        record.record_key,
        record.event_type,
        record.correction,
        record.person_key,
        record.unit_org,
        record.municipality,
        municipality_today(record.municipality),
        record.sender_her_id,
        record.stay_id,
        iso(record.clinical_time),
        iso(record.registered_at),
        committed_at,
        record.digest,
        record.payload.decode("utf-8"),
    )


def _lock_keys(record: EventRecord) -> list[str]:
    """The pathways an event touches: its record, and its stay if it has one."""
    keys = [f"record:{record.record_key}"]
    if record.stay_id is not None:
        keys.append(f"stay:{record.unit_org}:{record.stay_id}")
    return keys


class SqlStore(PathwayQueries, AsyncResource):
    """The shared implementation; a dialect supplies connection and SQL differences."""

    def __init__(
        self, dialect: Dialect, *, linger_s: float = 0.0, linger_batch: int = DEFAULT_LINGER_BATCH
    ) -> None:
        """``linger_s``: how long a group commit may wait for ``linger_batch`` events to
        gather before it starts (0: it starts at once with what is there). Under a
        trickle of deliveries a short linger turns one commit (and one fsync, one ack
        frame, one wake-up of the writer thread) per message into one per batch, at
        the cost of up to ``linger_s`` of latency per event."""
        if linger_s < 0 or linger_batch < 1:
            raise ValueError("linger_s must be >= 0 and linger_batch >= 1")
        self._dialect = dialect
        self._projections = Projections(dialect)
        self._linger_s = linger_s
        self._linger_batch = min(linger_batch, MAX_GROUP_COMMIT)
        self._batch_ready = asyncio.Event()
        self._connection: Any = None
        # One connection, used from one worker thread at a time.
        self._lock = threading.Lock()
        self._closed = False
        self._pending: list[tuple[EventRecord, asyncio.Future[ApplyResult]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Transactions that applied events (fewer than applies when group commit works).
        self.group_commits = 0
        #: Batches committed together (every event new: multi-row inserts).
        self.batched_commits = 0
        #: Batches committed event by event without savepoints (a duplicate, no failure).
        self.optimistic_commits = 0

    async def __aenter__(self) -> Self:
        """Open the store: a store that cannot be opened, is not a kpr store or is of a
        newer schema is a :class:`StoreError` naming it (later losses of the connection
        are :class:`StoreUnavailable`, retried)."""
        try:
            await self._run(lambda connection: None)
        except Exception as error:
            cause = error.__cause__ if isinstance(error, StoreUnavailable) else error
            raise opening_error(self._dialect, cause or error) from None
        return self

    async def aclose(self) -> None:
        """Finish the applies already handed in, then close; closing twice is harmless."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)
        self._closed = True
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                with contextlib.suppress(Exception):  # a broken connection is closed already
                    connection.close()

    def _ensure_connection(self) -> Any:
        if self._connection is None:
            connection = self._dialect.connect()
            try:
                cursor = connection.cursor()
                # Several consumers starting at once must not race on CREATE TABLE.
                self._dialect.lock_all(cursor, ["schema"])
                create_schema(cursor, self._dialect)
                connection.commit()
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    async def _run(self, work: Callable[[Any], Any]) -> Any:
        if self._closed:
            raise RuntimeError("the store is closed")
        return await asyncio.to_thread(self._run_sync, work)

    def _run_sync(self, work: Callable[[Any], Any]) -> Any:
        with self._lock:
            try:
                connection = self._ensure_connection()
                return work(connection)
            except Exception as error:
                if self._dialect.is_unavailable(error):
                    self._drop_connection()
                    raise StoreUnavailable("the pathway store cannot commit now") from error
                raise

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it is broken already
                connection.close()

    async def ping(self) -> None:
        await self._run(lambda connection: connection.cursor().execute("SELECT 1"))

    async def apply(self, record: EventRecord) -> ApplyResult:
        """Dedup and apply one event; returns once it is committed.

        Group commit: applies that arrive while a transaction is running (or while the
        next one lingers, see :class:`SqlStore`) wait and go into the next one together,
        so one commit - one fsync on SQLite - serves many deliveries. Each caller still
        gets its own result or error, and still only after the commit that contains it.
        """
        if self._closed:
            raise RuntimeError("the store is closed")
        future: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if len(self._pending) >= self._linger_batch:
            self._batch_ready.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        while self._pending:
            await self._linger()
            batch = self._pending[:MAX_GROUP_COMMIT]
            del self._pending[: len(batch)]
            records = [record for record, _ in batch]
            try:
                results: list[ApplyResult | Exception] = await self._run(
                    functools.partial(self._apply_batch_sync, records=records)
                )
            except Exception as error:  # the whole transaction failed: tell every caller
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller was cancelled; its record is still decided
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _linger(self) -> None:
        """Wait (at most ``linger_s``) until ``linger_batch`` events are pending."""
        if self._linger_s <= 0 or len(self._pending) >= self._linger_batch:
            return
        self._batch_ready.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._batch_ready.wait(), self._linger_s)

    def _apply_batch_sync(
        self, connection: Any, *, records: Sequence[EventRecord]
    ) -> list[ApplyResult | Exception]:
        """The batch in one transaction, in the cheapest way that holds for it:

        1. together, where the dialect gains by it (PostgreSQL): one multi-row insert per
           table and the projections per pathway (the common case: every event new) - a
           handful of statements, and round trips, for the whole batch;
        2. if one of its messages or events was stored before, the batch is rolled back and
           runs event by event, each finding its own duplicate;
        3. if one event fails (a conflicting duplicate), everything is rolled back once
           more and the batch runs with a savepoint around each event, so that only that
           one fails.
        """
        if self._dialect.multi_row_batches:
            try:
                results = self._commit_batch(connection, records, mode=_Mode.TOGETHER)
                self.batched_commits += 1
                return results
            except _SeenBefore:
                pass
        try:
            results = self._commit_batch(connection, records, mode=_Mode.ONE_BY_ONE)
            self.optimistic_commits += 1
            return results
        except Exception as error:
            one_event_failed = isinstance(
                error, ConflictingDuplicate
            ) or self._dialect.is_integrity_error(error)
            if not one_event_failed:
                raise
        return self._commit_batch(connection, records, mode=_Mode.ISOLATED)

    def _commit_batch(
        self, connection: Any, records: Sequence[EventRecord], *, mode: _Mode
    ) -> list[ApplyResult | Exception]:
        for attempt in range(3):
            try:
                results = self._apply_batch_once(connection, records, mode=mode)
                connection.commit()
                self.group_commits += 1
                return results
            except Exception as error:
                connection.rollback()
                # A deadlock or serialisation failure between concurrent consumers aborts
                # the whole transaction: run the batch again.
                if self._dialect.is_retryable(error) and attempt < 2:
                    continue
                raise
        raise AssertionError("unreachable")

    def _apply_batch_once(
        self, connection: Any, records: Sequence[EventRecord], *, mode: _Mode
    ) -> list[ApplyResult | Exception]:
        cursor = connection.cursor()
        # Every lock the batch needs, in one global order: two consumers' batches can
        # wait for each other but never deadlock.
        self._dialect.lock_all(
            cursor, sorted({key for record in records for key in _lock_keys(record)})
        )
        if mode is _Mode.TOGETHER:
            return self._apply_together(cursor, records)
        if mode is _Mode.ONE_BY_ONE:
            return [self._apply_once(connection, record) for record in records]
        return [self._apply_in_savepoint(cursor, connection, record) for record in records]

    def _apply_together(
        self, cursor: Any, records: Sequence[EventRecord]
    ) -> list[ApplyResult | Exception]:
        """Every event of the batch new: insert them all, then project each pathway once.

        Raises :class:`_SeenBefore` (the caller rolls back) if a message id or an event id
        + revision was there already, or occurs twice in the batch: then some event needs
        the one-by-one path's duplicate or conflict decision.
        """
        sql = self._dialect.sql
        now = iso(datetime.now(UTC))
        for insert, row in ((_insert_received, _received_row), (_insert_events, _event_row)):
            cursor.execute(
                sql(insert(len(records))),
                [value for record in records for value in row(record, now)],
            )
            if cursor.rowcount != len(records):
                raise _SeenBefore
        stays = dict.fromkeys(
            (record.unit_org, record.stay_id) for record in records if record.stay_id is not None
        )
        for unit_org, stay_id in stays:
            self._projections.stay(cursor, unit_org, stay_id)
        consultations = dict.fromkeys(
            record.record_key for record in records if record.event_type == "hst.consultation"
        )
        if consultations:
            self._projections.consultations(cursor, list(consultations))
        return [ApplyResult.COMMITTED] * len(records)

    def _apply_in_savepoint(
        self, cursor: Any, connection: Any, record: EventRecord
    ) -> ApplyResult | Exception:
        for attempt in range(2):
            cursor.execute("SAVEPOINT apply_one")
            try:
                result = self._apply_once(connection, record)
            except ConflictingDuplicate as conflict:
                cursor.execute("ROLLBACK TO SAVEPOINT apply_one")
                return conflict
            except Exception as error:
                cursor.execute("ROLLBACK TO SAVEPOINT apply_one")
                # A unique key taken between our statements (the inserts do nothing on a
                # conflict, so this is rare): run the event once more and it shows.
                if self._dialect.is_integrity_error(error) and attempt == 0:
                    continue
                raise
            cursor.execute("RELEASE SAVEPOINT apply_one")
            return result
        raise AssertionError("unreachable")

    def _apply_once(self, connection: Any, record: EventRecord) -> ApplyResult:
        sql = self._dialect.sql
        cursor = connection.cursor()
        now = iso(datetime.now(UTC))
        # Insert first, look only on a conflict: two statements per new event instead of
        # two reads and two writes. A concurrent consumer's uncommitted insert of the same
        # key makes ours wait for its outcome, then do nothing: a duplicate, not an error.
        cursor.execute(sql(_insert_received(1)), _received_row(record, now))
        if cursor.rowcount == 0:
            return ApplyResult.DUPLICATE
        cursor.execute(sql(_insert_events(1)), _event_row(record, now))
        if cursor.rowcount == 0:
            # This event revision is stored already (under another message id): the same
            # content is a duplicate, other content a conflict - and then this savepoint
            # (or the optimistic batch) is rolled back, message id included.
            cursor.execute(
                sql("SELECT digest FROM events WHERE event_id = ? AND revision = ?"),
                (record.event_id, record.revision),
            )
            (stored_digest,) = cursor.fetchone()
            if stored_digest != record.digest:
                raise ConflictingDuplicate(
                    "an event with this event id and revision was stored with other content"
                )
            return ApplyResult.DUPLICATE
        if record.stay_id is not None:
            self._projections.stay(cursor, record.unit_org, record.stay_id)
        if record.event_type == "hst.consultation":
            self._projections.consultations(cursor, [record.record_key])
        return ApplyResult.COMMITTED

    async def record_rejection(self, rejection: RejectionRecord) -> None:
        def write(connection: Any) -> None:
            cursor = connection.cursor()
            cursor.execute(
                self._dialect.sql(
                    "INSERT INTO rejections (message_id, reason, sender_her_id, event_type,"
                    " unit_org, municipality, municipality_today, rejected_at, rule, field)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (message_id) DO UPDATE SET reason = excluded.reason,"
                    " sender_her_id = excluded.sender_her_id, event_type = excluded.event_type,"
                    " unit_org = excluded.unit_org, municipality = excluded.municipality,"
                    " municipality_today = excluded.municipality_today,"
                    " rejected_at = excluded.rejected_at, rule = excluded.rule,"
                    " field = excluded.field"
                ),
                (
                    rejection.message_id,
                    rejection.reason,
                    rejection.sender_her_id,
                    rejection.event_type,
                    rejection.unit_org,
                    rejection.municipality,
                    None
                    if rejection.municipality is None
                    else municipality_today(rejection.municipality),
                    iso(rejection.rejected_at),
                    rejection.rule,
                    rejection.field,
                ),
            )
            connection.commit()

        await self._run(write)


class SqliteStore(SqlStore):
    def __init__(
        self, path: Path, *, linger_s: float = 0.0, linger_batch: int = DEFAULT_LINGER_BATCH
    ) -> None:
        super().__init__(SqliteDialect(path), linger_s=linger_s, linger_batch=linger_batch)


class PostgresStore(SqlStore):
    def __init__(
        self, url: str, *, linger_s: float = 0.0, linger_batch: int = DEFAULT_LINGER_BATCH
    ) -> None:
        super().__init__(PostgresDialect(url), linger_s=linger_s, linger_batch=linger_batch)


def open_store(
    url: str, *, linger_s: float = 0.0, linger_batch: int = DEFAULT_LINGER_BATCH
) -> SqlStore:
    """``postgresql://...`` -> PostgreSQL; ``sqlite:///path`` or a plain path -> SQLite.
    ``linger_s`` and ``linger_batch``: the group commit's linger (:class:`SqlStore`)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, linger_s=linger_s, linger_batch=linger_batch)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SqliteStore(Path(path), linger_s=linger_s, linger_batch=linger_batch)
