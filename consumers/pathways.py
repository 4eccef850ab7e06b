"""Patient pathways as a function of the *set* of events, never of their order.

Two rules make arrival order irrelevant:

* **Records.** Every event belongs to a record (``record_key``: the original's event id).
  A record's effective content is its original with every correction applied in
  revision order: *replace* swaps the content, *supplement* adds to it, *cancel*
  removes the record. A record whose original has not arrived yet has no effective
  content: its corrections wait.
* **Projections.** A stay or a programme is recomputed from the effective records it
  is made of each time one of them changes, inside the same transaction as the event.

Everything here is pure: rows in, projections out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.events import PROGRAMME_BY_SERVICE_AREA, ProgrammeConsultation

__all__ = [
    "PROGRAMME_DUE_AGE_DAYS",
    "ConsultationProjection",
    "ProgrammeSlot",
    "ProgrammeView",
    "StayProjection",
    "StoredEventRow",
    "effective_content",
    "programme_view",
    "project_consultation",
    "project_stay",
]

Payload = Mapping[str, Any]


@dataclass(frozen=True)
class StoredEventRow:
    """One stored event, pseudonymised: what projections are computed from."""

    event_id: str
    revision: int
    record_key: str
    correction: str
    event_type: str
    payload: Payload


def _supplement(current: Payload, addition: Payload) -> dict[str, Any]:
    """Add what the supplement carries: lists gain unseen items, set scalars win."""
    merged = dict(current)
    for key, value in addition.items():
        if value is None:
            continue
        existing = merged.get(key)
        if isinstance(existing, list) and isinstance(value, list):
            merged[key] = existing + [item for item in value if item not in existing]
        else:
            merged[key] = value
    return merged


def effective_content(rows: Iterable[StoredEventRow]) -> Payload | None:
    """The record's content after all its corrections, or None (cancelled / waiting)."""
    ordered = sorted(rows, key=lambda row: (row.revision, row.event_id))
    originals = [row for row in ordered if row.correction == "original"]
    if not originals:
        return None
    content: Payload | None = originals[0].payload
    for row in ordered:
        if row.correction == "original" or row.revision < originals[0].revision:
            continue
        if row.correction == "cancel":
            content = None
        elif row.correction == "replace":
            content = row.payload
        elif row.correction == "supplement" and content is not None:
            content = _supplement(content, row.payload)
    return content


@dataclass(frozen=True)
class StayProjection:
    unit_org: str
    stay_id: str
    person_key: str
    municipality: str | None
    admitted_at: datetime | None
    discharged_at: datetime | None
    admission_diagnoses: Sequence[Any]
    discharge_diagnoses: Sequence[Any]
    referred_by: Any
    discharged_to: Any

    @property
    def complete(self) -> bool:
        return self.admitted_at is not None and self.discharged_at is not None

    @property
    def length_of_stay_hours(self) -> float | None:
        if self.admitted_at is None or self.discharged_at is None:
            return None
        return (self.discharged_at - self.admitted_at).total_seconds() / 3600


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def project_stay(
    unit_org: str,
    stay_id: str,
    admission: Payload | None,
    discharge: Payload | None,
) -> StayProjection | None:
    """Join the effective admission and discharge of one stay (either may be missing)."""
    present = admission or discharge
    if present is None:
        return None
    person = present["person"]
    return StayProjection(
        unit_org=unit_org,
        stay_id=stay_id,
        person_key=person["person_key"],
        municipality=(admission or {}).get("service_municipalities", [None])[0]
        if admission
        else (discharge or {}).get("service_municipalities", [None])[0],
        admitted_at=_time(admission.get("admitted_at")) if admission else None,
        discharged_at=_time(discharge.get("discharged_at")) if discharge else None,
        admission_diagnoses=list(admission.get("admission_diagnoses", [])) if admission else [],
        discharge_diagnoses=list(discharge.get("discharge_diagnoses", [])) if discharge else [],
        referred_by=admission.get("referred_by") if admission else None,
        discharged_to=discharge.get("discharged_to") if discharge else None,
    )


@dataclass(frozen=True)
class ConsultationProjection:
    """One effective HST consultation, as the programme view needs it."""

    record_key: str
    person_key: str
    service_area: str
    unit_org: str
    municipality: str
    consultation_at: datetime
    programme_consultation: str
    status: str
    birth_date: str
    measured: bool


