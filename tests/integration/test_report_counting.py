"""The counting rule of docs/REPORTS.md, end to end: real broker, real store, real replay.

Ninety events; thirty are dead-lettered before they can be read (the consumer holds
another register key: ``undecryptable``), the events of one unit after they are read
(the authorisation file lacks the grant: ``sender-not-authorised``). Both causes are
fixed and ``kpr dlq replay`` brings every one in; then one consultation is replaced
(moving it to another municipality) and one cancelled. Every figure the reports count
is checked against a count made here from the events sent, not from the store.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from dlq_support import depth, make_settings, publish_raw, run_consumer, sealed_event
from support import environment_of

from consumers.store import open_store
from contracts.events import (
    Environment,
    Event,
    HstConsultation,
    KadAdmission,
    KadDischarge,
    parse_event,
)
from contracts.events.municipalities import municipality_today, number_in_use
from contracts.pki import PkiDir, ensure_dev_pki
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS, dev_authorisation, generate_events
from kpr.config import Settings
from kpr.reports import ReportOptions, build_report
from kpr.reports.quality import OSLO

REPO = Path(__file__).resolve().parents[2]
EVENTS = 90
SHADOWED = 30  # sent while the consumer held another key


def _kpr(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    environment = environment_of(settings) | {"KPR_REGISTER_HER_ID": str(settings.register_her_id)}
    return subprocess.run(
        [sys.executable, "-m", "kpr", *args],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def _correction(original: HstConsultation, kind: str, event_id: str, **changes: Any) -> Event:
    raw = original.model_dump(mode="json") | {
        "event_id": event_id,
        "revision": 2,
        "correction": kind,
        "corrects_event_id": str(original.event_id),
    }
    return parse_event(raw | changes, environment=Environment.TEST)


def _sent_municipality(event: Event) -> str:
    if isinstance(event, HstConsultation):
        return str(event.service_municipality)
    assert isinstance(event, KadAdmission | KadDischarge)
    return str(event.service_municipalities[0])


def _municipality(event: Event) -> str:
    """The municipality a report counts ``event`` under: today's for the number sent."""
    return municipality_today(_sent_municipality(event))


def _final_events(
    originals: Sequence[Event], replaced: HstConsultation, replacement: Event, cancelled: Event
) -> list[Event]:
    """The events in their final state, by hand: the replacement stands for its
    original, the cancelled one is gone."""
    final = [e for e in originals if e.event_id not in {replaced.event_id, cancelled.event_id}]
    return [*final, replacement]


def _expected_stays(final: Sequence[Event]) -> Counter[tuple[str, int]]:
    stays: dict[tuple[str, str], list[Event]] = {}
    for event in final:
        if isinstance(event, KadAdmission | KadDischarge):
            stays.setdefault((event.unit.org_number, event.stay_id), []).append(event)
    result: Counter[tuple[str, int]] = Counter()
    for events in stays.values():
        admission = next((e for e in events if isinstance(e, KadAdmission)), None)
        when = (admission or events[0]).admitted_at
        result[(_municipality(events[0]), when.astimezone(OSLO).year)] += 1
    return result


def _expected_measured(final: Sequence[Event]) -> Counter[tuple[str, int, str]]:
    result: Counter[tuple[str, int, str]] = Counter()
    for event in final:
        if (
            isinstance(event, HstConsultation)
            and event.service_area.value in {"child-health-station", "school-health"}
            and event.status.value == "completed"
            and event.form.value == "attended"
        ):
            year = event.consultation_at.astimezone(OSLO).year
            today = municipality_today(str(event.service_municipality))
            result[(today, year, event.service_area.value)] += 1
    return result


