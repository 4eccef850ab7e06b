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

__all__ = [
    "StayProjection",
    "StoredEventRow",
    "effective_content",
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
