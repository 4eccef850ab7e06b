"""The two databases behind the pathway store: one schema, and what differs between them.

SQLite (embedded, the default: zero set-up, one writer at a time) and PostgreSQL
(production, several consumers at once) run the same SQL through DB-API 2; a dialect
supplies the connection, the parameter style, the lock that serialises the writers of one
pathway, and how to tell the database's errors apart (integrity, retryable, unavailable).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["SCHEMA", "Dialect", "PostgresDialect", "SqliteDialect", "placeholders"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS received_messages (
        message_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        received_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS events (
        event_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        record_key TEXT NOT NULL,
        event_type TEXT NOT NULL,
        correction TEXT NOT NULL,
        person_key TEXT NOT NULL,
        unit_org TEXT NOT NULL,
        municipality TEXT NOT NULL,
        sender_her_id INTEGER NOT NULL,
        stay_id TEXT,
        clinical_time TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        committed_at TEXT NOT NULL,
        digest TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (event_id, revision))""",
    "CREATE INDEX IF NOT EXISTS events_record ON events (record_key)",
    "CREATE INDEX IF NOT EXISTS events_stay ON events (unit_org, stay_id)",
    "CREATE INDEX IF NOT EXISTS events_person ON events (person_key)",
    """CREATE TABLE IF NOT EXISTS stays (
        unit_org TEXT NOT NULL,
        stay_id TEXT NOT NULL,
        person_key TEXT NOT NULL,
        municipality TEXT,
        admitted_at TEXT,
        discharged_at TEXT,
        length_of_stay_hours DOUBLE PRECISION,
        complete INTEGER NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (unit_org, stay_id))""",
    "CREATE INDEX IF NOT EXISTS stays_person ON stays (person_key)",
    """CREATE TABLE IF NOT EXISTS consultations (
        record_key TEXT PRIMARY KEY,
        person_key TEXT NOT NULL,
        service_area TEXT NOT NULL,
        unit_org TEXT NOT NULL,
        municipality TEXT NOT NULL,
        consultation_at TEXT NOT NULL,
        programme_consultation TEXT NOT NULL,
        status TEXT NOT NULL,
        birth_date TEXT NOT NULL,
        measured INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS consultations_person ON consultations (person_key)",
    """CREATE TABLE IF NOT EXISTS rejections (
        message_id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        sender_her_id INTEGER,
        event_type TEXT,
        unit_org TEXT,
        municipality TEXT,
        rejected_at TEXT NOT NULL,
        rule TEXT,
        field TEXT)""",
    "CREATE INDEX IF NOT EXISTS rejections_time ON rejections (rejected_at)",
]


@functools.lru_cache(maxsize=512)
def placeholders(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?)`` for ``rows`` rows of ``columns`` values (one row: ``(?, ?)``);
    a dialect's :meth:`~Dialect.sql` turns them into its parameter style."""
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


class Dialect(Protocol):
    #: Whether a batch of new events is cheaper in a few multi-row statements than in a
    #: few statements per event (a server a round trip away: yes; SQLite in-process: no).
    multi_row_batches: bool

    def connect(self) -> Any: ...
    def sql(self, statement: str) -> str: ...
    def lock_all(self, cursor: Any, keys: Sequence[str]) -> None: ...
    def is_integrity_error(self, error: BaseException) -> bool: ...
    def is_retryable(self, error: BaseException) -> bool: ...
    def is_unavailable(self, error: BaseException) -> bool: ...


class SqliteDialect:
    # Measured: a batch of 32 costs ~6 us more per event in multi-row statements than one
    # by one (no round trips to save; the wider statements cost SQLite more to run).
    multi_row_batches = False

    def __init__(self, path: Path) -> None:
        self._path = path

    def connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self._path, check_same_thread=False, isolation_level="DEFERRED"
        )
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before apply() returns and the message is acked.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        return connection

    def sql(self, statement: str) -> str:
        return statement

    def lock_all(self, cursor: Any, keys: Sequence[str]) -> None:
        # BEGIN IMMEDIATE takes the database write lock, which covers every key: one
        # writer at a time.
        if keys and not cursor.connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")

    def is_integrity_error(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError)

    def is_retryable(self, error: BaseException) -> bool:
        return False  # one writer at a time: no deadlocks to retry

    def is_unavailable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError)


class PostgresDialect:
    # Measured: per event 273 -> 95 us of client CPU and 600 -> 190 us of wall time.
    multi_row_batches = True

    def __init__(self, url: str) -> None:
        self._url = url

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self._url, connect_timeout=5)

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def lock_all(self, cursor: Any, keys: Sequence[str]) -> None:
        """The locks in the order given, in one round trip. PostgreSQL evaluates a
        volatile function in the select list after the ORDER BY sort, so they are taken
        in array order (and a deadlock, should one occur, is retried by the store)."""
        if keys:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(key, 0))"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS wanted(key, position)"
                " ORDER BY position",
                (list(keys),),
            )

    def is_integrity_error(self, error: BaseException) -> bool:
        import psycopg

        return isinstance(error, psycopg.errors.IntegrityError)

    def is_retryable(self, error: BaseException) -> bool:
        import psycopg

        return isinstance(
            error, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )

    def is_unavailable(self, error: BaseException) -> bool:
        import psycopg

        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
