"""The pathway store on both databases: exactly-once effect and order-independent pathways.

Every test runs against SQLite and against a real PostgreSQL (the session's server, one
fresh database per test): one interface, the same behaviour.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from consumers import (
    ApplyResult,
    EventRecord,
    PostgresStore,
    Pseudonymiser,
    SqliteStore,
    open_store,
    pseudonymise,
)
from consumers.store import SqlStore
from contracts import ConflictingDuplicate, CorrectionKind, Event, KadAdmission, KadDischarge
from contracts.synth import generate_events

PSEUDONYMS = Pseudonymiser(b"k" * 32)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    async with open_store(store_url) as opened:
        yield opened


def _record(event: Event, message_id: str | None = None) -> EventRecord:
    return pseudonymise(event, PSEUDONYMS, message_id or f"m-{event.event_id}-{event.revision}")


def _stays_and_discharges(count: int, seed: int) -> list[Event]:
    return generate_events(count, seed=seed, kinds=["kad"])


async def test_a_message_delivered_twice_changes_the_store_once(store: SqlStore) -> None:
    """Redelivery of the same message id is a duplicate, and nothing changes."""
    [event] = generate_events(1, seed=1)
    assert await store.apply(_record(event, "m-1")) is ApplyResult.COMMITTED
    assert await store.apply(_record(event, "m-1")) is ApplyResult.DUPLICATE
    assert (await store.summary()).events_committed == 1


async def test_the_same_event_under_a_new_message_id_is_a_duplicate(store: SqlStore) -> None:
    """A producer resend with a fresh message id is caught by event id + revision."""
    [event] = generate_events(1, seed=2)
    await store.apply(_record(event, "m-1"))
    assert await store.apply(_record(event, "m-2")) is ApplyResult.DUPLICATE
    assert await store.apply(_record(event, "m-2")) is ApplyResult.DUPLICATE
    assert (await store.summary()).events_committed == 1


async def test_other_content_under_a_seen_event_id_and_revision_is_a_conflict(
    store: SqlStore,
) -> None:
    """Never a silent overwrite: a conflicting duplicate is refused and nothing changes."""
    [event] = generate_events(1, seed=3)
    await store.apply(_record(event, "m-1"))
    changed = event.model_copy(update={"source_system": "Another EPJ 1.0"})
    with pytest.raises(ConflictingDuplicate):
        await store.apply(_record(changed, "m-2"))
    assert (await store.summary()).events_committed == 1
    # The refused message id was not recorded: after a fix it can still commit elsewhere.
    assert await store.apply(_record(event, "m-2")) is ApplyResult.DUPLICATE


async def test_a_discharge_before_its_admission_is_kept_and_joined_later(store: SqlStore) -> None:
    """The stay is incomplete until the admission arrives, then complete with its length."""
    events = _stays_and_discharges(40, seed=4)
    admission = next(e for e in events if isinstance(e, KadAdmission))
    discharge = next(
        e for e in events if isinstance(e, KadDischarge) and e.stay_id == admission.stay_id
    )
    await store.apply(_record(discharge))
    stays, _ = await store.all_pathways()
    [stay] = stays
    assert not stay.complete
    assert stay.discharged_at == discharge.discharged_at

    await store.apply(_record(admission))
    stays, _ = await store.all_pathways()
    [stay] = stays
    assert stay.complete
    expected_hours = (discharge.discharged_at - admission.admitted_at).total_seconds() / 3600
    assert stay.length_of_stay_hours == pytest.approx(expected_hours)
    assert stay.admission_diagnoses == [
        d.model_dump(mode="json") for d in admission.admission_diagnoses
    ]
    assert stay.person_key == PSEUDONYMS.pseudonym(admission.person.national_id)


async def test_incomplete_stays_are_reported_after_a_configurable_age(store: SqlStore) -> None:
    """Only one-sided stays older than the limit are listed."""
    events = _stays_and_discharges(40, seed=5)
    admission = next(e for e in events if isinstance(e, KadAdmission))
    await store.apply(_record(admission))
    after = admission.admitted_at + timedelta(days=3)
    assert await store.incomplete_stays(older_than=timedelta(days=7), as_of=after) == []
    overdue = await store.incomplete_stays(
        older_than=timedelta(days=2), as_of=after.astimezone(UTC)
    )
    assert [s.stay_id for s in overdue] == [admission.stay_id]


def _correction(original: Event, kind: CorrectionKind, revision: int, **changes: object) -> Event:
    return original.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "correction": kind,
            "corrects_event_id": original.event_id,
            "revision": revision,
            **changes,
        }
    )


async def test_a_correction_before_its_original_waits_for_it(store: SqlStore) -> None:
    """A replace that arrives first creates nothing; with the original it applies."""
    admission = next(e for e in _stays_and_discharges(20, seed=6) if isinstance(e, KadAdmission))
    later = admission.admitted_at + timedelta(hours=1)
    replace = _correction(admission, CorrectionKind.REPLACE, 2, admitted_at=later)
    await store.apply(_record(replace))
    assert (await store.all_pathways())[0] == []

    await store.apply(_record(admission))
    [stay] = (await store.all_pathways())[0]
    assert stay.admitted_at == later


async def test_a_cancel_removes_the_stay_side_it_names(store: SqlStore) -> None:
    """Cancelling the only side of a stay removes the stay."""
    admission = next(e for e in _stays_and_discharges(20, seed=7) if isinstance(e, KadAdmission))
    await store.apply(_record(admission))
    await store.apply(_record(_correction(admission, CorrectionKind.CANCEL, 2)))
    assert (await store.all_pathways())[0] == []


async def _pathways_after(url: str, events: Sequence[Event]) -> object:
    async with open_store(url) as fresh:
        for event in events:
            await fresh.apply(_record(event))
        return await fresh.all_pathways()


async def test_pathways_do_not_depend_on_arrival_order_or_duplicates(
    store_url: str, tmp_path: Path
) -> None:
    """The same events (with corrections) in shuffled orders, some twice: same pathways."""
    events = generate_events(120, seed=8, corrections=0.15)
    reference = await _pathways_after(str(tmp_path / "reference.sqlite3"), events)
    assert reference != ([], [])
    rng = random.Random(8)
    # One fresh PostgreSQL database per test: one ordering there, three on SQLite files.
    if store_url.startswith("postgres"):
        urls = [store_url]
    else:
        urls = [str(tmp_path / f"shuffled-{attempt}.sqlite3") for attempt in range(3)]
    for url in urls:
        shuffled = list(events) + rng.sample(events, 20)
        rng.shuffle(shuffled)
        assert await _pathways_after(url, shuffled) == reference


async def test_a_person_can_be_looked_up_by_pseudonym_only(store: SqlStore) -> None:
    """The store holds no national id; the pseudonym finds the person's pathways."""
    events = generate_events(60, seed=9)
    for event in events:
        await store.apply(_record(event))
    person = events[0].person.national_id
    stays, consultations = await store.person_pathways(PSEUDONYMS.pseudonym(person))
    mine = [e for e in events if e.person.national_id == person]
    assert len(stays) + len(consultations) >= 1
    assert {c.person_key for c in consultations} <= {PSEUDONYMS.pseudonym(person)}
    assert len(consultations) == sum(1 for e in mine if e.event_type == "hst.consultation")


