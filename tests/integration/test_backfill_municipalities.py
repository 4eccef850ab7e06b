"""The issue 18 "done when", on a real broker and a real store: a back-fill of 2017-2019
written with the municipality numbers of each event's year commits through the pipeline
with no contract violation, and the same events under numbers that were not in use on
their date (today's, 4601 for Bergen in 2019) are refused naming ``municipality-not-in-use``:
by the back-fill producer, which checks the contract before it sends, and by the consumer,
dead-lettered, when a sender that does not check puts them on the queue."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from dlq_support import letter_for, publish_raw
from support import environment_of, pipeline_settings

from consumers.deadletter import HEADER_DESCRIPTION, HEADER_REASON
from contracts.errors import Reason
from contracts.events import Environment, parse_event
from contracts.events.municipalities import municipality_today
from contracts.pki import PkiDir
from contracts.synth import generate_lines
from kpr.config import Settings
from kpr.runtime import consume, store_summary

EVENTS = 150
UNTIL = datetime(2019, 12, 31, 12, tzinfo=UTC)
RULE = "municipality-not-in-use"


@pytest.fixture
def settings(amqp_url: str, dev_pki: PkiDir, tmp_path: Path) -> Settings:
    return pipeline_settings(amqp_url, dev_pki, tmp_path)


def _numbers(event: dict[str, Any]) -> list[str]:
    """Every municipality number the event names."""
    return [
        event["person"]["home_municipality"],
        *([event["service_municipality"]] if "service_municipality" in event else []),
        *event.get("service_municipalities", []),
    ]


def _under_todays_numbers(event: dict[str, Any]) -> dict[str, Any]:
    """The event as a sender that renumbered its history would send it: every number
    today's, under a new event id (it is another message, not a resend)."""
    moved = orjson.loads(orjson.dumps(event))
    moved["event_id"] = str(uuid.uuid4())
    person = moved["person"]
    person["home_municipality"] = municipality_today(person["home_municipality"])
    if "service_municipality" in moved:
        moved["service_municipality"] = municipality_today(moved["service_municipality"])
    if "service_municipalities" in moved:
        numbers = [municipality_today(n) for n in moved["service_municipalities"]]
        moved["service_municipalities"] = list(dict.fromkeys(numbers))
    return moved


async def _backfill(settings: Settings, lines: list[bytes], name: str) -> dict[str, Any]:
    extract = settings.state_dir / f"{name}.jsonl"
    extract.write_bytes(b"\n".join(lines) + b"\n")
    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "kpr", "backfill", str(extract),
            "--checkpoint", str(settings.state_dir / f"{name}.checkpoint"), "--json",
        ],
        env=environment_of(settings), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary: dict[str, Any] = orjson.loads(run.stdout.strip().splitlines()[-1])
    return summary


def _store_rows(settings: Settings, query: str) -> list[Any]:
    connection = sqlite3.connect(settings.store_url)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


async def _dead_letters(settings: Settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.topology().dead_letter_queue)
        messages = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            messages.append(message)
        return messages


async def test_a_backfill_in_the_numbers_of_its_years_commits_and_todays_numbers_are_refused(
    settings: Settings, dev_pki: PkiDir
) -> None:
    lines = generate_lines(EVENTS, seed=18, until=UNTIL)
    events = [orjson.loads(line) for line in lines]
    years = Counter(int(e["registered_at"][:4]) for e in events)
    assert set(years) == {2017, 2018, 2019}
    sent = Counter(n for e in events for n in _numbers(e))
    # Bergen before 2020, Trondheim before 2018 and 5001 (with Klæbu) since
    assert {"1201", "1601", "5001"} <= set(sent)
    assert "4601" not in sent

    # The back-fill of the numbers of each event's year: every event commits.
    backfilled = await _backfill(settings, lines, "years")
    assert backfilled["published"] == EVENTS
    assert backfilled["skipped_invalid"] == 0
    counts = await consume(settings, until_idle_s=1.5)
    assert counts["committed"] == EVENTS
    assert counts["dead_lettered"] == 0
    assert (await store_summary(settings)).events_committed == EVENTS
    assert _store_rows(settings, "SELECT COUNT(*) FROM rejections") == [(0,)]
    stored = Counter(
        (str(sent_as), str(today))
        for sent_as, today in _store_rows(
            settings, "SELECT municipality, municipality_today FROM events"
        )
    )
    assert ("1201", "4601") in stored  # as sent, and today's beside it
    assert all(today == municipality_today(sent_as) for sent_as, today in stored)

    # The same events under numbers that were not in use on their date.
    moved = [
        _under_todays_numbers(e)
        for e in events
        if _numbers(_under_todays_numbers(e)) != _numbers(e)
    ]
    assert len(moved) > EVENTS // 3
    moved_lines = [orjson.dumps(e) for e in moved]
    for line in moved_lines[:3]:
        with pytest.raises(Exception, match=RULE):
            parse_event(orjson.loads(line), environment=Environment.TEST)

    # The back-fill producer checks the contract first: nothing is sent, each line is
    # listed with the rule.
    refused = await _backfill(settings, moved_lines, "today")
    assert refused["published"] == 0
    assert refused["skipped_invalid"] == len(moved)
    rejects = settings.state_dir / "today.checkpoint.rejects.jsonl"
    listed = [orjson.loads(entry) for entry in rejects.read_bytes().splitlines()]
    assert Counter(entry["rule"] for entry in listed) == {RULE: len(moved)}

    # A sender that does not check: the consumer dead-letters each one, naming the rule.
    raws = [
        letter_for(
            line,
            signer=dev_pki.sender.signing_identity,
            recipient=dev_pki.register.encryption_certificate,
            recipient_her_id=settings.register_her_id,
            event_type=event["event_type"],
        )
        for line, event in zip(moved_lines, moved, strict=True)
    ]
    await publish_raw(settings.amqp_url, settings.topology(), raws)
    counts = await consume(settings, until_idle_s=1.5)
    assert counts["committed"] == 0
    assert counts["dead_lettered"] == len(moved)
    dead = await _dead_letters(settings)
    assert len(dead) == len(moved)
    assert {message.headers[HEADER_REASON] for message in dead} == {Reason.INVALID_CONTRACT.value}
    assert all(RULE in str(message.headers[HEADER_DESCRIPTION]) for message in dead), {
        str(message.headers[HEADER_DESCRIPTION]) for message in dead
    }
    rules = _store_rows(settings, "SELECT rule, field FROM rejections")
    assert Counter(rule for rule, _ in rules) == {RULE: len(moved)}
    assert {field for _, field in rules} <= {
        "person.home_municipality",
        "service_municipality",
        "service_municipalities",
    } | {f"service_municipalities.{i}" for i in range(4)}
    assert (await store_summary(settings)).events_committed == EVENTS
