"""Read the pathway store for the reports: read-only, SQLite or PostgreSQL, portable SQL.

The reports never write. SQLite is opened with ``mode=ro`` (a missing file is an error,
not a new empty store); PostgreSQL sessions are set read-only. The SQL is plain
``SELECT`` s with no date functions, so it runs unchanged on both; grouping happens in
Python over the rows (a report reads the store once; for a national store, add a
``--municipality`` filter, which is pushed into SQL).

Records are reduced to their **effective** content exactly as the projections are
(:func:`consumers.pathways.effective_content`): corrections applied, cancelled records
and corrections whose original has not arrived left out.

The counting rule (docs/REPORTS.md) is applied here, once, for every report: an event
(a record: its original and corrections) counts once, in its latest revision, if its
final state is committed; a cancelled record leaves the counts; a rejection counts only
while its message is still rejected, i.e. no message with its id has been committed
since (a dead letter replayed keeps its message id, so a replayed-then-committed message
is committed only, under its own municipality, and its rejection, recorded perhaps
before the message could be read and so without a municipality, is dropped). The
still-rejected filter runs in SQL (``NOT EXISTS`` against ``received_messages``).
Municipality numbers: a report counts every number under the one that covers it today.
The store keeps that today-number beside the number as sent (:mod:`consumers.refdata`),
so the municipality filter, the stays and the rejections read it in SQL; the records'
municipality comes from their effective content and is mapped with
:func:`contracts.events.municipalities.municipality_today`, the same mapping. A store
last mapped with another list (not opened since by this release's consumer; a version 1
store) is read under the shipped list all the same: every number is mapped in Python.
Each row keeps the number as sent where it differs, so a report can say that Bergen's
4601 includes events sent as 1201.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from consumers.pathways import StoredEventRow, effective_content
from consumers.refdata import MUNICIPALITY_REFERENCE
from contracts.connection import masked_url
from contracts.errors import StoreError
from contracts.events.municipalities import (
    municipality_list_version,
    municipality_today,
    numbers_covered_by,
)

__all__ = [
    "UNKNOWN_MUNICIPALITY",
    "EffectiveRecord",
    "RejectionRow",
    "ReportData",
    "StayRow",
    "StoredMessage",
    "load_report_data",
    "read_only_connection",
]

#: The municipality of a rejection that names none and cannot be attributed.
UNKNOWN_MUNICIPALITY = "ukjent"

_EVENTS = (
    "SELECT event_id, revision, record_key, correction, event_type, municipality,"
    " unit_org, sender_her_id, committed_at, payload FROM events"
)
# {municipality}: ``municipality_today = ?`` in a store mapped with the shipped list, else
# ``municipality IN (?, ...)`` over every number covered by today's.
_EVENTS_OF_MUNICIPALITY = (
    _EVENTS + " WHERE record_key IN (SELECT record_key FROM events WHERE {municipality})"  # noqa: S608
)
# Still rejected: no message with this id has been committed since (a replay keeps the id).
# {today}: the stored today-number, or the number as sent when it must be mapped here.
_REJECTIONS = (
    "SELECT reason, sender_her_id, event_type, unit_org, municipality, {today}, rejected_at"
    " FROM rejections WHERE NOT EXISTS"
    " (SELECT 1 FROM received_messages m WHERE m.message_id = rejections.message_id)"
)
_REJECTIONS_OF_MUNICIPALITY = _REJECTIONS + " AND {municipality}"
_STAYS = (
    "SELECT unit_org, stay_id, person_key, municipality, {today}, admitted_at, discharged_at,"
    " length_of_stay_hours, complete, detail FROM stays"
)
_STAYS_OF_MUNICIPALITY = _STAYS + " WHERE {municipality}"

_CLINICAL_TIME_FIELD = {
    "hst.consultation": "consultation_at",
    "kad.admission": "admitted_at",
    "kad.discharge": "discharged_at",
}


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class StoredMessage:
    """One event in its final committed state, as the daily counts see it: the
    municipality of its effective content, the commit time of its latest revision."""

    municipality: str
    unit_org: str
    sender_her_id: int
    committed_at: datetime
    #: The number as sent, where it is not today's (1201 for Bergen's 4601).
    municipality_as_sent: str | None = None


@dataclass(frozen=True)
class EffectiveRecord:
    """A record after its corrections: what the guideline figures count."""

    record_key: str
    event_type: str
    person_key: str
    municipality: str
    unit_org: str
    sender_her_id: int
    clinical_time: datetime
    registered_at: datetime
    content: Mapping[str, Any]
    #: When the record's latest revision was committed.
    committed_at: datetime
    #: When its first revision was committed: how late the event reached the register.
    first_committed_at: datetime
    #: The number as sent, where it is not today's ``municipality`` (1201 for 4601).
    municipality_as_sent: str | None = None

    @property
    def birth_date(self) -> date:
        return date.fromisoformat(str(self.content["person"]["birth_date"]))


@dataclass(frozen=True)
class RejectionRow:
    reason: str
    sender_her_id: int | None
    event_type: str | None
    unit_org: str | None
    municipality: str | None
    rejected_at: datetime
    #: The number as sent, where it is not today's ``municipality``.
    municipality_as_sent: str | None = None


@dataclass(frozen=True)
class StayRow:
    unit_org: str
    stay_id: str
    person_key: str
    municipality: str | None
    admitted_at: datetime | None
    discharged_at: datetime | None
    length_of_stay_hours: float | None
    complete: bool
    detail: Mapping[str, Any]
    #: The number as sent, where it is not today's ``municipality``.
    municipality_as_sent: str | None = None


@dataclass(frozen=True)
class ReportData:
    records: tuple[EffectiveRecord, ...]
    rejections: tuple[RejectionRow, ...]
    stays: tuple[StayRow, ...]

    @cached_property
    def messages(self) -> tuple[StoredMessage, ...]:
        """One counted message per event in its final state (the counting rule)."""
        return tuple(
            StoredMessage(
                r.municipality, r.unit_org, r.sender_her_id, r.committed_at, r.municipality_as_sent
            )
            for r in self.records
        )

    @cached_property
    def sender_municipalities(self) -> Mapping[int, frozenset[str]]:
        """Which municipalities each sender HER-id has committed events for."""
        result: dict[int, set[str]] = defaultdict(set)
        for record in self.records:
            result[record.sender_her_id].add(record.municipality)
        return {sender: frozenset(municipalities) for sender, municipalities in result.items()}

    @cached_property
    def attributed_rejections(self) -> tuple[tuple[RejectionRow, str], ...]:
        """Each rejection with the municipality it counts under: its own; else, for one
        recorded before the event could be read, the sender's municipality when all the
        sender's committed events belong to one; else ``ukjent``."""
        attributed = []
        for rejection in self.rejections:
            municipality = rejection.municipality
            if not municipality:
                known = self.sender_municipalities.get(rejection.sender_her_id or -1, frozenset())
                municipality = next(iter(known)) if len(known) == 1 else UNKNOWN_MUNICIPALITY
            attributed.append((rejection, municipality))
        return tuple(attributed)


