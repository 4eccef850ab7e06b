"""Data-quality and guideline reports from the pathway store (``kpr report``).

:func:`build_report` reads the store (read-only) and returns the published, suppressed
sections; :func:`write_report` writes them as ``index.html``, ``figures.json`` and CSVs.
Definitions of every figure are in :mod:`kpr.reports.quality` and
:mod:`kpr.reports.guideline`; suppression rules in :mod:`kpr.reports.suppression`; the
counting rule every figure follows in :mod:`kpr.reports.queries` and docs/REPORTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.events.municipalities import municipality_list_version, municipality_today
from kpr.reports.guideline import GuidelineSettings, guideline_tables
from kpr.reports.quality import QualitySettings, quality_tables
from kpr.reports.queries import ReportData, load_report_data
from kpr.reports.render import ChartSpec, LineChartSpec, Section, write_report_files
from kpr.reports.suppression import DEFAULT_THRESHOLD, publish
from kpr.reports.tables import PublishedTable, Table
from kpr.reports.timeliness import TimelinessSettings, timeliness_tables
from kpr.reports.trends import COUNTRY, TrendSettings, comparison_table, county_of, trend_tables

__all__ = [
    "DEFAULT_THRESHOLD",
    "Report",
    "ReportOptions",
    "build_report",
    "build_report_from_data",
    "municipality_today",
    "write_report",
]

TITLE = (
    "KPR-rapport: datakvalitet og oppfølging av retningslinjer / Data quality and guideline report"
)


@dataclass(frozen=True)
class ReportOptions:
    municipality: str | None = None
    year: int | None = None
    threshold: int = DEFAULT_THRESHOLD
    max_stay_days: int = 30
    as_of: datetime | None = None


@dataclass(frozen=True)
class Report:
    meta: dict[str, Any]
    sections: tuple[Section, ...]

    def table(self, key: str) -> PublishedTable:
        for section in self.sections:
            for table in section.tables:
                if table.key == key:
                    return table
        raise KeyError(key)


def build_report(store_url: str, options: ReportOptions) -> Report:
    """Read the store and build the report. Raises ``FileNotFoundError`` for a missing
    SQLite store, and the driver's errors when PostgreSQL cannot be reached."""
    data = load_report_data(store_url, municipality=options.municipality)
    return build_report_from_data(data, options)


