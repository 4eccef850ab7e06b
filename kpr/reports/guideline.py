"""Guideline follow-up figures (the HST guideline and programme, seeds 000 and 001; KAD/ØHD).

Definitions (all on effective records: corrections applied, cancelled records left out):

* **Programme coverage**, per municipality, year and programme consultation. A child is
  a person with at least one child-health-station or school-health consultation; the
  child belongs to the municipality of its most recent such consultation. The
  consultation *falls due* at the age in :data:`DUE_AGE_DAYS` (child health station) or
  at the start of the school year in which the child is in that grade (August, school
  start in the calendar year the child turns six). *Eligible* in year Y: the due date
  lies in Y, on or after 2017-01-01 (KPR holds nothing earlier), and due date +
  :data:`GRACE_DAYS` (school: the end of the school year) lies before the report date,
  so children who cannot have had it yet are not counted. *Received*: the child has a
  completed consultation with that programme code, at any time and in any municipality.
* **Weighing and measuring**: completed, attended child-health-station and school
  consultations; weighed = weight reported, measured = height reported.
* **Breastfeeding** at the 6-week, 4-, 6- and 12-month consultations: completed
  consultations by reported status (exclusive, partial, none, not reported).
* **Themes**: per theme, completed consultations in which it was addressed (any code but
  not-addressed), marked not-addressed, or not recorded at all, and the follow-up codes.
* **KAD/ØHD**: stays by admission year (discharge year when the admission is missing);
  length of stay of complete stays: median and p90 (nearest rank), in hours; where
  patients came from and went to ("Ut til" categories); top diagnoses per code system.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import median

from contracts.events.codes import (
    NORWEGIAN_LABELS,
    Assessment,
    BreastfeedingStatus,
    CounterpartCategory,
    ProgrammeConsultation,
    ServiceArea,
    Theme,
)
from kpr.reports.quality import OSLO, UNKNOWN_MUNICIPALITY, local_day
from kpr.reports.queries import EffectiveRecord, ReportData, StayRow
from kpr.reports.tables import Column, ColumnKind, Share, Table

__all__ = [
    "BREASTFEEDING_CONSULTATIONS",
    "DUE_AGE_DAYS",
    "GRACE_DAYS",
    "SCHOOL_GRADE_OFFSET",
    "GuidelineSettings",
    "due_date",
    "guideline_tables",
    "nearest_rank",
]

_P = ProgrammeConsultation
#: Age in days at which each child-health-station consultation falls due.
DUE_AGE_DAYS: dict[ProgrammeConsultation, int] = {
    _P.HOME_VISIT_7_10_DAYS: 7,
    _P.WEEKS_4: 28,
    _P.WEEKS_6: 42,
    _P.MONTHS_2: 61,
    _P.MONTHS_3: 91,
    _P.MONTHS_4: 122,
    _P.MONTHS_5: 152,
    _P.MONTHS_6: 183,
    _P.MONTHS_8: 244,
    _P.MONTHS_10: 304,
    _P.MONTHS_12: 365,
    _P.MONTHS_15: 456,
    _P.MONTHS_17_18: 517,
    _P.YEARS_2: 730,
    _P.YEARS_4: 1461,
}
#: School consultations: school year starting in August of birth year + this offset.
SCHOOL_GRADE_OFFSET: dict[ProgrammeConsultation, int] = {
    _P.SCHOOL_START: 6,
    _P.GRADE_2: 7,
    _P.GRADE_3: 8,
    _P.GRADE_6: 11,
    _P.GRADE_7: 12,
    _P.GRADE_8: 13,
    _P.GRADE_10: 15,
    _P.UPPER_SECONDARY_1: 16,
}
#: How long after the due age a child-health-station consultation still counts as on time.
GRACE_DAYS = 60
BREASTFEEDING_CONSULTATIONS = (_P.WEEKS_6, _P.MONTHS_4, _P.MONTHS_6, _P.MONTHS_12)
_FIRST_DAY = date(2017, 1, 1)
_CHILD_AREAS = {ServiceArea.CHILD_HEALTH_STATION.value, ServiceArea.SCHOOL_HEALTH.value}
_D = ColumnKind.DIMENSION
_S = ColumnKind.STATISTIC
_SHARE = ColumnKind.SHARE
_MUNI = Column("municipality", "Kommune / Municipality", _D)
_YEAR = Column("year", "År / Year", _D)


@dataclass(frozen=True)
class GuidelineSettings:
    as_of: datetime
    year: int | None = None
    top_diagnoses: int = 10


def _label(value: str) -> str:
    """The Norwegian term for a code, or the code itself."""
    for enum in (ProgrammeConsultation, Theme, CounterpartCategory, Assessment):
        label = NORWEGIAN_LABELS.get((enum, value))
        if label is not None:
            return label
    return value


def due_date(consultation: ProgrammeConsultation, birth: date) -> tuple[date, date] | None:
    """(due date, last day it counts as on time), or None outside the programme."""
    if consultation in DUE_AGE_DAYS:
        due = birth + timedelta(days=DUE_AGE_DAYS[consultation])
        return due, due + timedelta(days=GRACE_DAYS)
    if consultation in SCHOOL_GRADE_OFFSET:
        start = date(birth.year + SCHOOL_GRADE_OFFSET[consultation], 8, 1)
        return start, date(start.year + 1, 6, 30)
    return None


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` at or below."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def guideline_tables(data: ReportData, settings: GuidelineSettings) -> list[Table]:
    consultations = [r for r in data.records if r.event_type == "hst.consultation"]
    return [
        _coverage(consultations, settings),
        _measurements(consultations, settings),
        _breastfeeding(consultations, settings),
        _themes(consultations, settings),
        _theme_follow_up(consultations, settings),
        *_kad(data.stays, settings),
    ]


def _year_ok(year: int, settings: GuidelineSettings) -> bool:
    return settings.year is None or year == settings.year


def _completed(record: EffectiveRecord) -> bool:
    return record.content.get("status") == "completed"


def _coverage(consultations: Sequence[EffectiveRecord], settings: GuidelineSettings) -> Table:
    children: dict[str, list[EffectiveRecord]] = defaultdict(list)
    for record in consultations:
        if record.content.get("service_area") in _CHILD_AREAS:
            children[record.person_key].append(record)
    as_of = local_day(settings.as_of)
    eligible: Counter[tuple[str, int, str]] = Counter()
    received: Counter[tuple[str, int, str]] = Counter()
    for records in children.values():
        latest = max(records, key=lambda r: r.clinical_time)
        birth = latest.birth_date
        done = {str(r.content["programme_consultation"]) for r in records if _completed(r)}
        for consultation in (*DUE_AGE_DAYS, *SCHOOL_GRADE_OFFSET):
            window = due_date(consultation, birth)
            if window is None:
                continue
            due, last = window
            if due < _FIRST_DAY or last > as_of or not _year_ok(due.year, settings):
                continue
            key = (latest.municipality, due.year, consultation.value)
            eligible[key] += 1
            if consultation.value in done:
                received[key] += 1
    order = {c.value: i for i, c in enumerate((*DUE_AGE_DAYS, *SCHOOL_GRADE_OFFSET))}
    rows = tuple(
        {
            "municipality": m,
            "year": y,
            "consultation": c,
            "label": _label(c),
            "eligible": eligible[(m, y, c)],
            "received": received[(m, y, c)],
        }
        for m, y, c in sorted(eligible, key=lambda k: (k[0], k[1], order[k[2]]))
    )
    return Table(
        key="programme_coverage",
        title="Barn som fikk anbefalt konsultasjon / Children who received the recommended "
        "consultation",
        description="Nevner: barn i dataene som nådde alderen for konsultasjonen i året. "
        "Denominator: children in the data due for the consultation that year; numerator: "
        "those with a completed consultation of that code.",
        columns=(
            _MUNI,
            _YEAR,
            Column("consultation", "Konsultasjon / Consultation", _D),
            Column("label", "Navn / Name", ColumnKind.TEXT),
            Column("eligible", "Barn i alderen / Children due"),
            Column("received", "Fikk konsultasjonen / Received"),
            Column("share", "Andel / Share", _SHARE),
        ),
        rows=rows,
        complements=(("eligible", "received"),),
        shares=(Share("share", "received", "eligible"),),
    )


def _measurements(consultations: Sequence[EffectiveRecord], settings: GuidelineSettings) -> Table:
    counts: dict[tuple[str, int, str], Counter[str]] = defaultdict(Counter)
    for record in consultations:
        content = record.content
        area = str(content.get("service_area"))
        year = local_day(record.clinical_time).year
        if area not in _CHILD_AREAS or not _completed(record) or not _year_ok(year, settings):
            continue
        if content.get("form") != "attended":
            continue
        measured = content.get("measurements") or {}
        tally = counts[(record.municipality, year, area)]
        tally["consultations"] += 1
        tally["weighed"] += measured.get("weight") is not None
        tally["measured"] += measured.get("height") is not None
        tally["both"] += measured.get("weight") is not None and measured.get("height") is not None
    return Table(
        key="weighing_measuring",
        title="Veiing og måling / Weighing and measuring",
        description="Gjennomførte konsultasjoner med oppmøte. Completed attended consultations.",
        columns=(
            _MUNI,
            _YEAR,
            Column("service_area", "Tjeneste / Service", _D),
            Column("consultations", "Konsultasjoner / Consultations"),
            Column("weighed", "Veid / Weighed"),
            Column("measured", "Målt / Measured"),
            Column("both", "Veid og målt / Both"),
            Column("share_both", "Andel veid og målt / Share both", _SHARE),
        ),
        rows=tuple(
            {"municipality": m, "year": y, "service_area": a}
            | {key: tally[key] for key in ("consultations", "weighed", "measured", "both")}
            for (m, y, a), tally in sorted(counts.items())
        ),
        complements=(
            ("consultations", "both"),
            ("consultations", "weighed"),
            ("consultations", "measured"),
        ),
        shares=(Share("share_both", "both", "consultations"),),
    )


def _breastfeeding(consultations: Sequence[EffectiveRecord], settings: GuidelineSettings) -> Table:
    wanted = {c.value for c in BREASTFEEDING_CONSULTATIONS}
    statuses = [s.value for s in BreastfeedingStatus]
    counts: dict[tuple[str, int, str], Counter[str]] = defaultdict(Counter)
    for record in consultations:
        consultation = str(record.content.get("programme_consultation"))
        year = local_day(record.clinical_time).year
        if consultation not in wanted or not _completed(record) or not _year_ok(year, settings):
            continue
        tally = counts[(record.municipality, year, consultation)]
        tally["consultations"] += 1
        tally[str(record.content.get("breastfeeding") or "not_reported")] += 1
    order = {c.value: i for i, c in enumerate(BREASTFEEDING_CONSULTATIONS)}
    return Table(
        key="breastfeeding",
        title="Ammestatus / Breastfeeding status",
        description="Gjennomførte konsultasjoner ved 6 uker, 4, 6 og 12 måneder.",
        columns=(
            _MUNI,
            _YEAR,
            Column("consultation", "Konsultasjon / Consultation", _D),
            Column("consultations", "Konsultasjoner / Consultations"),
            Column("exclusive", "Fullt ammet / Exclusive"),
            Column("partial", "Delvis ammet / Partial"),
            Column("none", "Ikke ammet / None"),
            Column("not_reported", "Ikke oppgitt / Not reported"),
            Column("share_exclusive", "Andel fullt ammet / Share exclusive", _SHARE),
        ),
        rows=tuple(
            {
                "municipality": m,
                "year": y,
                "consultation": c,
                "consultations": tally["consultations"],
            }
            | {s: tally[s] for s in (*statuses, "not_reported")}
            for (m, y, c), tally in sorted(
                counts.items(), key=lambda i: (*i[0][:2], order[i[0][2]])
            )
        ),
        groups=((*statuses, "not_reported"),),
        shares=(Share("share_exclusive", "exclusive", "consultations"),),
    )


_FOLLOW_UP = ("ok", "follow-up-next", "extra-consultation", "referred", "cooperation")


def _themes(consultations: Sequence[EffectiveRecord], settings: GuidelineSettings) -> Table:
    completed: Counter[tuple[str, int]] = Counter()
    codes: dict[tuple[str, int, str], Counter[str]] = defaultdict(Counter)
    for record in consultations:
        year = local_day(record.clinical_time).year
        if not _completed(record) or not _year_ok(year, settings):
            continue
        completed[(record.municipality, year)] += 1
        for entry in record.content.get("themes") or ():
            codes[(record.municipality, year, str(entry["theme"]))][str(entry["assessment"])] += 1
    rows = []
    for (muni, year), total in sorted(completed.items()):
        for theme in Theme:
            tally = codes.get((muni, year, theme.value), Counter())
            addressed = sum(tally[code] for code in _FOLLOW_UP)
            not_addressed = tally["not-addressed"]
            rows.append(
                {
                    "municipality": muni,
                    "year": year,
                    "theme": theme.value,
                    "label": _label(theme),
                    "consultations": total,
                    "addressed": addressed,
                    "not_addressed": not_addressed,
                    "not_recorded": total - addressed - not_addressed,
                }
                | {code.replace("-", "_"): tally[code] for code in _FOLLOW_UP}
            )
    follow_up = tuple(code.replace("-", "_") for code in _FOLLOW_UP)
    return Table(
        key="themes",
        title="Temaer tatt opp / Themes addressed",
        description="Per tema: gjennomførte konsultasjoner der temaet ble tatt opp (alle koder "
        "unntatt «Ikke tatt opp»), merket ikke tatt opp, eller ikke registrert; og "
        "oppfølgingskodene.",
        columns=(
            _MUNI,
            _YEAR,
            Column("theme", "Tema / Theme", _D),
            Column("label", "Navn / Name", ColumnKind.TEXT),
            Column("consultations", "Konsultasjoner / Consultations"),
            Column("addressed", "Tatt opp / Addressed"),
            Column("not_addressed", "Ikke tatt opp / Not addressed"),
            Column("not_recorded", "Ikke registrert / Not recorded"),
            Column("ok", "OK"),
            Column("follow_up_next", "Følges opp neste gang / Follow up next"),
            Column("extra_consultation", "Ekstra konsultasjon / Extra consultation"),
            Column("referred", "Henvist / Referred"),
            Column("cooperation", "Tverrfaglig samarbeid / Cooperation"),
            Column("share_addressed", "Andel tatt opp / Share addressed", _SHARE),
        ),
        rows=tuple(rows),
        groups=(("addressed", "not_addressed", "not_recorded"), follow_up),
        shares=(Share("share_addressed", "addressed", "consultations"),),
    )


def _theme_follow_up(
    consultations: Sequence[EffectiveRecord], settings: GuidelineSettings
) -> Table:
    counts: Counter[tuple[str, int, str, str]] = Counter()
    for record in consultations:
        year = local_day(record.clinical_time).year
        if not _completed(record) or not _year_ok(year, settings):
            continue
        for entry in record.content.get("themes") or ():
            subs: Iterable[str] = (
                [entry["extra_consultation"]]
                if entry.get("extra_consultation")
                else [entry["referral"]]
                if entry.get("referral")
                else entry.get("cooperation_partners") or ()
            )
            for sub in subs:
                counts[(record.municipality, year, str(entry["assessment"]), str(sub))] += 1
    return Table(
        key="theme_follow_up",
        title="Oppfølging: type / Follow-up detail",
        columns=(
            _MUNI,
            _YEAR,
            Column("assessment", "Kode / Code", _D),
            Column("detail", "Valg / Sub-choice", _D),
            Column("count", "Antall / Count"),
        ),
        rows=tuple(
            {"municipality": m, "year": y, "assessment": a, "detail": d, "count": n}
            for (m, y, a, d), n in sorted(counts.items())
        ),
    )


def _stay_year(stay: StayRow) -> int | None:
    moment = stay.admitted_at or stay.discharged_at
    return None if moment is None else moment.astimezone(OSLO).year


def _kad(stays: Sequence[StayRow], settings: GuidelineSettings) -> list[Table]:
    grouped: dict[tuple[str, int], list[StayRow]] = defaultdict(list)
    for stay in stays:
        year = _stay_year(stay)
        if year is not None and _year_ok(year, settings):
            grouped[(stay.municipality or UNKNOWN_MUNICIPALITY, year)].append(stay)
    summary_rows = []
    came: list[dict[str, object]] = []
    went: list[dict[str, object]] = []
    diagnoses: list[dict[str, object]] = []
    categories = [c.value for c in CounterpartCategory]
    for (muni, year), group in sorted(grouped.items()):
        hours = [
            s.length_of_stay_hours
            for s in group
            if s.complete and s.length_of_stay_hours is not None
        ]
        summary_rows.append(
            {
                "municipality": muni,
                "year": year,
                "stays": len(group),
                "complete": sum(s.complete for s in group),
                "incomplete": sum(not s.complete for s in group),
                "los_median_hours": round(median(hours), 1) if hours else None,
                "los_p90_hours": round(nearest_rank(hours, 0.9), 1) if hours else None,
            }
        )
        referred = Counter(_category(s.detail.get("referred_by")) for s in group if s.admitted_at)
        came.append(
            {"municipality": muni, "year": year, "stays": sum(referred.values())}
            | {c: referred[c] for c in categories}
        )
        discharged = Counter(
            _category(s.detail.get("discharged_to")) for s in group if s.discharged_at
        )
        went.append(
            {"municipality": muni, "year": year, "stays": sum(discharged.values())}
            | {c: discharged[c] for c in categories}
        )
        for kind, field in (
            ("admission", "admission_diagnoses"),
            ("discharge", "discharge_diagnoses"),
        ):
            codes: Counter[tuple[str, str]] = Counter()
            for stay in group:
                for diagnosis in stay.detail.get(field) or ():
                    codes[(str(diagnosis["system"]), str(diagnosis["code"]))] += 1
            by_system: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for (system, code), count in codes.items():
                by_system[system].append((-count, code))
            for system in sorted(by_system):
                for rank, (negative, code) in enumerate(
                    sorted(by_system[system])[: settings.top_diagnoses], 1
                ):
                    diagnoses.append(
                        {
                            "municipality": muni,
                            "year": year,
                            "kind": kind,
                            "system": system,
                            "rank": rank,
                            "code": code,
                            "stays": -negative,
                        }
                    )
    category_columns = tuple(Column(c, f"{_label(c)} / {c}") for c in categories)
    return [
        Table(
            key="kad_stays",
            title="KAD/ØHD-opphold og liggetid / KAD stays and length of stay",
            description="Liggetid i timer for fullførte opphold: median og 90-persentil. "
            "Length of stay in hours of complete stays (nearest-rank p90).",
            columns=(
                _MUNI,
                _YEAR,
                Column("stays", "Opphold / Stays"),
                Column("complete", "Fullførte / Complete"),
                Column("incomplete", "Ufullstendige / Incomplete"),
                Column("los_median_hours", "Liggetid median (t) / LOS median (h)", _S),
                Column("los_p90_hours", "Liggetid p90 (t) / LOS p90 (h)", _S),
            ),
            rows=tuple(summary_rows),
            groups=(("complete", "incomplete"),),
            statistic_bases=(("los_median_hours", "complete"), ("los_p90_hours", "complete")),
        ),
        Table(
            key="kad_referred_by",
            title="Innlagt fra / Referred by",
            columns=(_MUNI, _YEAR, Column("stays", "Opphold / Stays"), *category_columns),
            rows=tuple(came),
            groups=(tuple(categories),),
        ),
        Table(
            key="kad_discharged_to",
            title="Utskrevet til (Ut til) / Discharged to",
            columns=(_MUNI, _YEAR, Column("stays", "Opphold / Stays"), *category_columns),
            rows=tuple(went),
            groups=(tuple(categories),),
        ),
        Table(
            key="kad_diagnoses",
            title=f"Hyppigste diagnoser (topp {settings.top_diagnoses}) / Top diagnoses",
            columns=(
                _MUNI,
                _YEAR,
                Column("kind", "Type / Kind", _D),
                Column("system", "Kodeverk / Code system", _D),
                Column("rank", "Rang / Rank", _D),
                Column("code", "Kode / Code", _D),
                Column("stays", "Opphold / Stays"),
            ),
            rows=tuple(diagnoses),
        ),
    ]


def _category(counterpart: object) -> str:
    if isinstance(counterpart, dict) and counterpart.get("category"):
        return str(counterpart["category"])
    return CounterpartCategory.UNKNOWN.value
