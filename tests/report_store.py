"""Test pathway stores for the report tests, filled through the consumer's own path.

Synthetic events go through :func:`consumers.processing.pseudonymise` and
``store.apply`` exactly as the consumer runs them after verification; the CMS opening
is skipped (the report tests are about what is stored, not how it was protected).
Rejections are recorded with
``record_rejection`` as the processor does, including the ones it records before it
knows the event (no unit, no municipality).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consumers.processing import pseudonymise
from consumers.pseudonym import Pseudonymiser
from consumers.store import ApplyResult, RejectionRecord, SqlStore
from contracts.errors import ConflictingDuplicate, Reason
from contracts.events import Event
from kpr.reports.queries import EffectiveRecord, ReportData

PSEUDONYMISER = Pseudonymiser(b"report-tests-key-" + b"0" * 32)


@dataclass(frozen=True)
class Filled:
    committed: int
    duplicates: int


async def fill_store(store: SqlStore, events: Sequence[Event]) -> Filled:
    committed = duplicates = 0
    for index, event in enumerate(events):
        message_id = f"msg-{index:06d}"
        record = pseudonymise(event, PSEUDONYMISER, message_id)
        try:
            result = await store.apply(record)
        except ConflictingDuplicate as error:
            await store.record_rejection(
                RejectionRecord(
                    message_id,
                    error.reason.value,
                    event.sender_her_id,
                    event.event_type,
                    record.unit_org,
                    record.municipality,
                    datetime.now(UTC),
                )
            )
            continue
        if result is ApplyResult.COMMITTED:
            committed += 1
        else:
            duplicates += 1
    return Filled(committed, duplicates)


async def add_rejections(
    store: SqlStore,
    count: int,
    *,
    reason: Reason,
    sender_her_id: int,
    municipality: str | None = None,
    unit_org: str | None = None,
    prefix: str = "rej",
    at: datetime | None = None,
) -> None:
    for index in range(count):
        await store.record_rejection(
            RejectionRecord(
                message_id=f"{prefix}-{index}",
                reason=reason.value,
                sender_her_id=sender_her_id,
                event_type=None if municipality is None else "hst.consultation",
                unit_org=unit_org,
                municipality=municipality,
                rejected_at=at or datetime.now(UTC),
            )
        )


def store_path(directory: Path) -> Path:
    return directory / "pathways.sqlite3"


def consultation_record(
    index: int,
    municipality: str,
    clinical: datetime,
    *,
    delay: timedelta = timedelta(hours=1),
    content: Mapping[str, Any] | None = None,
) -> EffectiveRecord:
    """One HST consultation as the report reads it from the store, made by hand for the
    pure figure tests: committed ``delay`` after its clinical time, by sender 90001."""
    return EffectiveRecord(
        record_key=f"r{index}",
        event_type="hst.consultation",
        person_key=f"p{index}",
        municipality=municipality,
        unit_org="974600013",
        sender_her_id=90001,
        clinical_time=clinical,
        registered_at=clinical,
        content=content or {"status": "completed", "source_system": "test"},
        committed_at=clinical + delay,
        first_committed_at=clinical + delay,
    )


def report_data(records: Sequence[EffectiveRecord], rejections: Sequence[Any] = ()) -> ReportData:
    """A store reading of these records (one counted message each) and rejections."""
    return ReportData(tuple(records), tuple(rejections), ())
