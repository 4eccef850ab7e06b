"""Data-quality figures and flags (the register's lessons, seed 003).

Days and clock times are Norwegian local time (Europe/Oslo). Definitions:

* **Received per municipality and day** (receipt day), under the counting rule of
  docs/REPORTS.md: committed = events (records) whose final state is committed, once
  each, by the ``committed_at`` of their latest revision and the municipality of their
  effective content (a cancelled event leaves the counts); rejected = messages still
  rejected (dead-lettered and no message with the same id committed since), by
  ``rejected_at``, per reason. A rejection without a municipality (the event could
  not be read, e.g. a contract violation, which the consumer records before it knows the unit) is
  attributed to the sender's municipality when the sender's committed events all
  belong to one municipality, else to ``ukjent``.
* **Sent as**: per municipality (today's number), the older numbers among those its
  counted events and still-rejected messages were sent under (Bergen 4601: 1201, the
  number before the 2020 reform). The numbers only: a text column, never suppressed, that
  reveals no count.
* **Completeness drop**: a day whose count is below ``drop_ratio`` (60 %) of the mean
  of the same weekday over the previous four weeks, where that mean is at least
  ``drop_min_expected``. Evaluated per municipality on two series: messages received
  per day, and effective records per clinical day (which shows a system change in
  back-filled data, where the receipt day says nothing).
* **Person in many municipalities**: a pseudonym with effective records from
  ``multi_municipality_min`` (6) or more service municipalities in one calendar year.
* **Suspicious dates** (per municipality and year, effective records):
  ``late-registration`` registered more than ``late_registration_days`` (365) after the
  clinical time; ``registered-before-clinical`` registered more than a day *before* the
  clinical time; ``midnight-bulk`` at least ``midnight_min`` (10) records and at least
  ``midnight_share`` (20 %) of them at exactly 00:00:00 (a date-only field filled in);
  ``weekend-spike`` an HST Saturday or Sunday with at least ``weekend_spike_min`` (10)
  consultations and more than ``weekend_spike_factor`` (3) times the mean weekday count
  of the four weeks before (child health stations and schools are closed at weekends).
* **Long stays**: KAD/ØHD stays open (no discharge) more than ``max_stay_days`` (30)
  before ``as_of``, and complete stays longer than that.
* **Units**: committed units whose organisation number lies below 800 000 000 (not a
  number the Register of Legal Entities assigns to organisations: test or junk), and
  rejections per unit where the consumer knew the unit.
* **Contract rejections** per sender and reason. The store records only the reason,
  not the violated rule, so unmapped local codes (``diagnosis-code-unknown`` ...) cannot
  be told from other contract violations here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import fmean
from typing import TypeVar
from zoneinfo import ZoneInfo

from contracts.errors import Reason
from kpr.reports.queries import UNKNOWN_MUNICIPALITY, ReportData
from kpr.reports.tables import Column, ColumnKind, Table

__all__ = [
    "OSLO",
    "UNKNOWN_MUNICIPALITY",
    "QualitySettings",
    "completeness_drops",
    "local_day",
    "quality_tables",
]

OSLO = ZoneInfo("Europe/Oslo")
#: What a completeness series is kept per: a municipality, or a (sender, municipality).
Unit = TypeVar("Unit", str, tuple[int, str])
_D = ColumnKind.DIMENSION
_T = ColumnKind.TEXT
_S = ColumnKind.STATISTIC


@dataclass(frozen=True)
class QualitySettings:
    as_of: datetime
    year: int | None = None
    drop_ratio: float = 0.6
    drop_min_expected: float = 5.0
    multi_municipality_min: int = 6
    late_registration_days: int = 365
    max_stay_days: int = 30
    midnight_share: float = 0.2
    midnight_min: int = 10
    weekend_spike_factor: float = 3.0
    weekend_spike_min: int = 10


def local_day(moment: datetime) -> date:
    return moment.astimezone(OSLO).date()


def quality_tables(data: ReportData, settings: QualitySettings) -> list[Table]:
    received = _received_daily(data, settings)
    return [
        received,
        _received_by_municipality(data, received),
        _drops_table(data, settings),
        _persons_many_municipalities(data, settings),
        _date_flags(data, settings),
        _long_stays(data, settings),
        _units(data),
        _contract_rejections(data, settings),
    ]


def _in_year(day: date, settings: QualitySettings) -> bool:
    return settings.year is None or day.year == settings.year


def _received_daily(data: ReportData, settings: QualitySettings) -> Table:
    committed: Counter[tuple[str, date]] = Counter()
    rejected: dict[tuple[str, date], Counter[str]] = defaultdict(Counter)
    for message in data.messages:
        committed[(message.municipality, local_day(message.committed_at))] += 1
    for rejection, muni in data.attributed_rejections:
        rejected[(muni, local_day(rejection.rejected_at))][rejection.reason] += 1
    reasons = [r.value for r in Reason if any(r.value in c for c in rejected.values())]
    rows = []
    for key in sorted(set(committed) | set(rejected)):
        muni, day = key
        if not _in_year(day, settings):
            continue
        by_reason = rejected.get(key, Counter())
        row: dict[str, object] = {
            "municipality": muni,
            "day": day.isoformat(),
            "received": committed[key] + sum(by_reason.values()),
            "committed": committed[key],
            "rejected": sum(by_reason.values()),
        }
        row |= {f"rejected_{reason}": by_reason.get(reason, 0) for reason in reasons}
        rows.append(row)
    reason_columns = tuple(
        Column(f"rejected_{reason}", f"Avvist: {reason} / Rejected: {reason}") for reason in reasons
    )
    return Table(
        key="received_daily",
        title="Mottatt per kommune og dag / Received per municipality and day",
        description="Meldinger per mottaksdag (norsk tid): lagret + avvist, avvist per årsak. "
        "Messages per day of receipt: committed + rejected, rejected by reason.",
        columns=(
            Column("municipality", "Kommune / Municipality", _D),
            Column("day", "Dag / Day", _D),
            Column("received", "Mottatt / Received"),
            Column("committed", "Lagret / Committed"),
            Column("rejected", "Avvist / Rejected"),
            *reason_columns,
        ),
        rows=tuple(rows),
        groups=(("committed", "rejected"), tuple(c.key for c in reason_columns)),
    )


def _received_by_municipality(data: ReportData, daily: Table) -> Table:
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for row in daily.rows:
        for key in ("received", "committed", "rejected"):
            totals[str(row["municipality"])][key] += int(row[key])
    sent_as = _numbers_as_sent(data)
    return Table(
        key="received_by_municipality",
        title="Mottatt per kommune / Received per municipality",
        description="Dagens kommunenummer; «sendt som» viser eldre numre i dataene "
        "(4601 Bergen: sendt som 1201 før 2020). Today's municipality numbers; «sent as» "
        "lists the older numbers the data was sent under (4601 Bergen: 1201 before 2020).",
        columns=(
            Column("municipality", "Kommune / Municipality", _D),
            Column("received", "Mottatt / Received"),
            Column("committed", "Lagret / Committed"),
            Column("rejected", "Avvist / Rejected"),
            Column("sent_as", "Sendt som / Sent as", _T),
        ),
        rows=tuple(
            {"municipality": m} | dict(totals[m]) | {"sent_as": sent_as.get(m)}
            for m in sorted(totals)
        ),
        groups=(("committed", "rejected"),),
    )


def _numbers_as_sent(data: ReportData) -> dict[str, str]:
    """Per today's number, the other numbers its counted events and rejections were sent
    under (``"1201"``; several joined by ``", "``). Numbers only, never how many: the
    counts beside them are suppressed as they are."""
    older: dict[str, set[str]] = defaultdict(set)
    for message in data.messages:
        if message.municipality_as_sent is not None:
            older[message.municipality].add(message.municipality_as_sent)
    for rejection, municipality in data.attributed_rejections:
        if rejection.municipality_as_sent is not None:
            older[municipality].add(rejection.municipality_as_sent)
    return {today: ", ".join(sorted(numbers)) for today, numbers in older.items()}


def completeness_drops(
    series: Mapping[tuple[Unit, date], int],
    *,
    ratio: float = 0.6,
    min_expected: float = 5.0,
    last_day: date | None = None,
) -> list[tuple[Unit, date, int, float]]:
    """Days whose count fell below ``ratio`` x the mean of the same weekday in the four
    weeks before (missing days count as zero), where that mean is at least
    ``min_expected``. Days from each municipality's first day to ``last_day`` (default:
    the last day in the series) are examined, so a municipality that stops sending
    altogether is found. Returns (municipality, day, count, expected)."""
    by_municipality: dict[Unit, dict[date, int]] = defaultdict(dict)
    for (muni, day), count in series.items():
        by_municipality[muni][day] = count
    if not by_municipality:
        return []
    end = last_day or max(day for _, day in series)
    drops = []
    for muni, counts in sorted(by_municipality.items()):
        day = min(counts) + timedelta(days=28)
        while day <= end:
            history = [counts.get(day - timedelta(weeks=w), 0) for w in range(1, 5)]
            expected = fmean(history)
            count = counts.get(day, 0)
            if expected >= min_expected and count < ratio * expected:
                drops.append((muni, day, count, expected))
            day += timedelta(days=1)
    return drops


def _drops_table(data: ReportData, settings: QualitySettings) -> Table:
    received: Counter[tuple[str, date]] = Counter()
    for message in data.messages:
        received[(message.municipality, local_day(message.committed_at))] += 1
    for rejection, muni in data.attributed_rejections:
        received[(muni, local_day(rejection.rejected_at))] += 1
    clinical: Counter[tuple[str, date]] = Counter(
        (record.municipality, local_day(record.clinical_time)) for record in data.records
    )
    rows = []
    for basis, series in (("received", received), ("clinical", clinical)):
        for muni, day, count, expected in completeness_drops(
            series, ratio=settings.drop_ratio, min_expected=settings.drop_min_expected
        ):
            if _in_year(day, settings):
                rows.append(
                    {
                        "basis": basis,
                        "municipality": muni,
                        "day": day.isoformat(),
                        "count": count,
                        "expected": round(expected, 1),
                        "ratio": round(count / expected, 3),
                    }
                )
    return Table(
        key="completeness_drops",
        title="Brå fall i antall / Completeness drops",
        description=f"Dager under {settings.drop_ratio:.0%} av snittet for samme ukedag de fire "
        "foregående ukene. Days below that share of the same weekday's mean over the "
        "previous four weeks; basis received = day of receipt, clinical = day of the event.",
        columns=(
            Column("basis", "Grunnlag / Basis", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("day", "Dag / Day", _D),
            Column("count", "Antall / Count"),
            Column("expected", "Forventet / Expected", _S),
            Column("ratio", "Andel av forventet / Ratio", _S),
        ),
        rows=tuple(rows),
        suppress=False,
    )


def _persons_many_municipalities(data: ReportData, settings: QualitySettings) -> Table:
    seen: dict[tuple[int, str], set[str]] = defaultdict(set)
    for record in data.records:
        year = local_day(record.clinical_time).year
        if settings.year is None or year == settings.year:
            seen[(year, record.person_key)].add(record.municipality)
    rows = [
        {"year": year, "person_key": person, "municipalities": len(munis)}
        for (year, person), munis in sorted(seen.items())
        if len(munis) >= settings.multi_municipality_min
    ]
    return Table(
        key="persons_many_municipalities",
        title=f"Personer fra {settings.multi_municipality_min} eller flere kommuner samme år / "
        f"Persons reported from {settings.multi_municipality_min} or more municipalities in a year",
        description="Pseudonym; slå opp med nøkkelen. Likely test persons: look up with the key.",
        columns=(
            Column("year", "År / Year", _D),
            Column("person_key", "Pseudonym", _D),
            Column("municipalities", "Kommuner / Municipalities"),
        ),
        rows=tuple(rows),
        suppress=False,
    )


def _date_flags(data: ReportData, settings: QualitySettings) -> Table:
    late = timedelta(days=settings.late_registration_days)
    counts: Counter[tuple[str, str, int]] = Counter()
    totals: Counter[tuple[str, int]] = Counter()
    midnight: Counter[tuple[str, int]] = Counter()
    hst_days: Counter[tuple[str, date]] = Counter()
    for record in data.records:
        local = record.clinical_time.astimezone(OSLO)
        key = (record.municipality, local.year)
        totals[key] += 1
        if record.registered_at - record.clinical_time > late:
            counts[("late-registration", *key)] += 1
        if record.clinical_time - record.registered_at > timedelta(days=1):
            counts[("registered-before-clinical", *key)] += 1
        if (local.hour, local.minute, local.second) == (0, 0, 0):
            midnight[key] += 1
        if record.event_type == "hst.consultation":
            hst_days[(record.municipality, local.date())] += 1
    rows: list[dict[str, object]] = [
        {
            "rule": rule,
            "municipality": muni,
            "year": year,
            "period": str(year),
            "records": count,
            "of_records": totals[(muni, year)],
        }
        for (rule, muni, year), count in sorted(counts.items())
    ]
    for (muni, year), count in sorted(midnight.items()):
        total = totals[(muni, year)]
        if count >= settings.midnight_min and count >= settings.midnight_share * total:
            rows.append(
                {
                    "rule": "midnight-bulk",
                    "municipality": muni,
                    "year": year,
                    "period": str(year),
                    "records": count,
                    "of_records": total,
                }
            )
    for (muni, day), count in sorted(hst_days.items()):
        if day.weekday() < 5 or count < settings.weekend_spike_min:
            continue
        weekdays = [day - timedelta(days=offset) for offset in range(1, 29)]
        baseline = fmean(hst_days.get((muni, d), 0) for d in weekdays if d.weekday() < 5)
        if count > settings.weekend_spike_factor * baseline:
            rows.append(
                {
                    "rule": "weekend-spike",
                    "municipality": muni,
                    "year": day.year,
                    "period": day.isoformat(),
                    "records": count,
                    "of_records": totals[(muni, day.year)],
                }
            )
    rows = [row for row in rows if settings.year is None or row["year"] == settings.year]
    return Table(
        key="date_flags",
        title="Mistenkelige datoer / Suspicious dates",
        description="late-registration: registrert over "
        f"{settings.late_registration_days} dager etter hendelsen; registered-before-clinical: "
        "registrert før hendelsen; midnight-bulk: mange tider nøyaktig 00:00; weekend-spike: "
        "mange HST-konsultasjoner en lørdag/søndag.",
        columns=(
            Column("rule", "Regel / Rule", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("year", "År / Year", _D),
            Column("period", "Periode / Period", _D),
            Column("records", "Poster / Records"),
            Column("of_records", "Av poster / Of records"),
        ),
        rows=tuple(rows),
        suppress=False,
    )


def _long_stays(data: ReportData, settings: QualitySettings) -> Table:
    limit = timedelta(days=settings.max_stay_days)
    rows = []
    for stay in sorted(data.stays, key=lambda s: (s.unit_org, s.stay_id)):
        if stay.admitted_at is None:
            continue
        end = stay.discharged_at or settings.as_of
        if end - stay.admitted_at <= limit:
            continue
        if settings.year is not None and local_day(stay.admitted_at).year != settings.year:
            continue
        rows.append(
            {
                "kind": "open" if stay.discharged_at is None else "long",
                "municipality": stay.municipality or UNKNOWN_MUNICIPALITY,
                "unit_org": stay.unit_org,
                "stay_id": stay.stay_id,
                "admitted_day": local_day(stay.admitted_at).isoformat(),
                "days": round((end - stay.admitted_at).total_seconds() / 86400, 1),
            }
        )
    return Table(
        key="long_stays",
        title=f"Opphold over {settings.max_stay_days} dager / Stays over "
        f"{settings.max_stay_days} days",
        description="open: ikke utskrevet ved rapportdato / not discharged at the report date; "
        "long: utskrevet etter mer enn grensen / discharged after more than the limit.",
        columns=(
            Column("kind", "Type / Kind", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("unit_org", "Virksomhet / Unit", _D),
            Column("stay_id", "Opphold-ID / Stay id", _D),
            Column("admitted_day", "Innlagt / Admitted", _T),
            Column("days", "Dager / Days", _S),
        ),
        rows=tuple(rows),
        suppress=False,
    )


def _units(data: ReportData) -> Table:
    committed: Counter[str] = Counter(record.unit_org for record in data.records)
    municipalities: dict[str, set[str]] = defaultdict(set)
    for record in data.records:
        municipalities[record.unit_org].add(record.municipality)
    rejected: Counter[str] = Counter(r.unit_org for r in data.rejections if r.unit_org)
    rows = []
    for unit in sorted(set(committed) | set(rejected)):
        rows.append(
            {
                "unit_org": unit,
                "municipalities": " ".join(sorted(municipalities.get(unit, ()))),
                "records": committed[unit],
                "rejected": rejected[unit],
                "note": _org_note(unit),
            }
        )
    return Table(
        key="units",
        title="Virksomheter / Units",
        description="Organisasjonsnummer under 800 000 000 tildeles ikke virksomheter "
        "(test eller feil). Org numbers below 800 000 000 are not assigned to organisations.",
        columns=(
            Column("unit_org", "Virksomhet / Unit", _D),
            Column("municipalities", "Kommuner / Municipalities", _T),
            Column("records", "Poster / Records"),
            Column("rejected", "Avvist / Rejected"),
            Column("note", "Merknad / Note", _T),
        ),
        rows=tuple(rows),
        suppress=False,
    )


def _org_note(org_number: str) -> str:
    if not org_number.isdigit() or len(org_number) != 9:
        return "invalid-org-number"
    if int(org_number) < 800_000_000:
        return "org-number-outside-assigned-range"
    return ""


def _contract_rejections(data: ReportData, settings: QualitySettings) -> Table:
    contract = {Reason.INVALID_CONTRACT.value, Reason.UNKNOWN_SCHEMA_VERSION.value}
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for rejection, muni in data.attributed_rejections:
        if rejection.reason not in contract or not _in_year(
            local_day(rejection.rejected_at), settings
        ):
            continue
        sender = "" if rejection.sender_her_id is None else str(rejection.sender_her_id)
        counts[(sender, muni, rejection.reason, rejection.event_type or "")] += 1
    return Table(
        key="contract_rejections",
        title="Avvist etter kontrakten / Contract rejections per sender",
        description="Regelen (f.eks. ukjent lokal kode) lagres ikke: bare årsaken. "
        "The violated rule is not stored, only the reason.",
        columns=(
            Column("sender_her_id", "Avsender HER-id / Sender HER-id", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("reason", "Årsak / Reason", _D),
            Column("event_type", "Hendelsestype / Event type", _D),
            Column("rejected", "Avvist / Rejected"),
        ),
        rows=tuple(
            {"sender_her_id": s, "municipality": m, "reason": r, "event_type": e, "rejected": n}
            for (s, m, r, e), n in sorted(counts.items())
        ),
        suppress=False,
    )
