"""Trends and comparison: levels, zero-filled periods, suppression across rows."""

from __future__ import annotations

from datetime import UTC, datetime

from report_store import consultation_record, report_data

from kpr.reports import ReportOptions, build_report_from_data
from kpr.reports.queries import ReportData
from kpr.reports.suppression import publish
from kpr.reports.tables import Column, Table
from kpr.reports.trends import TrendSettings, comparison_table, county_of, trend_tables

AS_OF = datetime(2026, 6, 15, 12, tzinfo=UTC)


def _data(per_municipality: dict[str, int], year: int = 2025) -> ReportData:
    records = []
    for municipality, count in per_municipality.items():
        for slot in range(count):
            when = datetime(year, 3, 1 + slot % 28, 10, tzinfo=UTC)
            records.append(consultation_record(len(records), municipality, when))
    return report_data(records)


def _coverage(rows: list[tuple[str, int, int, int]]) -> Table:
    return Table(
        key="programme_coverage",
        title="",
        columns=(Column("municipality", ""), Column("year", ""), Column("eligible", "")),
        rows=tuple(
            {"municipality": m, "year": y, "eligible": e, "received": r} for m, y, e, r in rows
        ),
    )


def _rows(table: Table) -> dict[tuple[str, str, str], dict[str, object]]:
    return {(str(r["level"]), str(r["unit"]), str(r["period"])): dict(r) for r in table.rows}


def test_counts_add_up_from_municipality_to_county_and_country_in_every_period() -> None:
    """1103 and 1108 make county 11, 4601 county 46; every unit has a row, with zeros, in
    every year from 2017 to the report year and every month of this year and last."""
    data = _data({"1103": 20, "1108": 9, "4601": 12})
    yearly, monthly = trend_tables(data, _coverage([]), TrendSettings(as_of=AS_OF))
    rows = _rows(yearly)
    assert rows[("municipality", "1103", "2025")]["consultations"] == 20
    assert rows[("county", "11", "2025")]["consultations"] == 29
    assert rows[("county", "46", "2025")]["consultations"] == 12
    assert rows[("country", "NO", "2025")]["consultations"] == 41
    assert rows[("country", "NO", "2025")]["received"] == 41
    assert rows[("municipality", "1103", "2017")]["consultations"] == 0
    assert {period for _, _, period in rows} == {str(y) for y in range(2017, 2027)}
    months = {period for _, _, period in _rows(monthly)}
    assert min(months) == "2025-01"
    assert max(months) == "2026-06"
    assert _rows(monthly)[("county", "11", "2025-03")]["consultations"] == 29
    assert county_of("0301") == "03"
    assert county_of("ukjent") is None


def test_a_small_municipality_cannot_be_recovered_from_its_county() -> None:
    """1108 has 3 consultations: hidden as <5. County 11 shows 23, so 1103's 20 is hidden
    too, or 23 - 20 would give 3 back; 4601 in another county stays visible."""
    data = _data({"1103": 20, "1108": 3, "4601": 12})
    yearly, _ = trend_tables(data, _coverage([]), TrendSettings(as_of=AS_OF))
    published = publish(yearly, 5)
    where = {
        (str(r["level"]), str(r["unit"]), str(r["period"])): index
        for index, r in enumerate(yearly.rows)
    }
    assert published.is_suppressed(where[("municipality", "1108", "2025")], "consultations")
    assert published.is_suppressed(where[("municipality", "1103", "2025")], "consultations")
    assert not published.is_suppressed(where[("county", "11", "2025")], "consultations")
    assert not published.is_suppressed(where[("municipality", "4601", "2025")], "consultations")
    # And the counties of the country: county 46 alone cannot be hidden by this, as the
    # country total minus county 11 is 12 (not small): no cell of it is hidden.
    assert not published.is_suppressed(where[("county", "46", "2025")], "consultations")


def test_each_municipality_stands_beside_its_county_the_country_and_the_spread() -> None:
    """Coverage 0.8 and 0.6 in county 11, 0.9 in 4601; a share resting on fewer than 5
    (or leaving fewer than 5 out) is not shown."""
    coverage = _coverage(
        [
            ("1103", 2026, 50, 40),
            ("1108", 2026, 50, 30),
            ("4601", 2026, 100, 90),
            ("5001", 2026, 12, 10),  # 2 not covered: would reveal a small number
        ]
    )
    settings = TrendSettings(as_of=AS_OF)
    yearly, _ = trend_tables(_data({}), coverage, settings)
    table = comparison_table(yearly, settings)
    rows = {str(r["municipality"]): r for r in table.rows}
    assert rows["1103"]["coverage_municipality"] == 0.8
    assert rows["1103"]["coverage_county"] == 0.7
    assert rows["1103"]["coverage_country"] == round(170 / 212, 4)
    assert rows["5001"]["coverage_municipality"] is None
    assert rows["1103"]["coverage_p10"] == 0.6
    assert rows["1103"]["coverage_p90"] == 0.9


def test_the_report_page_has_the_trend_section_with_line_charts() -> None:
    """The whole-register report publishes the trend and comparison tables and draws a
    coverage line per municipality with its county and the country."""
    report = build_report_from_data(_data({"1103": 20, "4601": 12}), ReportOptions(as_of=AS_OF))
    assert report.table("trends_yearly").rows
    assert report.table("comparison").rows
    [section] = [s for s in report.sections if s.title.startswith("Utvikling")]
    titles = [chart.title for _, chart in section.charts]
    assert any("1103" in title for title in titles)
    only = build_report_from_data(
        _data({"1103": 20}), ReportOptions(as_of=AS_OF, municipality="1103")
    )
    assert {r["level"] for r in only.table("trends_yearly").rows} == {"municipality"}
    assert "comparison" not in {t.key for s in only.sections for t in s.tables}
