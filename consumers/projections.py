"""The projections: a stay and a child's consultations, recomputed from the stored events.

The store calls these inside its apply transaction, after the new events are inserted,
so a projection always reflects every event committed with it. Each one reads the whole
records it touches (corrections and cancellations included) and writes the result from
scratch: the outcome does not depend on the order the events arrived in. The rules
themselves (which revision wins, what makes a stay complete) are pure functions in
:mod:`consumers.pathways`; this module is only their SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from consumers.database import Dialect, placeholders
from consumers.pathways import (
    StoredEventRow,
    effective_content,
    project_consultation,
    project_stay,
)
from consumers.queries import iso
from contracts.events.municipalities import municipality_today

__all__ = ["Projections"]

_STAY_UPSERT = """
INSERT INTO stays (unit_org, stay_id, person_key, municipality, municipality_today,
                   admitted_at, discharged_at, length_of_stay_hours, complete, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (unit_org, stay_id) DO UPDATE SET
    person_key = excluded.person_key, municipality = excluded.municipality,
    municipality_today = excluded.municipality_today,
    admitted_at = excluded.admitted_at, discharged_at = excluded.discharged_at,
    length_of_stay_hours = excluded.length_of_stay_hours, complete = excluded.complete,
    detail = excluded.detail
"""

_CONSULTATION_COLUMNS = (
    "record_key, person_key, service_area, unit_org, municipality, municipality_today,"
    " consultation_at, programme_consultation, status, birth_date, measured"
)


class Projections:
    """The projection writes in one database's SQL, on the caller's cursor and transaction."""

    def __init__(self, dialect: Dialect) -> None:
        self._sql = dialect.sql

    def stay(self, cursor: Any, unit_org: str, stay_id: str) -> None:
        """Recompute one stay from the effective records of its two sides."""
        rows = self._rows(cursor, "unit_org = ? AND stay_id = ?", (unit_org, stay_id))
        # Corrections may name the record without repeating the stay id: fetch whole records.
        sides: dict[str, Any] = {}
        for key in {row.record_key for row in rows}:
            content = effective_content(self._rows(cursor, "record_key = ?", (key,)))
            if content is not None:
                sides[str(content["event_type"])] = content
        stay = project_stay(
            unit_org, stay_id, sides.get("kad.admission"), sides.get("kad.discharge")
        )
        if stay is None:
            cursor.execute(
                self._sql("DELETE FROM stays WHERE unit_org = ? AND stay_id = ?"),
                (unit_org, stay_id),
            )
            return
        detail = orjson.dumps(
            {
                "admission_diagnoses": stay.admission_diagnoses,
                "discharge_diagnoses": stay.discharge_diagnoses,
                "referred_by": stay.referred_by,
                "discharged_to": stay.discharged_to,
            }
        ).decode()
        cursor.execute(
            self._sql(_STAY_UPSERT),
            (
                stay.unit_org,
                stay.stay_id,
                stay.person_key,
                stay.municipality,
                None if stay.municipality is None else municipality_today(stay.municipality),
                iso(stay.admitted_at),
                iso(stay.discharged_at),
                stay.length_of_stay_hours,
                1 if stay.complete else 0,
                detail,
            ),
        )

    def consultations(self, cursor: Any, record_keys: Sequence[str]) -> None:
        """Recompute the consultations of these records: one read, one delete, one insert."""
        marks = placeholders(1, len(record_keys))
        by_record: dict[str, list[StoredEventRow]] = {key: [] for key in record_keys}
        for row in self._rows(cursor, f"record_key IN {marks}", record_keys):
            by_record[row.record_key].append(row)
        projected = [
            consultation
            for key, rows in by_record.items()
            if (consultation := project_consultation(key, effective_content(rows))) is not None
        ]
        delete = f"DELETE FROM consultations WHERE record_key IN {marks}"  # noqa: S608 - placeholders
        cursor.execute(self._sql(delete), record_keys)
        if not projected:
            return
        insert = (
            f"INSERT INTO consultations ({_CONSULTATION_COLUMNS})"  # noqa: S608 - placeholders
            f" VALUES {placeholders(len(projected), 11)}"
        )
        cursor.execute(
            self._sql(insert),
            [
                value
                for consultation in projected
                for value in (
                    consultation.record_key,
                    consultation.person_key,
                    consultation.service_area,
                    consultation.unit_org,
                    consultation.municipality,
                    municipality_today(consultation.municipality),
                    iso(consultation.consultation_at),
                    consultation.programme_consultation,
                    consultation.status,
                    consultation.birth_date,
                    1 if consultation.measured else 0,
                )
            ],
        )

    def _rows(self, cursor: Any, where: str, params: Sequence[Any]) -> list[StoredEventRow]:
        # ``where`` is one of this module's constant fragments; values are parameters
        query = (
            "SELECT event_id, revision, record_key, correction, event_type, payload"  # noqa: S608
            f" FROM events WHERE {where}"
        )
        cursor.execute(self._sql(query), tuple(params))
        return [
            StoredEventRow(
                event_id=row[0],
                revision=row[1],
                record_key=row[2],
                correction=row[3],
                event_type=row[4],
                payload=orjson.loads(row[5]),
            )
            for row in cursor.fetchall()
        ]