@pytest.mark.slow
async def test_reports_count_each_event_once_in_its_final_state_after_replay_and_correction(
    amqp_vhost_url: str,
    dev_pki: PkiDir,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    events = generate_events(EVENTS, seed=2301)
    # A sender may always report for itself: the grant withheld is another unit's.
    [(unit, withheld)] = Counter(
        e.reporting_unit_org_number
        for e in events[SHADOWED:]
        if e.reporting_unit_org_number != dev_pki.sender.info.org_number
    ).most_common(1)
    grants = [u for u in DEFAULT_UNIT_ORG_NUMBERS if u != unit]
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=grants)
    topology = settings.topology()
    other_pki = ensure_dev_pki(tmp_path_factory.mktemp("another-register") / "pki")
    raws = [sealed_event(e, dev_pki, register_her_id=settings.register_her_id) for e in events]

    # Two outages: a consumer with another register key, then a missing grant.
    await publish_raw(settings.amqp_url, topology, raws[:SHADOWED])
    counts, _ = await run_consumer(
        settings.with_overrides(pki_dir=other_pki.directory), topology, receipts=False
    )
    assert counts.get("dead_lettered") == SHADOWED
    await publish_raw(settings.amqp_url, topology, raws[SHADOWED:])
    counts, _ = await run_consumer(settings, topology, receipts=False)
    unauthorised = sum(e.reporting_unit_org_number == unit for e in events[SHADOWED:])
    assert unauthorised == withheld > 0
    assert counts.get("dead_lettered") == unauthorised

    before = build_report(settings.store_url, ReportOptions(threshold=1))
    rejected_before = sum(
        int(row["rejected"]) for row in before.table("received_by_municipality").rows
    )
    assert rejected_before == SHADOWED + unauthorised  # the outage shows while it lasts

    # Both causes fixed; the operators replay; then one correction and one cancellation.
    assert settings.authorisation_file is not None
    settings.authorisation_file.write_bytes(
        dev_authorisation(dev_pki.sender.info.org_number, DEFAULT_UNIT_ORG_NUMBERS)
    )
    replay = _kpr(settings, "dlq", "replay", "--json")
    assert replay.returncode == 0, replay.stderr
    assert len(orjson.loads(replay.stdout)["replayed"]) == SHADOWED + unauthorised
    counts, _ = await run_consumer(settings, topology, receipts=False)
    assert counts.get("committed") == SHADOWED + unauthorised
    assert await depth(settings.amqp_url, topology.dead_letter_queue) == 0

    consultations = [e for e in events if isinstance(e, HstConsultation)]
    replaced, cancelled = consultations[0], consultations[1]
    # another municipality, by the number it had on the replaced consultation's date
    elsewhere = next(
        number_in_use(today, replaced.consultation_at.date())
        for e in consultations
        if (today := municipality_today(str(e.service_municipality)))
        != municipality_today(str(replaced.service_municipality))
    )
    replacement = _correction(
        replaced,
        "replace",
        "00000000-0000-4000-8000-000000002302",
        service_municipality=elsewhere,
    )
    cancellation = _correction(cancelled, "cancel", "00000000-0000-4000-8000-000000002303")
    await publish_raw(
        settings.amqp_url,
        topology,
        [
            sealed_event(e, dev_pki, register_her_id=settings.register_her_id)
            for e in (replacement, cancellation)
        ],
    )
    counts, _ = await run_consumer(settings, topology, receipts=False)
    assert counts.get("committed") == 2

    final = _final_events(events, replaced, replacement, cancelled)
    expected = Counter(_municipality(e) for e in final)
    assert sum(expected.values()) == EVENTS - 1
    report = build_report(settings.store_url, ReportOptions(threshold=1))

    by_municipality = {
        str(row["municipality"]): row for row in report.table("received_by_municipality").rows
    }
    assert set(by_municipality) == set(expected)  # no "ukjent" row left behind
    for municipality, count in expected.items():
        row = by_municipality[municipality]
        assert (row["received"], row["committed"], row["rejected"]) == (count, count, 0)
    daily = report.table("received_daily").rows
    assert sum(int(row["received"]) for row in daily) == EVENTS - 1
    assert sum(int(row["rejected"]) for row in daily) == 0
    assert report.table("contract_rejections").rows == ()

    stays = {
        (str(row["municipality"]), int(row["year"])): int(row["stays"])
        for row in report.table("kad_stays").rows
    }
    assert stays == dict(_expected_stays(final))
    measured = {
        (str(row["municipality"]), int(row["year"]), str(row["service_area"])): int(
            row["consultations"]
        )
        for row in report.table("weighing_measuring").rows
    }
    assert measured == dict(_expected_measured(final))
    # The timeliness metrics' store sample: every stored revision, per sender and
    # municipality (the two corrections are revisions of their own).
    async with open_store(settings.store_url) as store:
        activity = await store.sender_activity()
    # under today's number, as the reports count (the store keeps the number as sent too)
    revisions = Counter(_municipality(e) for e in [*events, replacement, cancellation])
    assert {a.municipality: a.events for a in activity} == dict(revisions)
    assert {a.sender_her_id for a in activity} == {events[0].sender_her_id}
    units = {str(row["unit_org"]): row for row in report.table("units").rows}
    assert all(int(row["rejected"]) == 0 for row in units.values())
    assert sum(int(row["records"]) for row in units.values()) == EVENTS - 1
