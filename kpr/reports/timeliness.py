"""Timeliness and completeness per sender: who delivers late, who has gone quiet.

Continuous capture is the register's point (seed 003): this shows, per sending EPJ
installation and municipality, how much arrives, how late, and on which days nothing
came that should have. Days are Norwegian local days; events are counted under the rule
of docs/REPORTS.md (each once, in its final state). Definitions:

* **Sender**: the HER-id the event's signed letter names (one EPJ installation), with
  the EPJ systems its events name (``source_system``).
* **Events**: final events of the sender for the municipality, by the day of their
  *first* commit (when the register first had them); ``events_per_day`` spreads them over
  the days from the first such commit to the report date.
* **Delay**: clinical time (consultation, admission, discharge) to first commit, in
  hours: median and p90 (nearest rank). ``backfilled`` counts the events that arrived
  more than :attr:`TimelinessSettings.backfill_days` (30) after the clinical time, so a
  long delay from a back-fill can be told from a slow live feed.
* **Gap days**: days with no event where the same weekday's mean over the four weeks
  before is at least :attr:`TimelinessSettings.gap_min_expected` (5); the same test as
  the completeness drops, at a count of zero, run up to the report date so a sender that
  stopped is found. Prometheus raises the same finding live (``KprSenderMunicipalityGap``).
* **Rejected**: messages still rejected (dead-lettered, not replayed into a commit), by
  the sender HER-id their header names and the municipality as in the quality report;
  ``share_rejected`` of everything received (events + rejected).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from statistics import median

from kpr.reports.guideline import nearest_rank
from kpr.reports.quality import completeness_drops, local_day
from kpr.reports.queries import EffectiveRecord, ReportData
from kpr.reports.tables import Column, ColumnKind, Share, Table

__all__ = ["TimelinessSettings", "timeliness_tables"]

_D = ColumnKind.DIMENSION
_T = ColumnKind.TEXT
_S = ColumnKind.STATISTIC
# Below this share of the expected count a day is not a gap: only days with nothing are.
_ONLY_EMPTY_DAYS = 1e-9


@dataclass(frozen=True)
class TimelinessSettings:
    as_of: datetime
    year: int | None = None
    backfill_days: int = 30
    gap_min_expected: float = 5.0


SenderKey = tuple[int, str]


def timeliness_tables(data: ReportData, settings: TimelinessSettings) -> list[Table]:
    by_sender: dict[SenderKey, list[EffectiveRecord]] = defaultdict(list)
    for record in data.records:
        by_sender[(record.sender_her_id, record.municipality)].append(record)
    gaps = _gap_days(by_sender, settings)
    return [
        _summary(data, by_sender, gaps, settings),
        _gap_table(gaps),
        _rejection_reasons(data, settings),
    ]


def _in_year(day: date, settings: TimelinessSettings) -> bool:
    return settings.year is None or day.year == settings.year


def _gap_days(
    by_sender: dict[SenderKey, list[EffectiveRecord]], settings: TimelinessSettings
) -> dict[SenderKey, list[tuple[date, float]]]:
    series: Counter[tuple[SenderKey, date]] = Counter(
        (key, local_day(record.first_committed_at))
        for key, records in by_sender.items()
        for record in records
    )
    found: dict[SenderKey, list[tuple[date, float]]] = defaultdict(list)
    for key, day, _count, expected in completeness_drops(
        series,
        ratio=_ONLY_EMPTY_DAYS,
        min_expected=settings.gap_min_expected,
        last_day=local_day(settings.as_of),
    ):
        if _in_year(day, settings):
            found[key].append((day, expected))
    return found


def _summary(
    data: ReportData,
    by_sender: dict[SenderKey, list[EffectiveRecord]],
    gaps: dict[SenderKey, list[tuple[date, float]]],
    settings: TimelinessSettings,
) -> Table:
    rejected: Counter[SenderKey] = Counter()
    for rejection, municipality in data.attributed_rejections:
        sender = rejection.sender_her_id
        if sender is None or not _in_year(local_day(rejection.rejected_at), settings):
            continue
        rejected[(sender, municipality)] += 1
    backfill_hours = settings.backfill_days * 24
    today = local_day(settings.as_of)
    rows = []
    for key in sorted(set(by_sender) | set(rejected)):
        records = [
            r for r in by_sender.get(key, []) if _in_year(local_day(r.first_committed_at), settings)
        ]
        delays = [(r.first_committed_at - r.clinical_time).total_seconds() / 3600 for r in records]
        days = sorted(local_day(r.first_committed_at) for r in records)
        span = (today - days[0]).days + 1 if days else 0
        rows.append(
            {
                "sender_her_id": key[0],
                "municipality": key[1],
                "systems": " ".join(sorted({str(r.content.get("source_system")) for r in records})),
                "first_day": days[0].isoformat() if days else "",
                "last_day": days[-1].isoformat() if days else "",
                "received": len(records) + rejected[key],
                "events": len(records),
                "rejected": rejected[key],
                "events_per_day": round(len(records) / span, 2) if span > 0 else None,
                "delay_median_hours": round(median(delays), 1) if delays else None,
                "delay_p90_hours": round(nearest_rank(delays, 0.9), 1) if delays else None,
                "backfilled": sum(delay > backfill_hours for delay in delays),
                "gap_days": len(gaps.get(key, ())),
            }
        )
    return Table(
        key="sender_timeliness",
        title="Tidsriktighet per avsender / Timeliness per sender",
        description="Hendelser etter første lagring, forsinkelse fra klinisk tid til lagring "
        "(timer), dager uten data der data var ventet. Events by first commit, delay from the "
        "clinical time to commit (hours), days with nothing where something was expected.",
        columns=(
            Column("sender_her_id", "Avsender HER-id / Sender HER-id", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("systems", "EPJ-system / EPJ system", _T),
            Column("first_day", "Første / First", _T),
            Column("last_day", "Siste / Last", _T),
            Column("received", "Mottatt / Received"),
            Column("events", "Hendelser / Events"),
            Column("rejected", "Avvist / Rejected"),
            Column("share_rejected", "Andel avvist / Share rejected", ColumnKind.SHARE),
            Column("events_per_day", "Per dag / Per day", _S),
            Column("delay_median_hours", "Forsinkelse median (t) / Delay median (h)", _S),
            Column("delay_p90_hours", "Forsinkelse p90 (t) / Delay p90 (h)", _S),
            Column("backfilled", "Etterregistrert / Back-filled"),
            Column("gap_days", "Dager uten data / Gap days", _S),
        ),
        rows=tuple(rows),
        groups=(("events", "rejected"),),
        complements=(("events", "backfilled"),),
        shares=(Share("share_rejected", "rejected", "received"),),
        statistic_bases=(
            ("events_per_day", "events"),
            ("delay_median_hours", "events"),
            ("delay_p90_hours", "events"),
            ("gap_days", "events"),
        ),
    )


def _gap_table(gaps: dict[SenderKey, list[tuple[date, float]]]) -> Table:
    rows = [
        {
            "sender_her_id": sender,
            "municipality": municipality,
            "day": day.isoformat(),
            "expected": round(expected, 1),
        }
        for (sender, municipality), days in sorted(gaps.items())
        for day, expected in days
    ]
    return Table(
        key="sender_gap_days",
        title="Dager uten data per avsender / Gap days per sender",
        description="Dager uten hendelser der samme ukedag de fire foregående ukene hadde "
        "minst det forventede. Days with no event where the same weekday's four-week mean "
        "was at least the expected count.",
        columns=(
            Column("sender_her_id", "Avsender HER-id / Sender HER-id", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("day", "Dag / Day", _D),
            Column("expected", "Forventet / Expected", _S),
        ),
        rows=tuple(rows),
        suppress=False,
    )


def _rejection_reasons(data: ReportData, settings: TimelinessSettings) -> Table:
    counts: Counter[tuple[str, str, str]] = Counter()
    for rejection, municipality in data.attributed_rejections:
        if not _in_year(local_day(rejection.rejected_at), settings):
            continue
        sender = "" if rejection.sender_her_id is None else str(rejection.sender_her_id)
        counts[(sender, municipality, rejection.reason)] += 1
    return Table(
        key="sender_rejection_reasons",
        title="Avvist per avsender og årsak / Rejected per sender and reason",
        description="Meldinger som fortsatt er avvist (ikke sendt på nytt og lagret). "
        "Messages still rejected (not replayed into a commit).",
        columns=(
            Column("sender_her_id", "Avsender HER-id / Sender HER-id", _D),
            Column("municipality", "Kommune / Municipality", _D),
            Column("reason", "Årsak / Reason", _D),
            Column("rejected", "Avvist / Rejected"),
        ),
        rows=tuple(
            {"sender_her_id": s, "municipality": m, "reason": r, "rejected": n}
            for (s, m, r), n in sorted(counts.items())
        ),
        suppress=False,
    )
