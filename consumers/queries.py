"""Reading the pathway store: what ``kpr pathways``, the metrics and the reports ask.

A mixin of :class:`~consumers.store.SqlStore`: the queries run on the store's connection,
through its worker thread, and return the same projections the write path computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from consumers.database import Dialect
from consumers.pathways import ConsultationProjection, StayProjection

__all__ = ["PathwayQueries", "SenderActivity", "StoreSummary", "iso"]


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class StoreSummary:
    events_committed: int
    persons: int
    stays: int
    stays_incomplete: int
    consultations: int

    def as_dict(self) -> dict[str, int]:
        return {
            "events_committed": self.events_committed,
            "persons": self.persons,
            "stays": self.stays,
            "stays_incomplete": self.stays_incomplete,
            "consultations": self.consultations,
        }


@dataclass(frozen=True)
class SenderActivity:
    """What one sender has stored for one municipality: event revisions and the last
    commit. The sender is a HER-id the signature established; nothing here is personal."""

    sender_her_id: int
    municipality: str
    events: int
    last_committed_at: datetime


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _stay_from_row(row: Sequence[Any]) -> StayProjection:
    detail = orjson.loads(row[6])
    return StayProjection(
        unit_org=row[0],
        stay_id=row[1],
        person_key=row[2],
        municipality=row[3],
        admitted_at=datetime.fromisoformat(row[4]) if row[4] else None,
        discharged_at=datetime.fromisoformat(row[5]) if row[5] else None,
        admission_diagnoses=detail["admission_diagnoses"],
        discharge_diagnoses=detail["discharge_diagnoses"],
        referred_by=detail["referred_by"],
        discharged_to=detail["discharged_to"],
    )


def _consultation_from_row(row: Sequence[Any]) -> ConsultationProjection:
    return ConsultationProjection(
        record_key=row[0],
        person_key=row[1],
        service_area=row[2],
        unit_org=row[3],
        municipality=row[4],
        consultation_at=datetime.fromisoformat(row[5]),
        programme_consultation=row[6],
        status=row[7],
        birth_date=row[8],
        measured=bool(row[9]),
    )


class PathwayQueries:
    """The read side of the store; the class that mixes it in supplies ``_run``."""

    _dialect: Dialect

    async def _run(self, work: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    async def person_pathways(
        self, person_key: str
    ) -> tuple[list[StayProjection], list[ConsultationProjection]]:
        """A person's stays and consultations (by pseudonym), in clinical order."""

        def read(connection: Any) -> tuple[list[StayProjection], list[ConsultationProjection]]:
            cursor = connection.cursor()
            cursor.execute(
                self._dialect.sql(
                    "SELECT unit_org, stay_id, person_key, municipality, admitted_at,"
                    " discharged_at, detail FROM stays WHERE person_key = ?"
                    " ORDER BY COALESCE(admitted_at, discharged_at)"
                ),
                (person_key,),
            )
            stays = [_stay_from_row(row) for row in cursor.fetchall()]
            cursor.execute(
                self._dialect.sql(
                    "SELECT record_key, person_key, service_area, unit_org, municipality,"
                    " consultation_at, programme_consultation, status, birth_date, measured"
                    " FROM consultations WHERE person_key = ? ORDER BY consultation_at"
                ),
                (person_key,),
            )
            consultations = [_consultation_from_row(row) for row in cursor.fetchall()]
            connection.commit()
            return stays, consultations

        result: tuple[list[StayProjection], list[ConsultationProjection]] = await self._run(read)
        return result

    async def all_pathways(self) -> tuple[list[StayProjection], list[ConsultationProjection]]:
        """Every stay and consultation, in a stable order (for reports and comparisons)."""

        def read(connection: Any) -> tuple[list[StayProjection], list[ConsultationProjection]]:
            cursor = connection.cursor()
            cursor.execute(
                "SELECT unit_org, stay_id, person_key, municipality, admitted_at,"
                " discharged_at, detail FROM stays ORDER BY unit_org, stay_id"
            )
            stays = [_stay_from_row(row) for row in cursor.fetchall()]
            cursor.execute(
                "SELECT record_key, person_key, service_area, unit_org, municipality,"
                " consultation_at, programme_consultation, status, birth_date, measured"
                " FROM consultations ORDER BY record_key"
            )
            consultations = [_consultation_from_row(row) for row in cursor.fetchall()]
            connection.commit()
            return stays, consultations

        result: tuple[list[StayProjection], list[ConsultationProjection]] = await self._run(read)
        return result

    async def incomplete_stays(
        self, *, older_than: timedelta, as_of: datetime
    ) -> list[StayProjection]:
        """Stays with one side only whose known side is older than ``older_than``."""
        cutoff = iso(as_of - older_than)

        def read(connection: Any) -> list[StayProjection]:
            cursor = connection.cursor()
            cursor.execute(
                self._dialect.sql(
                    "SELECT unit_org, stay_id, person_key, municipality, admitted_at,"
                    " discharged_at, detail FROM stays WHERE complete = 0"
                    " AND COALESCE(admitted_at, discharged_at) < ?"
                    " ORDER BY COALESCE(admitted_at, discharged_at)"
                ),
                (cutoff,),
            )
            rows = [_stay_from_row(row) for row in cursor.fetchall()]
            connection.commit()
            return rows

        result: list[StayProjection] = await self._run(read)
        return result

    async def daily_counts(self) -> list[tuple[str, str, int, int]]:
        """Per service municipality (today's number, as the reports count) and day of
        commit: committed and rejected counts."""

        def read(connection: Any) -> list[tuple[str, str, int, int]]:
            cursor = connection.cursor()
            cursor.execute(
                "SELECT municipality_today, SUBSTR(committed_at, 1, 10), COUNT(*) FROM events"
                " GROUP BY municipality_today, SUBSTR(committed_at, 1, 10)"
            )
            counts: dict[tuple[str, str], list[int]] = {}
            for municipality, day, committed in cursor.fetchall():
                counts.setdefault((municipality, day), [0, 0])[0] = int(committed)
            cursor.execute(
                "SELECT COALESCE(municipality_today, 'unknown'), SUBSTR(rejected_at, 1, 10),"
                " COUNT(*) FROM rejections GROUP BY COALESCE(municipality_today, 'unknown'),"
                " SUBSTR(rejected_at, 1, 10)"
            )
            for municipality, day, rejected in cursor.fetchall():
                counts.setdefault((municipality, day), [0, 0])[1] = int(rejected)
            connection.commit()
            return [(m, d, c, r) for (m, d), (c, r) in sorted(counts.items())]

        result: list[tuple[str, str, int, int]] = await self._run(read)
        return result

    async def sender_activity(self) -> list[SenderActivity]:
        """Per sender and municipality: stored event revisions and the last commit. Read
        from the store, so every consumer replica reports the same figures and a restart
        loses nothing (the timeliness metrics and the silent-sender alerts rest on it).
        Grouped by today's number: a sender that moved from 1201 to 4601 on the reform's
        1 January is one series, not a silent old one and a new one."""

        def read(connection: Any) -> list[SenderActivity]:
            cursor = connection.cursor()
            cursor.execute(
                "SELECT sender_her_id, municipality_today, COUNT(*), MAX(committed_at)"
                " FROM events GROUP BY sender_her_id, municipality_today"
            )
            rows = cursor.fetchall()
            connection.commit()
            return [
                SenderActivity(int(sender), str(municipality), int(count), _time(last))
                for sender, municipality, count, last in rows
            ]

        result: list[SenderActivity] = await self._run(read)
        return result

    async def summary(self) -> StoreSummary:
        def read(connection: Any) -> StoreSummary:
            cursor = connection.cursor()
            cursor.execute("SELECT COUNT(*), COUNT(DISTINCT person_key) FROM events")
            events, persons = cursor.fetchone()
            cursor.execute("SELECT COUNT(*) FROM consultations")
            (consultations,) = cursor.fetchone()
            cursor.execute(
                "SELECT COUNT(*), SUM(CASE WHEN complete = 0 THEN 1 ELSE 0 END) FROM stays"
            )
            stays, incomplete = cursor.fetchone()
            connection.commit()
            return StoreSummary(
                events_committed=int(events or 0),
                persons=int(persons or 0),
                stays=int(stays or 0),
                stays_incomplete=int(incomplete or 0),
                consultations=int(consultations or 0),
            )

        result: StoreSummary = await self._run(read)
        return result
