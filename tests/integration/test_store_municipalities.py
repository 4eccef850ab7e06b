"""The store keeps both municipality numbers, on SQLite and on PostgreSQL: the number as
sent and the one that covers it today, mapped again on open when a release ships a new
list (a 2028 reform needs only the list), and a version 1 store is upgraded in place."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from consumers import Pseudonymiser, open_store, pseudonymise
from consumers.database import STORE_SCHEMA_VERSION
from consumers.store import RejectionRecord
from contracts.events import HstConsultation, KadAdmission, KadDischarge
from contracts.events.municipalities import municipality_list_version, municipality_today
from contracts.synth import generate_events
from kpr.reports.queries import load_report_data

PSEUDONYMS = Pseudonymiser(b"m" * 32)
# Back-filled events of 2017-2019: Bergen 1201, Trondheim 1601, Hamar 0403 ... as sent.
EVENTS = generate_events(60, seed=5, until=datetime(2019, 12, 31, tzinfo=UTC))
TABLES = ("events", "stays", "consultations", "rejections")


def _sql(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` on the store, committed; the last one's rows."""
    if url.startswith("postgresql://"):
        with psycopg.connect(url, autocommit=True) as connection:
            rows: list[Any] = []
            for statement in statements:
                cursor = connection.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            return rows
    import sqlite3

    connection = sqlite3.connect(url)
    try:
        for statement in statements:
            rows = connection.execute(statement).fetchall()
        connection.commit()
        return rows
    finally:
        connection.close()


def _sent(event: Any) -> str:
    if isinstance(event, HstConsultation):
        return str(event.service_municipality)
    assert isinstance(event, KadAdmission | KadDischarge)
    return str(event.service_municipalities[0])


async def _fill(url: str) -> None:
    async with open_store(url) as store:
        for event in EVENTS:
            await store.apply(pseudonymise(event, PSEUDONYMS, f"m-{event.event_id}"))
        await store.record_rejection(
            RejectionRecord("r-1", "contract", 90001, "hst.consultation", None, "1201", _NOW)
        )


_NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _pairs(url: str, table: str) -> set[tuple[str, str]]:
    rows = _sql(url, f"SELECT municipality, municipality_today FROM {table}")
    return {(str(sent), str(today)) for sent, today in rows if sent is not None}


async def test_every_row_keeps_the_number_as_sent_and_todays(store_url: str) -> None:
    await _fill(store_url)
    sent = Counter(_sent(e) for e in EVENTS)
    assert {"1201", "1601"} <= set(sent)  # the old numbers are what was sent
    stored = _sql(store_url, "SELECT municipality, municipality_today FROM events")
    assert Counter(str(number) for number, _ in stored) == sent
    assert {(str(a), str(b)) for a, b in stored} == {(n, municipality_today(n)) for n in sent}
    assert ("1201", "4601") in _pairs(store_url, "events")
    for table in TABLES:
        assert all(
            today == municipality_today(number) for number, today in _pairs(store_url, table)
        )
        assert _pairs(store_url, table)
    assert _sql(store_url, "SELECT name, version FROM kpr_reference") == [
        ("municipalities", municipality_list_version())
    ]


async def test_the_report_groups_by_the_stored_number_and_filters_in_sql(store_url: str) -> None:
    await _fill(store_url)
    # A stored today-number the code would not compute: the report must be reading it.
    _sql(store_url, "UPDATE stays SET municipality_today = '9999' WHERE municipality = '1201'")
    data = load_report_data(store_url, municipality="9999")
    assert data.stays
    assert {stay.municipality for stay in data.stays} == {"9999"}
    assert {stay.municipality_as_sent for stay in data.stays} == {"1201"}
    bergen = load_report_data(store_url, municipality="1201")  # an old number selects today's
    assert {r.municipality for r in bergen.records} == {"4601"}
    assert {r.municipality_as_sent for r in bergen.records} == {"1201"}
    assert [(r.municipality, r.municipality_as_sent) for r in bergen.rejections] == [
        ("4601", "1201")
    ]


async def test_a_new_list_remaps_every_row_on_open(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2028 reform, simulated: the shipped list (its version) changes and Bergen's
    4601 is covered by 4699 from then on. Reopening maps the old rows; 1201 is still
    stored as sent."""
    await _fill(store_url)
    import consumers.refdata
    import consumers.store

    def reformed(number: str) -> str:
        today = municipality_today(number)
        return "4699" if today == "4601" else today

    for module in (consumers.refdata, consumers.store):
        monkeypatch.setattr(module, "municipality_today", reformed)
    monkeypatch.setattr(consumers.refdata, "municipality_list_version", lambda: "list-2028")
    async with open_store(store_url):
        pass
    for table in TABLES:
        pairs = _pairs(store_url, table)
        assert ("1201", "4699") in pairs or (
            table == "consultations" and not any(sent == "1201" for sent, _ in pairs)
        )
        assert not any(today == "4601" for _, today in pairs)
    assert _sql(store_url, "SELECT version FROM kpr_reference") == [("list-2028",)]
    # The same list again: nothing to do.
    async with open_store(store_url):
        pass


async def test_a_version_1_store_is_upgraded_in_place(store_url: str) -> None:
    await _fill(store_url)
    _make_version_1(store_url)
    data = load_report_data(store_url, municipality="4601")  # read as it is: mapped here
    assert data.records
    assert {r.municipality for r in data.records} == {"4601"}
    async with open_store(store_url):
        pass
    assert _sql(store_url, "SELECT version FROM kpr_schema") == [(STORE_SCHEMA_VERSION,)]
    for table in TABLES:
        assert all(
            today == municipality_today(number) for number, today in _pairs(store_url, table)
        )
    assert ("1201", "4601") in _pairs(store_url, "events")


def _make_version_1(url: str) -> None:
    """Take the store back to schema version 1: no today-numbers, no reference table."""
    statements: Sequence[str] = (
        "DROP INDEX events_municipality_today",
        "DROP INDEX stays_municipality_today",
        *(f"ALTER TABLE {table} DROP COLUMN municipality_today" for table in TABLES),
        "DROP TABLE kpr_reference",
        "UPDATE kpr_schema SET version = 1",
    )
    _sql(url, *statements)
