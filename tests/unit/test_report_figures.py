"""Report definitions: completeness drops, due dates, percentiles, effective records."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from report_store import PSEUDONYMISER, fill_store

from consumers.store import SqliteStore
from contracts.errors import StoreError
from contracts.events import HstConsultation, ProgrammeConsultation, parse_event
from contracts.events._common import Environment
from contracts.synth import generate_events
from kpr.reports.guideline import due_date, nearest_rank
from kpr.reports.quality import completeness_drops
from kpr.reports.queries import load_report_data


def _steady(municipality: str, start: date, days: int, per_day: int) -> dict[tuple[str, date], int]:
    return {(municipality, start + timedelta(days=n)): per_day for n in range(days)}


def test_a_drop_below_sixty_percent_of_the_same_weekday_is_flagged() -> None:
    """20 a day for five weeks, then 11 (55 %) on one day: that day is flagged; 13 (65 %)
    on another is not."""
    start = date(2026, 1, 5)
    series = _steady("0301", start, 42, 20)
    series[("0301", start + timedelta(days=35))] = 11
    series[("0301", start + timedelta(days=36))] = 13
    drops = completeness_drops(series)
    assert [(m, d, c) for m, d, c, _ in drops] == [("0301", start + timedelta(days=35), 11)]
    assert drops[0][3] == pytest.approx(20.0)


def test_a_municipality_that_stops_sending_is_flagged_every_day() -> None:
    """Missing days count as zero up to the last day seen anywhere."""
    start = date(2026, 1, 5)
    series = _steady("0301", start, 35, 10) | _steady("5001", start, 40, 10)
    drops = completeness_drops(series)
    assert {(m, d) for m, d, _, _ in drops} == {
        ("0301", start + timedelta(days=n)) for n in range(35, 40)
    }


def test_small_volumes_are_not_flagged() -> None:
    """A mean under min_expected (5) is noise: a drop from 4 to 0 is not flagged."""
    start = date(2026, 1, 5)
    series = _steady("0301", start, 35, 4)
    series[("0301", start + timedelta(days=34))] = 0
    assert completeness_drops(series) == []


def test_due_dates_of_child_and_school_consultations() -> None:
    """6 weeks falls 42 days after birth (60 days' grace); school start in August of
    the year the child turns six, counting until the end of that school year."""
    birth = date(2020, 3, 10)
    assert due_date(ProgrammeConsultation.WEEKS_6, birth) == (date(2020, 4, 21), date(2020, 6, 20))
    assert due_date(ProgrammeConsultation.SCHOOL_START, birth) == (
        date(2026, 8, 1),
        date(2027, 6, 30),
    )
    assert due_date(ProgrammeConsultation.EXTRA, birth) is None


def test_nearest_rank_percentile() -> None:
    """p90 of 1..10 is 9, of 1..11 is 10; p50 of one value is that value."""
    assert nearest_rank([float(v) for v in range(10, 0, -1)], 0.9) == 9.0
    assert nearest_rank([float(v) for v in range(1, 12)], 0.9) == 10.0
    assert nearest_rank([7.0], 0.5) == 7.0


async def test_effective_records_apply_corrections_and_drop_cancelled(tmp_path: Path) -> None:
    """A cancelled consultation is not among the records nor the counted messages; a
    replaced one carries the replacement's content and counts once; the municipality
    filter keeps only that municipality."""
    events = generate_events(40, seed=3, kinds={"hst"})
    first, second = (e for e in events[:2])
    assert isinstance(first, HstConsultation)
    assert isinstance(second, HstConsultation)

    def correction(original: HstConsultation, kind: str, **changes: object) -> HstConsultation:
        raw = (
            original.model_dump(mode="json")
            | {
                "event_id": f"00000000-0000-4000-8000-00000000000{1 if kind == 'cancel' else 2}",
                "revision": 2,
                "correction": kind,
                "corrects_event_id": str(original.event_id),
            }
            | changes
        )
        event = parse_event(raw, environment=Environment.TEST)
        assert isinstance(event, HstConsultation)
        return event

    cancel = correction(first, "cancel")
    replace = correction(second, "replace", interpreter_needed=not second.interpreter_needed)
    path = tmp_path / "store.sqlite3"
    async with SqliteStore(path) as store:
        await fill_store(store, [*events, cancel, replace])
    data = load_report_data(str(path))
    keys = {record.record_key: record for record in data.records}
    assert str(first.event_id) not in keys
    assert keys[str(second.event_id)].content["interpreter_needed"] is (
        not second.interpreter_needed
    )
    assert len(data.records) == len({str(e.event_id) for e in events}) - 1
    # The counting rule: one message per event in its final state; the cancelled one
    # leaves the counts and the replacement stands in for its original.
    assert len(data.messages) == len(data.records) == len(events) - 1
    assert keys[str(second.event_id)].person_key == PSEUDONYMISER.pseudonym(
        second.person.national_id
    )
    only = load_report_data(str(path), municipality=second.service_municipality)
    assert only.records
    assert {r.municipality for r in only.records} == {second.service_municipality}


def test_a_missing_store_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    """The report opens SQLite read-only: no empty store appears by mistake."""
    with pytest.raises(StoreError, match="no pathway store at"):
        load_report_data(str(tmp_path / "absent.sqlite3"))
    assert not (tmp_path / "absent.sqlite3").exists()