@contextmanager
def read_only_connection(url: str) -> Iterator[tuple[Any, str]]:
    """A DB-API connection and its parameter placeholder (``?`` or ``%s``).

    ``postgresql://...`` opens PostgreSQL (read-only session); ``sqlite:///path`` or a
    plain path opens SQLite read-only. A missing SQLite file, a database that cannot be
    reached and one that is not a kpr store (a query fails on it) raise
    :class:`StoreError` naming the store, its password masked.
    """
    shown = masked_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            connection: Any = psycopg.connect(url, connect_timeout=5)
        except psycopg.Error as error:
            raise _store_error(shown, error) from None
        connection.read_only = True
        placeholder = "%s"
    else:
        path = Path(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)
        if not path.is_file():
            raise StoreError(
                f"no pathway store at {path}",
                "run `kpr consume` to fill one, or set KPR_STORE_URL / --store-url",
            )
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        placeholder = "?"
    try:
        yield connection, placeholder
    except Exception as error:
        if isinstance(error, sqlite3.Error) or type(error).__module__.startswith("psycopg"):
            raise _store_error(shown, error) from None
        raise
    finally:
        connection.close()


def _store_error(shown: str, error: BaseException) -> StoreError:
    said = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return StoreError(
        f"cannot read the pathway store {shown}: {said}",
        "is it a kpr pathway store, and is the database running?",
    )


