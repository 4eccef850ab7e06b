"""Timeliness per sender: figures from a hand-built store reading, checked by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from report_store import consultation_record, report_data

from kpr.reports import ReportOptions, build_report_from_data
from kpr.reports.queries import RejectionRow, ReportData

START = date(2026, 3, 2)  # a Monday
STOP = START + timedelta(weeks=5, days=2)  # Wednesday of week six: nothing from here on
AS_OF = datetime(2026, 4, 10, 16, tzinfo=UTC)  # the Friday of week six
PER_DAY = 6
SYSTEM = {"source_system": "CGM Helsestasjon 8.1"}


def _data() -> ReportData:
    records = []
    day = START
    while day < STOP:
        if day.weekday() < 5:
            for slot in range(PER_DAY):
                clinical = datetime(day.year, day.month, day.day, 8 + slot, tzinfo=UTC)
                records.append(
                    consultation_record(
                        len(records), "1103", clinical, delay=timedelta(hours=2), content=SYSTEM
                    )
                )
        day += timedelta(days=1)
    live = len(records)
    old = datetime(2025, 1, 6, 9, tzinfo=UTC)
    for _ in range(2):  # back-filled: committed on a working day, 400+ days late
        late = datetime(2026, 3, 4, 12, tzinfo=UTC) - old
        records.append(consultation_record(len(records), "1103", old, delay=late, content=SYSTEM))
    rejections = tuple(
        RejectionRow("undecryptable", 90001, None, None, None, datetime(2026, 3, 10, tzinfo=UTC))
        for _ in range(3)
    )
    assert live == 5 * 5 * PER_DAY + 2 * PER_DAY
    return report_data(records, rejections)


def test_a_sender_that_stops_shows_its_gap_days_delay_and_rejections() -> None:
    """Six consultations a weekday for five weeks and two days, then nothing: the three
    working days up to the report date are gap days (weekends expected nothing); the
    delay is 2 h at the median and p90 with the two back-filled events counted apart;
    the three rejections without a municipality fall to the sender's one municipality."""
    report = build_report_from_data(_data(), ReportOptions(threshold=1, as_of=AS_OF))
    [row] = report.table("sender_timeliness").rows
    events = 5 * 5 * PER_DAY + 2 * PER_DAY + 2
    assert (row["sender_her_id"], row["municipality"]) == (90001, "1103")
    assert row["systems"] == "CGM Helsestasjon 8.1"
    assert (row["events"], row["rejected"], row["received"]) == (events, 3, events + 3)
    assert row["share_rejected"] == round(3 / (events + 3), 4)
    assert (row["delay_median_hours"], row["delay_p90_hours"]) == (2.0, 2.0)
    assert row["backfilled"] == 2
    assert row["gap_days"] == 3
    assert row["first_day"] == START.isoformat()
    assert row["events_per_day"] == round(events / ((AS_OF.date() - START).days + 1), 2)
    gaps = report.table("sender_gap_days").rows
    assert [g["day"] for g in gaps] == [(STOP + timedelta(days=d)).isoformat() for d in range(3)]
    assert all(g["expected"] == PER_DAY for g in gaps)
    [reasons] = report.table("sender_rejection_reasons").rows
    assert reasons == {
        "sender_her_id": "90001",
        "municipality": "1103",
        "reason": "undecryptable",
        "rejected": 3,
    }


def test_small_cells_of_the_timeliness_table_are_suppressed_with_their_statistics() -> None:
    """At the default threshold, a sender with three events shows neither the count nor
    the delay that rests on it."""
    data = _data()
    few = ReportData(data.records[:3], (), ())
    report = build_report_from_data(few, ReportOptions(as_of=AS_OF))
    table = report.table("sender_timeliness")
    assert table.is_suppressed(0, "events")
    assert table.is_suppressed(0, "delay_median_hours")
    assert table.rows[0]["delay_median_hours"] is None
