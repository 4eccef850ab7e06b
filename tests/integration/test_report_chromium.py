"""``kpr report`` rendered in headless Chromium: the figures on the page match the store.

The store is filled through the consumer's path (pseudonymise + apply) with synthetic
events including corrections and duplicates, plus recorded rejections. The expected
figures are computed here from the store with plain SQL and from the input events, not
with the report code. Without Chromium the test is skipped locally and FAILS under CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from report_store import PSEUDONYMISER, add_rejections, fill_store

from consumers.store import SqliteStore
from contracts.errors import Reason
from contracts.events import Event, HstConsultation
from contracts.events.municipalities import municipality_today
from contracts.synth import generate_events
from kpr.cli import main

OSLO = ZoneInfo("Europe/Oslo")
AS_OF = "2026-07-31T00:00:00+00:00"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium is not installed")


def dump_dom(html_file: Path, profile: Path) -> str:
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            html_file.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


class _Figures(HTMLParser):
    """Collects every element carrying data-figure, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.charts: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if "data-figure" in attributes:
            self.cells.append(attributes)
        if "data-chart" in attributes:
            self.charts.append(attributes)


def figures(dom: str, name: str) -> dict[tuple[str, ...], dict[str, str]]:
    """Cells of one figure keyed by their dimension attribute values, in order."""
    parser = _Figures()
    parser.feed(dom)
    result = {}
    for cell in parser.cells:
        if cell["data-figure"] != name:
            continue
        dims = tuple(
            value
            for key, value in cell.items()
            if key not in ("data-figure", "data-kind", "data-value", "data-suppressed")
        )
        result[dims] = cell
    return result


@dataclass(frozen=True)
class Built:
    store: Path
    events: list[Event]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    directory = tmp_path_factory.mktemp("report")
    path = directory / "store.sqlite3"
    events = generate_events(1500, seed=11, corrections=0.1, duplicates=0.05)

    async def fill() -> None:
        async with SqliteStore(path) as store:
            await fill_store(store, events)
            await add_rejections(store, 6, reason=Reason.INVALID_CONTRACT, sender_her_id=90001)
            await add_rejections(
                store,
                3,
                reason=Reason.BAD_SIGNATURE,
                sender_her_id=90001,
                municipality="0301",
                unit_org="310000000",
                prefix="sig",
            )

    asyncio.run(fill())
    return Built(path, events)


def _run_report(built: Built, out: Path, *extra: str) -> str:
    assert (
        main(
            ["report", "--out", str(out), "--store-url", str(built.store), "--as-of", AS_OF, *extra]
        )
        == 0
    )
    return dump_dom(out / "index.html", out.parent / f"{out.name}-profile")


