"""Trends since 2017, and each municipality beside its county and the country.

Every figure is counted under the rule of docs/REPORTS.md (each event once, in its final
state) and in Norwegian local time. Municipality numbers are today's
(:func:`contracts.events.municipalities.municipality_today`); a county is the first two digits
of today's number, and the country is everything, ``ukjent`` included. Definitions:

* **Levels and periods**: one row per level (``municipality``, ``county``, ``country``),
  unit (the number, or ``NO``) and period: every year from 2017 (KPR's first) to the
  report year, and every month of the report year and the year before (up to the
  report month). A unit with data in some period has a row, holding zeros, in every period:
  "nothing was reported" is a finding.
* **consultations**: completed HST consultations, by clinical day.
* **kad_stays**, **kad_complete**, **los_median_hours**: KAD/ØHD stays by admission day
  (discharge day when the admission is missing), the complete ones, and the median
  length of the complete ones.
* **programme_eligible**, **programme_received**, **programme_coverage** (years only):
  the programme coverage of the guideline report, summed over the programme
  consultations: children due in the year, and how many of them had the consultation.
* **received**, **rejected**, **share_rejected**: the data-quality counts of the
  received tables, by receipt day.

Suppression: every count cell as in :mod:`kpr.reports.suppression`, plus the rows of a
county's municipalities (and the country's counties) as row groups, so that a county
total minus its visible municipalities never gives a hidden cell back.

**Comparison** (:func:`comparison_table`): for the report year, each municipality's
programme coverage, median length of stay and rejected share beside its county's and
the country's, with the spread (p10 and p90) of the municipality values that rest on at
least the suppression threshold of observations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from statistics import median
from typing import Any

from kpr.reports.guideline import nearest_rank
from kpr.reports.quality import local_day
from kpr.reports.queries import UNKNOWN_MUNICIPALITY, ReportData
from kpr.reports.tables import Column, ColumnKind, Share, Table

__all__ = [
    "COUNTRY",
    "FIRST_YEAR",
    "TrendSettings",
    "comparison_table",
    "county_of",
    "trend_tables",
]

FIRST_YEAR = 2017
COUNTRY = "NO"
_D = ColumnKind.DIMENSION
_S = ColumnKind.STATISTIC
_LEVELS = ("municipality", "county", "country")
_COUNTS = (
    "consultations",
    "kad_stays",
    "kad_complete",
    "programme_eligible",
    "programme_received",
    "received",
    "rejected",
)


@dataclass(frozen=True)
class TrendSettings:
    as_of: datetime
    #: The report year (default: the year of ``as_of``).
    year: int | None = None
    #: False when the store was read for one municipality: county and country rows
    #: would then describe that municipality only, so they are left out.
    national: bool = True
    threshold: int = 5


def county_of(municipality: str) -> str | None:
    """The county number of a (today's) municipality number; None for ``ukjent``."""
    return municipality[:2] if len(municipality) == 4 and municipality.isdigit() else None


@dataclass
class _Cell:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    stay_hours: list[float] = field(default_factory=list)


def _units(municipality: str, national: bool) -> Iterator[tuple[str, str]]:
    yield "municipality", municipality
    if national:
        county = county_of(municipality)
        if county is not None:
            yield "county", county
        yield "country", COUNTRY


class _Tally:
    def __init__(self, national: bool) -> None:
        self.national = national
        self.cells: dict[tuple[str, str, str], _Cell] = defaultdict(_Cell)
        self.units: set[tuple[str, str]] = set()

    def add(self, municipality: str, periods: Iterable[str], key: str, amount: int = 1) -> None:
        for level, unit in _units(municipality, self.national):
            self.units.add((level, unit))
            for period in periods:
                self.cells[(level, unit, period)].counts[key] += amount

    def stay(self, municipality: str, periods: Iterable[str], hours: float | None) -> None:
        for level, unit in _units(municipality, self.national):
            self.units.add((level, unit))
            for period in periods:
                cell = self.cells[(level, unit, period)]
                cell.counts["kad_stays"] += 1
                if hours is not None:
                    cell.counts["kad_complete"] += 1
                    cell.stay_hours.append(hours)


def _periods(day: date) -> tuple[str, str]:
    return str(day.year), f"{day.year}-{day.month:02d}"


def _tally(data: ReportData, coverage: Table, settings: TrendSettings) -> _Tally:
    tally = _Tally(settings.national)
    for record in data.records:
        if record.event_type == "hst.consultation" and record.content.get("status") == "completed":
            tally.add(
                record.municipality, _periods(local_day(record.clinical_time)), "consultations"
            )
    for stay in data.stays:
        moment = stay.admitted_at or stay.discharged_at
        if moment is None:
            continue
        hours = stay.length_of_stay_hours if stay.complete else None
        tally.stay(stay.municipality or UNKNOWN_MUNICIPALITY, _periods(local_day(moment)), hours)
    for message in data.messages:
        tally.add(message.municipality, _periods(local_day(message.committed_at)), "received")
    for rejection, municipality in data.attributed_rejections:
        periods = _periods(local_day(rejection.rejected_at))
        tally.add(municipality, periods, "received")
        tally.add(municipality, periods, "rejected")
    for row in coverage.rows:
        year = (str(row["year"]),)
        tally.add(str(row["municipality"]), year, "programme_eligible", int(row["eligible"]))
        tally.add(str(row["municipality"]), year, "programme_received", int(row["received"]))
    return tally


def _report_year(settings: TrendSettings) -> int:
    return settings.year or local_day(settings.as_of).year


def trend_tables(data: ReportData, coverage: Table, settings: TrendSettings) -> list[Table]:
    """``trends_yearly`` and ``trends_monthly``; ``coverage`` is the guideline report's
    raw ``programme_coverage`` table (so the programme is defined once)."""
    tally = _tally(data, coverage, settings)
    year = _report_year(settings)
    years = [str(y) for y in range(FIRST_YEAR, year + 1)]
    months = [f"{y}-{m:02d}" for y in (year - 1, year) for m in range(1, 13)]
    if year == local_day(settings.as_of).year:
        months = [m for m in months if m <= f"{year}-{local_day(settings.as_of).month:02d}"]
    return [
        _trend_table(tally, years, "trends_yearly", "år / years", programme=True),
        _trend_table(tally, months, "trends_monthly", "måned / months", programme=False),
    ]


def _trend_table(
    tally: _Tally, periods: list[str], key: str, label: str, *, programme: bool
) -> Table:
    rows: list[dict[str, Any]] = []
    index: dict[tuple[str, str, str], int] = {}
    order = {level: position for position, level in enumerate(_LEVELS)}
    for level, unit in sorted(tally.units, key=lambda u: (order[u[0]], u[1])):
        for period in periods:
            cell = tally.cells.get((level, unit, period), _Cell())
            row: dict[str, Any] = {"level": level, "unit": unit, "period": period}
            row |= cell.counts
            row["los_median_hours"] = round(median(cell.stay_hours), 1) if cell.stay_hours else None
            if not programme:
                del row["programme_eligible"], row["programme_received"]
            index[(level, unit, period)] = len(rows)
            rows.append(row)
    groups: list[tuple[int, ...]] = []
    for period in periods:
        children: dict[tuple[str, str], list[int]] = defaultdict(list)
        for (level, unit, row_period), position in index.items():
            if row_period != period:
                continue
            if level == "municipality" and (county := county_of(unit)) is not None:
                children[("county", county)].append(position)
            elif level == "county" or (level == "municipality" and county_of(unit) is None):
                children[("country", COUNTRY)].append(position)
        groups.extend(tuple(c) for parent, c in children.items() if parent in tally.units)
    programme_columns = (
        (
            Column("programme_eligible", "Barn med konsultasjon til forfall / Children due"),
            Column("programme_received", "Fikk den / Received"),
            Column("programme_coverage", "Dekning / Coverage", ColumnKind.SHARE),
        )
        if programme
        else ()
    )
    return Table(
        key=key,
        title=f"Utvikling per {label} / Trends",
        description="Kommune, fylke (to første sifre i dagens kommunenummer) og landet. "
        "Municipality, county and country; counts under the counting rule of docs/REPORTS.md.",
        columns=(
            Column("level", "Nivå / Level", _D),
            Column("unit", "Enhet / Unit", _D),
            Column("period", "Periode / Period", _D),
            Column("consultations", "Konsultasjoner / Consultations"),
            Column("kad_stays", "KAD-opphold / KAD stays"),
            Column("kad_complete", "Fullførte / Complete"),
            Column("los_median_hours", "Liggetid median (t) / LOS median (h)", _S),
            *programme_columns,
            Column("received", "Mottatt / Received"),
            Column("rejected", "Avvist / Rejected"),
            Column("share_rejected", "Andel avvist / Share rejected", ColumnKind.SHARE),
        ),
        rows=tuple(rows),
        complements=(
            ("kad_stays", "kad_complete"),
            ("received", "rejected"),
            *((("programme_eligible", "programme_received"),) if programme else ()),
        ),
        shares=(
            Share("share_rejected", "rejected", "received"),
            *(
                (Share("programme_coverage", "programme_received", "programme_eligible"),)
                if programme
                else ()
            ),
        ),
        statistic_bases=(("los_median_hours", "kad_complete"),),
        row_groups=tuple(groups),
    )


def comparison_table(yearly: Table, settings: TrendSettings) -> Table:
    """Each municipality beside its county and the country, for the report year."""
    year = str(_report_year(settings))
    rows_of: dict[tuple[str, str], Mapping[str, Any]] = {
        (str(row["level"]), str(row["unit"])): row for row in yearly.rows if row["period"] == year
    }
    measures: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
        "coverage": lambda r: _ratio(r["programme_received"], r["programme_eligible"], settings),
        "los_median_hours": lambda r: (
            r["los_median_hours"] if r["kad_complete"] >= settings.threshold else None
        ),
        "share_rejected": lambda r: _ratio(r["rejected"], r["received"], settings),
    }
    spread: dict[str, list[float]] = {name: [] for name in measures}
    for (level, _unit), row in rows_of.items():
        if level == "municipality":
            for name, measure in measures.items():
                if (value := measure(row)) is not None:
                    spread[name].append(float(value))
    rows = []
    for (level, unit), row in sorted(rows_of.items()):
        if level != "municipality":
            continue
        county = county_of(unit)
        county_row = rows_of.get(("county", county)) if county else None
        country_row = rows_of.get(("country", COUNTRY))
        out: dict[str, Any] = {"municipality": unit, "county": county or "", "year": int(year)}
        for name, measure in measures.items():
            values = spread[name]
            out[f"{name}_municipality"] = measure(row)
            out[f"{name}_county"] = measure(county_row) if county_row else None
            out[f"{name}_country"] = measure(country_row) if country_row else None
            out[f"{name}_p10"] = round(nearest_rank(values, 0.1), 4) if values else None
            out[f"{name}_p90"] = round(nearest_rank(values, 0.9), 4) if values else None
        rows.append(out)
    columns = [
        Column("municipality", "Kommune / Municipality", _D),
        Column("county", "Fylke / County", _D),
        Column("year", "År / Year", _D),
    ]
    labels = {
        "coverage": "Dekning programmet / Programme coverage",
        "los_median_hours": "Liggetid median (t) / LOS median (h)",
        "share_rejected": "Andel avvist / Share rejected",
    }
    for name, label in labels.items():
        for suffix, where in (
            ("municipality", "kommunen / municipality"),
            ("county", "fylket / county"),
            ("country", "landet / country"),
            ("p10", "kommuner p10 / municipalities p10"),
            ("p90", "kommuner p90 / municipalities p90"),
        ):
            columns.append(Column(f"{name}_{suffix}", f"{label}: {where}", _S))
    return Table(
        key="comparison",
        title=f"Kommunen mot fylket og landet {year} / Municipality, county and country",
        description="Verdier som hviler på færre enn terskelen vises ikke; spredningen er "
        "mellom kommunene. Values resting on fewer than the threshold are not shown; the "
        "spread is across municipalities.",
        columns=tuple(columns),
        rows=tuple(rows),
        suppress=False,  # every statistic here is withheld above when its basis is small
    )


def _ratio(numerator: Any, denominator: Any, settings: TrendSettings) -> float | None:
    """A share only when neither its part nor the rest is a small number."""
    rest = (denominator or 0) - (numerator or 0)
    if not denominator or numerator < settings.threshold or 0 < rest < settings.threshold:
        return None
    return round(float(numerator) / float(denominator), 4)