def test_sqlite_store_keeps_no_national_id_anywhere(tmp_path: Path) -> None:
    """Byte-level check of the database file: no stored national id, in any table."""
    import asyncio

    events = generate_events(80, seed=10)
    path = tmp_path / "pathways.sqlite3"

    async def fill() -> None:
        async with SqliteStore(path) as sqlite_store:
            for event in events:
                await sqlite_store.apply(_record(event))

    asyncio.run(fill())
    data = path.read_bytes() + (
        path.with_name(path.name + "-wal").read_bytes()
        if path.with_name(path.name + "-wal").exists()
        else b""
    )
    for event in events:
        assert event.person.national_id.encode() not in data


async def test_concurrent_applies_share_commits_and_a_conflict_fails_alone(
    store: SqlStore,
) -> None:
    """Deliveries in flight together commit in one transaction (group commit); a
    conflicting duplicate among them is refused on its own and the others commit."""
    events = generate_events(60, seed=40)
    await store.apply(_record(events[0], "m-first"))
    conflict = events[0].model_copy(update={"source_system": "Another EPJ 1.0"})
    commits_before = store.group_commits

    results = await asyncio.gather(
        *(store.apply(_record(event)) for event in events[1:]),
        store.apply(_record(conflict, "m-conflict")),
        store.apply(_record(events[1], "m-again")),
        return_exceptions=True,
    )

    assert results[: len(events) - 1] == [ApplyResult.COMMITTED] * (len(events) - 1)
    assert isinstance(results[-2], ConflictingDuplicate)
    assert results[-1] is ApplyResult.DUPLICATE
    assert store.group_commits - commits_before < len(results) / 4
    assert (await store.summary()).events_committed == len(events)