@pytest.fixture(scope="module")
def dom(built: Built, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _run_report(built, tmp_path_factory.mktemp("out") / "all", "--min-count", "1")


def _effective_consultations(events: list[Event]) -> Iterator[HstConsultation]:
    """Originals not cancelled (synth replacements keep status, programme and time)."""
    cancelled = {str(e.corrects_event_id) for e in events if e.correction.value == "cancel"}
    seen = set()
    for event in events:
        if (
            isinstance(event, HstConsultation)
            and event.correction.value == "original"
            and str(event.event_id) not in cancelled
            and event.event_id not in seen
        ):
            seen.add(event.event_id)
            yield event


def _final_municipalities(events: list[Event]) -> Counter[str]:
    """The counting rule of docs/REPORTS.md, computed from the input: each event once,
    under the municipality of its latest revision; a cancelled event not at all."""
    latest: dict[str, tuple[int, str]] = {}
    cancelled = set()
    for event in events:
        record = str(event.corrects_event_id or event.event_id)
        if event.correction.value == "cancel":
            cancelled.add(record)
            continue
        if isinstance(event, HstConsultation):
            municipality = municipality_today(str(event.service_municipality))
        else:
            municipality = municipality_today(str(event.service_municipalities[0]))  # type: ignore[attr-defined]
        if record not in latest or event.revision >= latest[record][0]:
            latest[record] = (event.revision, municipality)
    return Counter(m for record, (_, m) in latest.items() if record not in cancelled)


def test_committed_and_rejected_per_municipality_match_the_store(built: Built, dom: str) -> None:
    """Committed = events in their final state per municipality, counted from the input
    (a correction stands in for its original, a cancelled event leaves); rejected =
    recorded rejections, the ones without a municipality under 'ukjent' (the sender
    reports for several)."""
    committed = dict(_final_municipalities(built.events))
    shown = figures(dom, "received_by_municipality.committed")
    assert {dims[0]: int(cell["data-value"]) for dims, cell in shown.items()} == committed | {
        "ukjent": 0
    }
    rejected = figures(dom, "received_by_municipality.rejected")
    assert rejected[("0301",)]["data-value"] == "3"
    assert rejected[("ukjent",)]["data-value"] == "6"


def test_todays_row_names_the_numbers_the_events_were_sent_under(built: Built, dom: str) -> None:
    """In the rendered page, each municipality's row names the older numbers among its
    events as sent (Bergen 4601: 1201 before 2020), read from the store's numbers."""
    with sqlite3.connect(built.store) as connection:
        pairs = connection.execute(
            "SELECT DISTINCT municipality, municipality_today FROM events"
            " WHERE municipality <> municipality_today"
        ).fetchall()
    older: dict[str, set[str]] = {}
    for sent, today in pairs:
        older.setdefault(today, set()).add(sent)
    assert "1201" in older["4601"]
    shown = figures(dom, "received_by_municipality.sent_as")
    named = {dims[0]: cell.get("data-value") for dims, cell in shown.items()}
    for today, numbers in older.items():
        assert set(str(named[today]).split(", ")) >= numbers
    assert named.get("0301") in (None, "")  # Oslo was never renumbered


def test_kad_stays_per_municipality_and_year_match_the_store(built: Built, dom: str) -> None:
    """Stays by admission year in Norwegian time, from the stays table."""
    expected: Counter[tuple[str, str]] = Counter()
    with sqlite3.connect(built.store) as connection:
        for municipality, admitted, discharged in connection.execute(
            "SELECT municipality, admitted_at, discharged_at FROM stays"
        ):
            moment = datetime.fromisoformat(admitted or discharged)
            expected[(municipality_today(municipality), str(moment.astimezone(OSLO).year))] += 1
    shown = figures(dom, "kad_stays.stays")
    assert {dims: int(cell["data-value"]) for dims, cell in shown.items()} == dict(expected)


def test_six_week_coverage_matches_the_input_events(built: Built, dom: str) -> None:
    """Children due for the 6-week consultation (42 days, 60 days' grace, before the
    report date, not before 2017) in their latest municipality, and how many had it
    completed: computed from the synthetic input, not the store."""
    by_child: dict[str, list[HstConsultation]] = defaultdict(list)
    for event in _effective_consultations(built.events):
        if event.service_area.value in ("child-health-station", "school-health"):
            by_child[event.person.national_id].append(event)
    as_of = datetime.fromisoformat(AS_OF).astimezone(OSLO).date()
    eligible: Counter[tuple[str, str]] = Counter()
    received: Counter[tuple[str, str]] = Counter()
    for consultations in by_child.values():
        latest = max(consultations, key=lambda e: e.consultation_at)
        due = latest.person.birth_date + timedelta(days=42)
        if due < date(2017, 1, 1) or due + timedelta(days=60) > as_of:
            continue
        key = (municipality_today(latest.service_municipality), str(due.year))
        eligible[key] += 1
        received[key] += any(
            c.programme_consultation.value == "6-weeks" and c.status.value == "completed"
            for c in consultations
        )
    shown_eligible = {
        (dims[0], dims[1]): int(cell["data-value"])
        for dims, cell in figures(dom, "programme_coverage.eligible").items()
        if dims[2] == "6-weeks"
    }
    shown_received = {
        (dims[0], dims[1]): int(cell["data-value"])
        for dims, cell in figures(dom, "programme_coverage.received").items()
        if dims[2] == "6-weeks"
    }
    assert shown_eligible == dict(eligible)
    assert shown_received == {key: received[key] for key in eligible}


def test_completed_consultations_per_municipality_and_year(built: Built, dom: str) -> None:
    """The themes table's consultation count is every completed effective consultation."""
    expected: Counter[tuple[str, str]] = Counter(
        (municipality_today(e.service_municipality), str(e.consultation_at.astimezone(OSLO).year))
        for e in _effective_consultations(built.events)
        if e.status.value == "completed"
    )
    shown = {
        (dims[0], dims[1]): int(cell["data-value"])
        for dims, cell in figures(dom, "themes.consultations").items()
        if dims[2] == "information-and-consent"
    }
    assert shown == dict(expected)


def test_pseudonyms_not_national_ids_reach_the_report(built: Built, dom: str) -> None:
    """No national id of the input appears on the page."""
    ids = {event.person.national_id for event in built.events}
    assert not any(national_id in dom for national_id in ids)
    assert PSEUDONYMISER.pseudonym(next(iter(ids))).startswith("p1-")


def test_small_counts_are_suppressed_on_the_page(
    built: Built, dom: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the default threshold and one municipality, no visible count of a statistics
    table lies in 1..4, every cell hidden there had a value, and the page says <5."""
    out = tmp_path_factory.mktemp("out") / "0301"
    suppressed_dom = _run_report(built, out, "--municipality", "0301")
    parser = _Figures()
    parser.feed(suppressed_dom)
    flag_tables = (
        "completeness_drops",
        "persons_many_municipalities",
        "date_flags",
        "long_stays",
        "units",
        "contract_rejections",
        "sender_gap_days",
        "sender_rejection_reasons",
    )
    counts = [
        cell
        for cell in parser.cells
        if cell["data-kind"] == "count" and not cell["data-figure"].startswith(flag_tables)
    ]
    assert counts, "the page shows figures"
    visible = [int(cell["data-value"]) for cell in counts if "data-value" in cell]
    assert all(value == 0 or value >= 5 for value in visible)
    hidden = [cell for cell in counts if cell.get("data-suppressed") == "true"]
    assert hidden, "the 0301 report has small cells"
    assert "&lt;5" in suppressed_dom or "<5" in suppressed_dom
    assert {cell["data-municipality"] for cell in counts if "data-municipality" in cell} == {"0301"}


def test_the_page_is_self_contained(dom: str) -> None:
    """No scripts and no external resources: it runs on a closed network."""
    assert "<script" not in dom
    assert "http://" not in dom.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in dom
    assert "<svg" in dom
    assert "data-chart=" in dom


def test_figures_json_and_csv_carry_the_same_figures(
    built: Built, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """figures.json has every table with null for suppressed cells; the CSV shows <5."""
    import csv
    import json

    out = tmp_path_factory.mktemp("files")
    assert (
        main(
            [
                "report",
                "--out",
                str(out),
                "--store-url",
                str(built.store),
                "--as-of",
                AS_OF,
                "--year",
                "2024",
            ]
        )
        == 0
    )
    figures_json = json.loads((out / "figures.json").read_text())
    coverage = figures_json["tables"]["programme_coverage"]
    assert {row["year"] for row in coverage["rows"]} == {2024}
    with (out / "programme_coverage.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(coverage["rows"])
    for csv_row, json_row in zip(rows, coverage["rows"], strict=True):
        if json_row["eligible"] is None:
            assert csv_row["eligible"] in ("<5", "x")
        else:
            assert int(csv_row["eligible"]) == json_row["eligible"]
    assert datetime.now(UTC).year >= 2024


@pytest.mark.postgres
def test_postgresql_store_gives_the_same_figures_as_sqlite(
    postgres_url: str, built: Built, tmp_path: Path
) -> None:
    """The same events through a PostgreSQL store (its own database) give the same
    published figures as through SQLite: the report's SQL is portable."""
    import uuid

    import psycopg

    from consumers.store import PostgresStore
    from kpr.reports import ReportOptions, build_report

    name = f"report_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:

        async def fill() -> None:
            async with PostgresStore(url) as store:
                await fill_store(store, built.events)

        asyncio.run(fill())
        sqlite_copy = tmp_path / "same.sqlite3"

        async def fill_sqlite() -> None:
            async with SqliteStore(sqlite_copy) as store:
                await fill_store(store, built.events)

        asyncio.run(fill_sqlite())
        options = ReportOptions(as_of=datetime.fromisoformat(AS_OF), threshold=1)
        from_postgres = build_report(url, options)
        from_sqlite = build_report(str(sqlite_copy), options)
        for key in ("programme_coverage", "kad_stays", "themes", "received_by_municipality"):
            assert from_postgres.table(key).rows == from_sqlite.table(key).rows, key
        assert from_postgres.table("kad_stays").rows
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_trend_lines_and_totals_match_the_tables_in_the_rendered_page(dom: str) -> None:
    """In the page Chromium rendered: every visible consultation count of a county is
    the sum of its municipalities' (when none of them is hidden), the country's the sum
    of everything, and each drawn point of a coverage line carries the value of its
    trends_yearly cell."""
    cells = figures(dom, "trends_yearly.consultations")
    assert cells, "the trend table is on the page"
    values = {dims: int(cell["data-value"]) for dims, cell in cells.items() if "data-value" in cell}
    hidden = {dims for dims, cell in cells.items() if cell.get("data-suppressed") == "true"}
    periods = {period for _level, _unit, period in cells}
    assert {str(year) for year in range(2017, 2027)} <= periods
    for period in periods:
        municipalities = {
            unit: count
            for (level, unit, p), count in values.items()
            if level == "municipality" and p == period
        }
        for (level, county, p), total in values.items():
            members = [u for u in municipalities if u[:2] == county]
            if (
                level != "county"
                or p != period
                or any(("municipality", u, period) in hidden for u in members)
            ):
                continue
            assert total == sum(municipalities[u] for u in members), (county, period)
        country = values.get(("country", "NO", period))
        if country is not None and not any(d[2] == period for d in hidden):
            assert country == sum(municipalities.values())
    parser = _Figures()
    parser.feed(dom)
    shares = {
        dims: cell.get("data-value")
        for dims, cell in figures(dom, "trends_yearly.programme_coverage").items()
    }
    points = [c for c in parser.charts if c["data-chart"] == "trends_yearly.programme_coverage"]
    drawn = [p for p in points if "data-value" in p]
    assert drawn, "coverage lines are drawn"
    for point in drawn:
        dims = (point["data-level"], point["data-unit"], point["data-period"])
        assert shares[dims] is not None
        assert float(point["data-value"]) == pytest.approx(float(shares[dims]))
