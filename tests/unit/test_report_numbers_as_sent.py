"""A report counts every municipality number under today's and says, on today's row,
which older numbers the data was sent under: Bergen 4601 "sent as 1201", in the HTML,
figures.json and the CSV, with the counts beside it suppressed as ever."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
from report_store import consultation_record

from kpr.reports import ReportOptions, build_report_from_data, write_report
from kpr.reports.queries import RejectionRow, ReportData

AS_OF = datetime(2026, 6, 15, 12, tzinfo=UTC)


def _data() -> ReportData:
    """Bergen: 8 events sent as 1201 in 2019 and 6 as 4601 since; Oslo 0301 (never
    renumbered): 3; one rejection sent as 1201."""
    records = [
        replace(
            consultation_record(i, "4601", datetime(2019, 3, 1 + i, 10, tzinfo=UTC)),
            municipality_as_sent="1201",
        )
        for i in range(8)
    ]
    records += [
        consultation_record(10 + i, "4601", datetime(2025, 3, 1 + i, 10, tzinfo=UTC))
        for i in range(6)
    ]
    records += [
        consultation_record(20 + i, "0301", datetime(2025, 3, 1 + i, 10, tzinfo=UTC))
        for i in range(3)
    ]
    rejection = RejectionRow(
        "contract", 90001, "hst.consultation", None, "4601", AS_OF, municipality_as_sent="1201"
    )
    return ReportData(tuple(records), (rejection,), ())


def test_todays_row_names_the_older_numbers_in_every_output(tmp_path: Path) -> None:
    report = build_report_from_data(_data(), ReportOptions(as_of=AS_OF))
    rows = {row["municipality"]: row for row in report.table("received_by_municipality").rows}
    assert set(rows) == {"4601", "0301"}  # 1201 has no row of its own
    assert rows["4601"]["received"] == 15  # 8 sent as 1201, 6 as 4601, 1 rejected
    assert rows["4601"]["rejected"] is None  # 1 rejection: still suppressed,
    assert rows["4601"]["committed"] is None  # and so is the cell that would give it back
    assert rows["4601"]["sent_as"] == "1201"
    assert rows["0301"]["sent_as"] is None
    assert rows["0301"]["committed"] is None  # 3 < 5

    write_report(report, tmp_path)
    figures = orjson.loads((tmp_path / "figures.json").read_bytes())
    table = figures["tables"]["received_by_municipality"]
    assert {"key": "sent_as", "label": "Sendt som / Sent as", "kind": "text"} in table["columns"]
    published = {row["municipality"]: row for row in table["rows"]}
    assert published["4601"]["sent_as"] == "1201"
    assert published["0301"]["sent_as"] is None
    with (tmp_path / "received_by_municipality.csv").open(encoding="utf-8") as handle:
        by_number = {row["municipality"]: row for row in csv.DictReader(handle)}
    assert by_number["4601"]["sent_as"] == "1201"
    assert by_number["4601"]["rejected"] == "<5"
    assert by_number["4601"]["committed"] == "x"
    assert by_number["0301"]["sent_as"] == ""
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Sendt som / Sent as" in html
    assert ">1201<" in html


def test_an_old_number_as_the_filter_is_reported_under_todays() -> None:
    report = build_report_from_data(_data(), ReportOptions(municipality="1201", as_of=AS_OF))
    assert report.meta["municipality"] == "4601"
    assert report.meta["municipality_list"]