async def test_a_clean_batch_needs_no_savepoints_and_a_conflict_leaves_no_trace(
    store: SqlStore,
) -> None:
    """Batches of new events commit without savepoints: together (multi-row inserts) on
    PostgreSQL, event by event on SQLite; a refused conflict records nothing, so its
    redelivery is refused the same way (not taken as seen)."""
    events = generate_events(30, seed=41)
    batched_before, one_by_one_before = store.batched_commits, store.optimistic_commits

    results = await asyncio.gather(*(store.apply(_record(event)) for event in events))

    assert results == [ApplyResult.COMMITTED] * len(events)
    if isinstance(store, PostgresStore):
        assert store.batched_commits > batched_before
        assert store.optimistic_commits == one_by_one_before
    else:
        assert store.batched_commits == batched_before
        assert store.optimistic_commits > one_by_one_before
    conflict = events[0].model_copy(update={"source_system": "Another EPJ 1.0"})
    for _ in range(2):
        with pytest.raises(ConflictingDuplicate):
            await store.apply(_record(conflict, "m-conflict"))
    assert (await store.summary()).events_committed == len(events)


async def test_a_batch_with_a_redelivery_among_new_events_runs_event_by_event(
    store: SqlStore,
) -> None:
    """A message seen before (or twice in one batch) cannot be inserted together with the
    rest: the batch runs again event by event, and each gets its own answer."""
    events = generate_events(40, seed=44)
    seen = _record(events[0], "m-seen")
    assert await store.apply(seen) is ApplyResult.COMMITTED
    batched_before, one_by_one_before = store.batched_commits, store.optimistic_commits

    results = await asyncio.gather(
        *(store.apply(_record(event)) for event in events[1:20]),
        store.apply(seen),
        store.apply(_record(events[20], "m-twice")),
        store.apply(_record(events[20], "m-twice")),
        store.apply(_record(events[1], "m-other-id-same-event")),
    )

    assert results[:19] == [ApplyResult.COMMITTED] * 19
    assert results[19] is ApplyResult.DUPLICATE
    assert sorted(results[20:22]) == sorted([ApplyResult.COMMITTED, ApplyResult.DUPLICATE])
    assert results[22] is ApplyResult.DUPLICATE
    assert store.optimistic_commits > one_by_one_before
    assert store.batched_commits == batched_before  # PostgreSQL tried together, fell back
    summary = await store.summary()
    assert summary.events_committed == 21


async def test_a_lingering_commit_gathers_a_trickle_into_one_transaction(store_url: str) -> None:
    """With a linger, deliveries that arrive one after another within it share one
    commit; without one, the first commits alone as soon as it arrives."""
    events = generate_events(8, seed=42)

    async def trickle(store: SqlStore) -> list[ApplyResult]:
        async def arrive(number: int, event: Event) -> ApplyResult:
            await asyncio.sleep(0.01 * number)  # far inside a 30 s linger
            return await store.apply(_record(event))

        return await asyncio.gather(*(arrive(n, event) for n, event in enumerate(events)))

    # The eighth event fills the batch, so the commit starts then, not after 30 s (the
    # timeout fails the test otherwise).
    async with open_store(store_url, linger_s=30.0, linger_batch=len(events)) as lingering:
        lingering_commits = lingering.group_commits
        results = await asyncio.wait_for(trickle(lingering), timeout=20)
        assert results == [ApplyResult.COMMITTED] * len(events)
        assert lingering.group_commits - lingering_commits == 1

    async with open_store(store_url) as eager:
        eager_commits = eager.group_commits
        again = await trickle(eager)
        assert again == [ApplyResult.DUPLICATE] * len(events)
        assert eager.group_commits - eager_commits > 1


async def test_a_linger_ends_when_it_runs_out_even_if_the_batch_is_not_full(
    store_url: str,
) -> None:
    """A lone delivery under a linger still commits, once the linger has passed."""
    [event] = generate_events(1, seed=43)
    async with open_store(store_url, linger_s=0.05) as store:
        result = await asyncio.wait_for(store.apply(_record(event)), timeout=20)
        assert result is ApplyResult.COMMITTED
        assert (await store.summary()).events_committed == 1


def test_a_negative_linger_is_refused(tmp_path: Path) -> None:
    """A configuration error, not a silent eager store."""
    with pytest.raises(ValueError, match="linger"):
        SqliteStore(tmp_path / "s.sqlite3", linger_s=-1)
