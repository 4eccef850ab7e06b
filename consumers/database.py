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

from consumers.refdata import add_today_columns, remap_municipalities
from contracts.connection import masked_url
from contracts.errors import StoreError

__all__ = [
    "SCHEMA",
    "STORE_SCHEMA_VERSION",
    "Dialect",
    "PostgresDialect",
    "SqliteDialect",
    "create_schema",
    "opening_error",
    "placeholders",
]

#: The store's schema version, kept in ``kpr_schema``. A store of a newer version is
#: never written to by this code (its meaning of a column may have changed). Version 2
#: keeps each municipality's today-number beside the number as sent
#: (:mod:`consumers.refdata`); a version 1 store is upgraded in place on open.
STORE_SCHEMA_VERSION = 2

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS kpr_schema (version INTEGER NOT NULL)",
    # Which shipped reference list mapped the stored rows (consumers.refdata).
    """CREATE TABLE IF NOT EXISTS kpr_reference (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL)""",
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
        municipality_today TEXT,
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
        municipality_today TEXT,
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
        municipality_today TEXT,
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
        municipality_today TEXT,
        rejected_at TEXT NOT NULL,
        rule TEXT,
        field TEXT)""",
    "CREATE INDEX IF NOT EXISTS rejections_time ON rejections (rejected_at)",
]
# After the upgrade of a version 1 store has added the column they index.
_TODAY_INDEXES = [
    "CREATE INDEX IF NOT EXISTS events_municipality_today ON events (municipality_today)",
    "CREATE INDEX IF NOT EXISTS stays_municipality_today ON stays (municipality_today)",
]


_KPR_TABLES = frozenset({"received_messages", "events", "stays", "consultations", "rejections"})
# Columns a kpr events table has had from the first version on: a table named "events"
# without them belongs to something else.
_EVENT_COLUMNS = frozenset({"event_id", "revision", "record_key", "person_key", "payload"})
STORE_HINT = "point KPR_STORE_URL (or --store-url) at a kpr pathway store, or at a new file"


def create_schema(cursor: Any, dialect: Dialect) -> None:
    """Create the tables, after checking that the database is a kpr store of a version
    this code knows (or empty). Raises :class:`StoreError` otherwise, before writing."""
    tables = dialect.table_names(cursor)
    if "kpr_schema" in tables:
        cursor.execute("SELECT MAX(version) FROM kpr_schema")
        (version,) = cursor.fetchone()
        if version is not None and version > STORE_SCHEMA_VERSION:
            raise StoreError(
                f"the pathway store {dialect.shown} has schema version {version}, newer "
                f"than this kpr-stream's {STORE_SCHEMA_VERSION}; nothing was written",
                "run the kpr-stream version that wrote it (or a newer one)",
            )
    elif tables and not tables & _KPR_TABLES:
        raise StoreError(
            f"{dialect.shown} is not a kpr pathway store (it holds other tables)", STORE_HINT
        )
    if "events" in tables:
        cursor.execute("SELECT * FROM events WHERE 1 = 0")
        columns = {column[0] for column in cursor.description}
        if not columns >= _EVENT_COLUMNS:
            raise StoreError(
                f"{dialect.shown} is not a kpr pathway store (its events table has other columns)",
                STORE_HINT,
            )
    for statement in SCHEMA:
        cursor.execute(statement)
    add_today_columns(cursor)
    for statement in _TODAY_INDEXES:
        cursor.execute(statement)
    cursor.execute("SELECT COUNT(*) FROM kpr_schema")
    if cursor.fetchone()[0] == 0:
        cursor.execute(
            dialect.sql("INSERT INTO kpr_schema (version) VALUES (?)"), (STORE_SCHEMA_VERSION,)
        )
    else:
        cursor.execute(
            dialect.sql("UPDATE kpr_schema SET version = ? WHERE version < ?"),
            (STORE_SCHEMA_VERSION, STORE_SCHEMA_VERSION),
        )
    remap_municipalities(cursor, dialect)


def opening_error(dialect: Dialect, error: BaseException) -> StoreError:
    """What went wrong opening a store, as one :class:`StoreError` naming it (password
    masked) and what to do. The driver's text is kept: it is the database's own word."""
    if isinstance(error, StoreError):
        return error
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, OSError):
        return StoreError(
            f"cannot create the pathway store {dialect.shown}: {error.strerror or said}",
            "check that its folder can be created and written",
        )
    if isinstance(error, sqlite3.DatabaseError):
        if "not a database" in said or "malformed" in said:
            return StoreError(
                f"{dialect.shown} is not a readable SQLite database ({said}): corrupt, "
                "truncated or another kind of file",
                "restore it from a backup, or " + STORE_HINT,
            )
        if "readonly" in said or "unable to open" in said:
            return StoreError(
                f"cannot open the pathway store {dialect.shown} for writing: {said}",
                "check the file and its folder are writable (and it is not a folder)",
            )
    return StoreError(
        f"cannot open the pathway store {dialect.shown}: {said}",
        "is the database running, and the URL's host, port, user, password and name right?",
    )


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

    #: How the store is named in messages (a path, or a URL with its password masked).
    shown: str

    def connect(self) -> Any: ...
    def sql(self, statement: str) -> str: ...
    def table_names(self, cursor: Any) -> set[str]: ...
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
        self.shown = str(path)

    def table_names(self, cursor: Any) -> set[str]:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in cursor.fetchall()}

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
        self.shown = masked_url(url)

    def table_names(self, cursor: Any) -> set[str]:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {name for (name,) in cursor.fetchall()}

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