def load_report_data(url: str, *, municipality: str | None = None) -> ReportData:
    """Everything the reports need, read in one read-only session."""
    with read_only_connection(url) as (connection, placeholder):
        cursor = connection.cursor()
        mapped = _mapped_with_shipped_list(connection, placeholder)
        # The stored today-number where it can be trusted; else the number as sent,
        # mapped below (municipality_today of a today-number is itself).
        today = "municipality_today" if mapped else "municipality"
        params: tuple[str, ...] = ()
        where = ""
        if municipality is not None:
            wanted = municipality_today(municipality)
            if mapped:
                params, where = (wanted,), f"municipality_today = {placeholder}"
            else:
                # Every number that counts under today's (Bergen 4601: 1201 too).
                params = tuple(sorted(numbers_covered_by(wanted)))
                where = f"municipality IN ({', '.join([placeholder] * len(params))})"

        def of_municipality(sql: str) -> str:
            return sql.format(today=today, municipality=where)

        if municipality is None:
            cursor.execute(_EVENTS)
        else:
            # Whole records: a correction may name another municipality than its original.
            cursor.execute(of_municipality(_EVENTS_OF_MUNICIPALITY), params)
        by_record: dict[str, list[StoredEventRow]] = defaultdict(list)
        facts: dict[str, tuple[str, int]] = {}
        latest: dict[str, tuple[int, str, datetime]] = {}
        first: dict[str, datetime] = {}
        for row in cursor.fetchall():
            (
                event_id,
                revision,
                record_key,
                correction,
                event_type,
                _municipality,
                unit,
                sender,
                committed_at,
                payload,
            ) = row
            revision_key = (int(revision), str(event_id), _required_time(committed_at))
            if record_key not in latest or revision_key[:2] > latest[record_key][:2]:
                latest[record_key] = revision_key
            if record_key not in first or revision_key[2] < first[record_key]:
                first[record_key] = revision_key[2]
            by_record[record_key].append(
                StoredEventRow(
                    event_id,
                    int(revision),
                    record_key,
                    correction,
                    event_type,
                    orjson.loads(payload),
                )
            )
            if correction == "original":
                facts[record_key] = (unit, int(sender))
        records = [
            record
            for key, rows in by_record.items()
            if (record := _effective(key, rows, facts, (first[key], latest[key][2]))) is not None
            and (municipality is None or record.municipality == municipality_today(municipality))
        ]

        cursor.execute(
            of_municipality(_REJECTIONS_OF_MUNICIPALITY if municipality else _REJECTIONS),
            params,
        )
        rejections = [
            RejectionRow(
                reason,
                sender,
                event_type,
                unit,
                _today(muni_today),
                _required_time(at),
                _as_sent(muni, _today(muni_today)),
            )
            for reason, sender, event_type, unit, muni, muni_today, at in cursor.fetchall()
        ]
        if municipality is not None:
            # Rejections without a municipality (the event could not be read) are kept:
            # quality.py attributes them through the sender's committed municipalities.
            cursor.execute(of_municipality(_REJECTIONS) + " AND municipality IS NULL")
            rejections += [
                RejectionRow(reason, sender, event_type, unit, None, _required_time(at))
                for reason, sender, event_type, unit, _muni, _muni_today, at in cursor.fetchall()
            ]

        cursor.execute(of_municipality(_STAYS_OF_MUNICIPALITY if municipality else _STAYS), params)
        stays = [
            StayRow(
                unit,
                stay,
                person,
                _today(muni_today),
                parse_time(admitted),
                parse_time(discharged),
                None if hours is None else float(hours),
                bool(complete),
                orjson.loads(detail),
                _as_sent(muni, _today(muni_today)),
            )
            for (
                unit,
                stay,
                person,
                muni,
                muni_today,
                admitted,
                discharged,
                hours,
                complete,
                detail,
            ) in cursor.fetchall()
        ]
        connection.commit()
    return ReportData(tuple(records), tuple(rejections), tuple(stays))


def _mapped_with_shipped_list(connection: Any, placeholder: str) -> bool:
    """Whether the store's today-numbers were mapped with the list this release ships
    (a version 1 store has no ``kpr_reference`` table: no)."""
    cursor = connection.cursor()
    try:
        cursor.execute(
            f"SELECT version FROM kpr_reference WHERE name = {placeholder}",  # noqa: S608
            (MUNICIPALITY_REFERENCE,),
        )
        row = cursor.fetchone()
    except Exception as error:
        if not (isinstance(error, sqlite3.Error) or type(error).__module__.startswith("psycopg")):
            raise
        connection.rollback()  # PostgreSQL: the failed statement ended the transaction
        return False
    return row is not None and row[0] == municipality_list_version()


def _required_time(value: Any) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError("a stored time is missing")
    return parsed


def _today(number: str | None) -> str | None:
    return None if number is None else municipality_today(number)


def _as_sent(number: str | None, today: str | None) -> str | None:
    """The number as sent, where it is not today's."""
    return number if number is not None and number != today else None


def _effective(
    record_key: str,
    rows: list[StoredEventRow],
    facts: Mapping[str, tuple[str, int]],
    committed: tuple[datetime, datetime],
) -> EffectiveRecord | None:
    content = effective_content(rows)
    if content is None:
        return None
    event_type = str(content["event_type"])
    municipalities = content.get("service_municipalities")
    municipality = str(municipalities[0] if municipalities else content.get("service_municipality"))
    unit_org, sender = facts.get(record_key, (content["unit"]["org_number"], 0))
    return EffectiveRecord(
        record_key=record_key,
        event_type=event_type,
        person_key=str(content["person"]["person_key"]),
        municipality=municipality_today(municipality),
        unit_org=str(content["unit"]["org_number"] or unit_org),
        sender_her_id=int(content.get("sender_her_id") or sender),
        clinical_time=_required_time(content[_CLINICAL_TIME_FIELD[event_type]]),
        registered_at=_required_time(content["registered_at"]),
        content=content,
        committed_at=committed[1],
        first_committed_at=committed[0],
        municipality_as_sent=_as_sent(municipality, municipality_today(municipality)),
    )