def project_consultation(record_key: str, content: Payload | None) -> ConsultationProjection | None:
    if content is None:
        return None
    measurements = content.get("measurements") or {}
    consultation_at = _time(content["consultation_at"])
    assert consultation_at is not None
    return ConsultationProjection(
        record_key=record_key,
        person_key=content["person"]["person_key"],
        service_area=content["service_area"],
        unit_org=content["unit"]["org_number"],
        municipality=content["service_municipality"],
        consultation_at=consultation_at,
        programme_consultation=content["programme_consultation"],
        status=content["status"],
        birth_date=content["person"]["birth_date"],
        measured=bool(measurements.get("height") or measurements.get("weight")),
    )


#: When each programme consultation of the child health station and school health
#: service is due, as the child's age in days (seed 000: the national programme).
#: A slot is *missed* when the child is older than this plus the grace period and no
#: completed consultation fills it. School years are approximated from age.
PROGRAMME_DUE_AGE_DAYS: dict[str, int] = {
    "home-visit-7-10-days": 10,
    "4-weeks": 28,
    "6-weeks": 42,
    "2-months": 61,
    "3-months": 91,
    "4-months": 122,
    "5-months": 152,
    "6-months": 183,
    "8-months": 244,
    "10-months": 304,
    "12-months": 365,
    "15-months": 456,
    "17-18-months": 548,
    "2-years": 730,
    "4-years": 1461,
    "school-start": 6 * 365,
    "grade-2": 7 * 365 + 180,
    "grade-3": 8 * 365 + 180,
    "grade-6": 11 * 365 + 180,
    "grade-7": 12 * 365 + 180,
    "grade-8": 13 * 365 + 180,
    "grade-10": 15 * 365 + 180,
    "upper-secondary-1": 16 * 365 + 180,
}
_SERVICE_AREA_SLOTS: dict[str, tuple[str, ...]] = {
    area.value: tuple(
        slot for slot in PROGRAMME_DUE_AGE_DAYS if ProgrammeConsultation(slot) in allowed
    )
    for area, allowed in PROGRAMME_BY_SERVICE_AREA.items()
}
MISSED_GRACE_DAYS = 60


@dataclass(frozen=True)
class ProgrammeSlot:
    slot: str
    due_at_age_days: int
    state: str  # done | missed | due | not-yet | did-not-attend
    consultations: tuple[ConsultationProjection, ...]


@dataclass(frozen=True)
class ProgrammeView:
    """One person's programme in one service area."""

    person_key: str
    service_area: str
    consultations: tuple[ConsultationProjection, ...]  # ordered by clinical time
    slots: tuple[ProgrammeSlot, ...]
    extra: tuple[ConsultationProjection, ...]

    @property
    def missed(self) -> tuple[str, ...]:
        return tuple(slot.slot for slot in self.slots if slot.state in ("missed", "did-not-attend"))


def programme_view(
    consultations: Iterable[ConsultationProjection], *, as_of: datetime
) -> list[ProgrammeView]:
    """Per service area: the consultations in clinical order, mapped to the programme.

    ``as_of`` fixes "now", so the view is a pure function of its inputs.
    """
    by_area: dict[tuple[str, str], list[ConsultationProjection]] = {}
    for consultation in consultations:
        by_area.setdefault((consultation.person_key, consultation.service_area), []).append(
            consultation
        )
    views = []
    for (person_key, area), items in sorted(by_area.items()):
        ordered = tuple(sorted(items, key=lambda c: (c.consultation_at, c.record_key)))
        birth = datetime.fromisoformat(ordered[0].birth_date).date()
        age_days = (as_of.date() - birth).days
        slots = []
        for slot in _SERVICE_AREA_SLOTS.get(area, ()):
            filled = tuple(c for c in ordered if c.programme_consultation == slot)
            due = PROGRAMME_DUE_AGE_DAYS[slot]
            if any(c.status == "completed" for c in filled):
                state = "done"
            elif filled and any(c.status == "did-not-attend" for c in filled):
                state = "did-not-attend"
            elif age_days > due + MISSED_GRACE_DAYS:
                state = "missed"
            elif age_days >= due:
                state = "due"
            else:
                state = "not-yet"
            slots.append(ProgrammeSlot(slot, due, state, filled))
        extra = tuple(c for c in ordered if c.programme_consultation == "extra")
        views.append(ProgrammeView(person_key, area, ordered, tuple(slots), extra))
    return views