def build_report_from_data(data: ReportData, options: ReportOptions) -> Report:
    as_of = options.as_of or datetime.now(UTC)
    quality = quality_tables(
        data, QualitySettings(as_of=as_of, year=options.year, max_stay_days=options.max_stay_days)
    )
    guideline = guideline_tables(data, GuidelineSettings(as_of=as_of, year=options.year))
    timeliness = timeliness_tables(data, TimelinessSettings(as_of=as_of, year=options.year))
    trend_settings = TrendSettings(
        as_of=as_of,
        year=options.year,
        national=options.municipality is None,
        threshold=options.threshold,
    )
    coverage = next(table for table in guideline if table.key == "programme_coverage")
    trends = trend_tables(data, coverage, trend_settings)
    if trend_settings.national:
        trends.append(comparison_table(trends[0], trend_settings))

    def published(tables: list[Table]) -> dict[str, PublishedTable]:
        return {table.key: publish(table, options.threshold) for table in tables}

    q, g, t = published(quality), published(guideline), published(timeliness)
    trend = published(trends)
    latest_year = options.year or max(
        (int(row["year"]) for row in g["programme_coverage"].rows), default=as_of.year
    )
    sections = (
        Section(
            "Datakvalitet / Data quality",
            tuple(q.values()),
            charts=(
                (
                    "received_by_municipality",
                    ChartSpec(
                        "Lagret per kommune / Committed per municipality",
                        "committed",
                        ("municipality",),
                    ),
                ),
                (
                    "received_by_municipality",
                    ChartSpec(
                        "Avvist per kommune / Rejected per municipality",
                        "rejected",
                        ("municipality",),
                    ),
                ),
            ),
            notes="Flagglister vises uten prikking: de beskriver meldinger, ikke helse. "
            "Flag lists are not suppressed: they describe messages, not health.",
        ),
        Section(
            "Tidsriktighet og fullstendighet per avsender / Timeliness and completeness per sender",
            tuple(t.values()),
            charts=(
                (
                    "sender_timeliness",
                    ChartSpec(
                        "Forsinkelse median per avsender og kommune (timer) / "
                        "Median delay per sender and municipality (hours)",
                        "delay_median_hours",
                        ("sender_her_id", "municipality"),
                    ),
                ),
            ),
            notes="Avsender = HER-id i den signerte meldingen. Sender = the HER-id of the "
            "signed letter. Dager uten data varsles også i Prometheus (KprSenderMunicipalityGap).",
        ),
        Section(
            "Helsestasjon og skolehelsetjeneste / Child health and school health",
            tuple(
                g[key]
                for key in (
                    "programme_coverage",
                    "weighing_measuring",
                    "breastfeeding",
                    "themes",
                    "theme_follow_up",
                )
            ),
            charts=tuple(
                (
                    "programme_coverage",
                    ChartSpec(
                        f"Andel som fikk konsultasjonen {latest_year}, kommune {municipality} / "
                        f"Share who received it",
                        "share",
                        ("consultation",),
                        (("municipality", municipality), ("year", latest_year)),
                    ),
                )
                for municipality in sorted(
                    {str(row["municipality"]) for row in g["programme_coverage"].rows}
                )
            ),
        ),
        Section(
            "Utvikling og sammenligning / Trends and comparison",
            tuple(trend.values()),
            charts=_trend_charts(trend["trends_yearly"].table, trend_settings.national),
            notes="Fylke = de to første sifrene i dagens kommunenummer. County = the first "
            "two digits of today's municipality number."
            + (
                ""
                if trend_settings.national
                else " Fylke og land vises bare for hele "
                "registeret / County and country only for the whole register."
            ),
        ),
        Section(
            "KAD/ØHD",
            tuple(
                g[key]
                for key in ("kad_stays", "kad_referred_by", "kad_discharged_to", "kad_diagnoses")
            ),
            charts=(
                (
                    "kad_stays",
                    ChartSpec(
                        "Opphold per kommune og år / Stays",
                        "stays",
                        ("municipality", "year"),
                        (("year", latest_year),),
                    ),
                ),
            ),
        ),
    )
    meta = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "as_of": as_of.isoformat(timespec="seconds"),
        # Today's number: an old one (1201) selects the municipality that covers it now.
        "municipality": municipality_today(options.municipality)
        if options.municipality
        else "alle / all",
        # Which municipality list counted the numbers under today's (a digest).
        "municipality_list": municipality_list_version(),
        "year": options.year or "alle / all",
        "suppression_threshold": options.threshold,
        "max_stay_days": options.max_stay_days,
    }
    return Report(meta, sections)


def _trend_charts(
    yearly: Table, national: bool
) -> tuple[tuple[str, ChartSpec | LineChartSpec], ...]:
    """Programme coverage over the years: each municipality with its county and the
    country; and the country's consultations and KAD stays."""
    charts: list[tuple[str, ChartSpec | LineChartSpec]] = []
    if national:
        charts.append(
            (
                "trends_yearly",
                LineChartSpec(
                    "Landet: konsultasjoner per år / Country: consultations per year",
                    "consultations",
                    "period",
                    (("Konsultasjoner / Consultations", (("level", "country"),)),),
                ),
            )
        )
    municipalities = sorted(
        {str(row["unit"]) for row in yearly.rows if row["level"] == "municipality"}
    )
    for municipality in municipalities:
        series: list[tuple[str, tuple[tuple[str, Any], ...]]] = [
            (municipality, (("level", "municipality"), ("unit", municipality)))
        ]
        county = county_of(municipality)
        if national and county is not None:
            series.append((f"fylke {county}", (("level", "county"), ("unit", county))))
        if national:
            series.append(("landet / country", (("level", "country"), ("unit", COUNTRY))))
        charts.append(
            (
                "trends_yearly",
                LineChartSpec(
                    f"Dekning av programmet, kommune {municipality} / Programme coverage",
                    "programme_coverage",
                    "period",
                    tuple(series),
                ),
            )
        )
    return tuple(charts)


def write_report(report: Report, out_dir: Path) -> list[Path]:
    return write_report_files(out_dir, TITLE, report.meta, report.sections)
