"""`kpr dlq` against a real broker: listing is harmless, replay fixes, caps, audit, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from dlq_support import (
    SENDER_HER_ID,
    Raw,
    depth,
    drain,
    make_settings,
    publish_raw,
    run_consumer,
    sealed_event,
)

from consumers.audit import AuditLog
from consumers.deadletter import HEADER_REASON, HEADER_REPLAY_COUNT
from consumers.dlq_filters import DlqFilter
from consumers.replay import DeadLetterQueue
from contracts.events import Event
from contracts.pki import PkiDir
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS, generate_events
from kpr.config import Settings

SUPPORT_DIR = Path(__file__).parent
REPO = SUPPORT_DIR.parents[1]


def _foreign_unit_events(count: int, seed: int) -> list[Event]:
    """Events for units other than the dev sender's own organisation: with no grants,
    every one of them is rejected as sender-not-authorised."""
    units = tuple(u for u in DEFAULT_UNIT_ORG_NUMBERS if u != "310000000")
    return generate_events(count, seed=seed, unit_org_numbers=units)


def _grant_all(settings: Settings) -> None:
    assert settings.authorisation_file is not None
    authorisation = orjson.loads(settings.authorisation_file.read_bytes())
    [org] = list(authorisation["grants"])
    authorisation["grants"] = {org: list(DEFAULT_UNIT_ORG_NUMBERS)}
    settings.authorisation_file.write_bytes(orjson.dumps(authorisation))


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.authorisation_file is not None
    return {
        **os.environ,
        "KPR_AMQP_URL": settings.amqp_url,
        "KPR_PKI_DIR": str(settings.pki_dir),
        "KPR_STATE_DIR": str(settings.state_dir),
        "KPR_STORE_URL": settings.store_url,
        "KPR_ENVIRONMENT": "test",
        "KPR_AUTHORISATION_FILE": str(settings.authorisation_file),
        "KPR_REGISTER_HER_ID": str(settings.register_her_id),
        **extra,
    }


def _kpr(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kpr", *args],
        env=_env(settings, **extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _stored_message_ids(settings: Settings) -> list[str]:
    with sqlite3.connect(settings.store_url) as db:
        return [row[0] for row in db.execute("SELECT message_id FROM received_messages")]


async def _dead_lettered(
    settings: Settings, events: Sequence[Event], pki: PkiDir, extra: Sequence[Raw] = ()
) -> list[Raw]:
    """Publish and consume: with no grants, every one of ``events`` is dead-lettered."""
    topology = settings.topology()
    raws = [sealed_event(e, pki, register_her_id=settings.register_her_id) for e in events]
    await publish_raw(settings.amqp_url, topology, [*raws, *extra])
    counts, _ = await run_consumer(settings, topology, receipts=False, until_idle_s=0.5)
    assert counts.get("dead_lettered") == len(raws) + len(extra)
    return raws


async def test_listing_leaves_the_queue_as_it_was_and_filters_select(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """`kpr dlq list --json` shows every dead letter with its fields; two listings give the
    same ids in the same order and the queue depth does not change; filters and
    --group-by-reason select and count."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=[])
    garbage = Raw(b"not CMS at all", "garbage-1", {"fromHerId": 90002})
    raws = await _dead_lettered(settings, _foreign_unit_events(6, seed=41), dev_pki, [garbage])
    dlq_name = settings.topology().dead_letter_queue
    before = await depth(amqp_vhost_url, dlq_name)

    first = _kpr(settings, "dlq", "list", "--json")
    second = _kpr(settings, "dlq", "list", "--json")

    assert first.returncode == 0, first.stderr
    listed = orjson.loads(first.stdout)
    relisted = orjson.loads(second.stdout)
    assert [x["message_id"] for x in listed] == [x["message_id"] for x in relisted]
    assert await depth(amqp_vhost_url, dlq_name) == before == len(raws) + 1
    assert {x["message_id"] for x in listed} == {r.message_id for r in raws} | {"garbage-1"}
    for entry in listed:
        for key in (
            "message_id",
            "reason",
            "sender_her_id",
            "dead_lettered_at",
            "event_type",
            "description",
            "replay_count",
            "size",
        ):
            assert key in entry
    by_id = {x["message_id"]: x for x in listed}
    assert by_id["garbage-1"]["reason"] == "malformed"
    assert by_id["garbage-1"]["sender_her_id"] == 90002
    assert by_id[raws[0].message_id]["reason"] == "sender-not-authorised"
    assert by_id[raws[0].message_id]["size"] == len(raws[0].body)

    def listing(*filters: str) -> Any:
        return orjson.loads(_kpr(settings, "dlq", "list", "--json", *filters).stdout)

    assert [x["message_id"] for x in listing("--reason", "malformed")] == ["garbage-1"]
    assert len(listing("--sender", str(SENDER_HER_ID))) == len(raws)
    assert listing("--since", "2999-01-01T00:00:00") == []
    assert len(listing("--until", "2999-01-01T00:00:00")) == len(raws) + 1
    one = listing("--message-id", raws[2].message_id)
    assert [x["message_id"] for x in one] == [raws[2].message_id]
    groups = listing("--group-by-reason")
    assert groups == {"sender-not-authorised": len(raws), "malformed": 1}
    table = _kpr(settings, "dlq", "list")
    assert "garbage-1" in table.stdout
    assert f"{len(raws) + 1} dead letter(s)" in table.stdout
    assert [m.message_id for m in await drain(amqp_vhost_url, dlq_name)] == [
        x["message_id"] for x in listed
    ]


async def test_fixing_the_cause_then_replaying_commits_each_once_and_empties_the_queue(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """Missing authorisation -> dead letters; grant it, `kpr dlq replay`: each commits exactly
    once, the queue is empty, the audit log names operator and ids. A dead letter whose
    message the sender meanwhile resent (and that committed) replays harmlessly."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=[])
    events = _foreign_unit_events(5, seed=42)
    raws = await _dead_lettered(settings, events, dev_pki)
    _grant_all(settings)
    topology = settings.topology()
    await publish_raw(amqp_vhost_url, topology, [raws[0]])  # the sender resends one
    await run_consumer(settings, topology, receipts=False, until_idle_s=0.3)
    audit_path = tmp_path / "audit.jsonl"

    dry = _kpr(settings, "dlq", "replay", "--dry-run", "--json", KPR_AUDIT_LOG=str(audit_path))
    assert orjson.loads(dry.stdout)["replayed"]
    assert await depth(amqp_vhost_url, topology.dead_letter_queue) == len(raws)
    result = _kpr(
        settings,
        "dlq",
        "replay",
        "--operator",
        "night-shift",
        "--json",
        KPR_AUDIT_LOG=str(audit_path),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(orjson.loads(result.stdout)["replayed"]) == sorted(r.message_id for r in raws)
    counts, summary = await run_consumer(settings, topology, receipts=False, until_idle_s=0.5)

    assert counts.get("committed") == len(raws) - 1
    assert counts.get("duplicate") == 1
    assert summary.events_committed == len(raws)
    stored = _stored_message_ids(settings)
    assert sorted(stored) == sorted(r.message_id for r in raws)
    assert await depth(amqp_vhost_url, topology.dead_letter_queue) == 0
    entries = AuditLog(audit_path).entries()
    assert [e["action"] for e in entries] == ["replay", "replay"]
    assert entries[0]["dry_run"] is True
    assert entries[1]["operator"] == "night-shift"
    assert sorted(entries[1]["message_ids"]) == sorted(r.message_id for r in raws)


async def test_a_letter_that_keeps_failing_comes_back_counted_and_stops_at_the_cap(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """Unfixed cause: each replay brings the letter back with x-kpr-replay-count one higher
    and fresh failure headers (no x-death); at --max-replays it is reported, not replayed."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=[])
    [raw] = await _dead_lettered(settings, _foreign_unit_events(1, seed=43), dev_pki)
    topology = settings.topology()
    audit = AuditLog(tmp_path / "audit.jsonl", operator="test")
    seen_counts = []
    for round_number in range(3):
        async with DeadLetterQueue(amqp_vhost_url, topology=topology, audit=audit) as dlq:
            [info] = await dlq.list_matching()
            seen_counts.append(info.replay_count)
            report = await dlq.replay(DlqFilter(), max_replays=2)
        if round_number < 2:
            assert report.replayed == [raw.message_id]
            await run_consumer(settings, topology, receipts=False, until_idle_s=0.3)
        else:
            assert report.replayed == []
            assert report.at_cap == [raw.message_id]

    assert seen_counts == [0, 1, 2]
    [dead] = await drain(amqp_vhost_url, topology.dead_letter_queue)
    assert dead.headers[HEADER_REPLAY_COUNT] == 2
    assert dead.headers[HEADER_REASON] == "sender-not-authorised"
    assert "x-death" not in dead.headers
    assert "x-first-death-reason" not in dead.headers
    assert dead.body == raw.body
    assert [e["message_ids"] for e in audit.entries()] == [[raw.message_id]] * 2 + [[]]


async def test_export_show_and_purge(amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path) -> None:
    """export writes the still-encrypted bytes and the headers and leaves the queue; show
    prints headers, and the event only with --decrypt (warning on stderr); purge refuses
    without a TTY and without --yes, and with --yes deletes what the filter selects."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=[])
    events = _foreign_unit_events(3, seed=44)
    garbage = Raw(b"garbage", "garbage-2", {"fromHerId": SENDER_HER_ID})
    raws = await _dead_lettered(settings, events, dev_pki, [garbage])
    dlq_name = settings.topology().dead_letter_queue

    exported = _kpr(
        settings,
        "dlq",
        "export",
        "--out",
        str(tmp_path / "out"),
        "--reason",
        "sender-not-authorised",
    )
    assert exported.returncode == 0, exported.stderr
    for raw in raws:
        assert (tmp_path / "out" / f"{raw.message_id}.der").read_bytes() == raw.body
        meta = orjson.loads((tmp_path / "out" / f"{raw.message_id}.json").read_bytes())
        assert meta["headers"][HEADER_REASON] == "sender-not-authorised"
    assert not (tmp_path / "out" / "garbage-2.der").exists()

    plain = _kpr(settings, "dlq", "show", raws[1].message_id)
    assert plain.returncode == 0
    assert "event" not in orjson.loads(plain.stdout)
    assert events[1].person.national_id not in plain.stdout
    decrypted = _kpr(settings, "dlq", "show", raws[1].message_id, "--decrypt")
    assert decrypted.returncode == 0, decrypted.stderr
    assert "personal data" in decrypted.stderr
    assert orjson.loads(decrypted.stdout)["event"]["event_id"] == str(events[1].event_id)
    assert _kpr(settings, "dlq", "show", "no-such-id").returncode == 1
    assert await depth(amqp_vhost_url, dlq_name) == len(raws) + 1

    refused = _kpr(settings, "dlq", "purge", "--reason", "malformed")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert await depth(amqp_vhost_url, dlq_name) == len(raws) + 1
    audit_path = tmp_path / "audit.jsonl"
    purged = _kpr(
        settings, "dlq", "purge", "--reason", "malformed", "--yes", KPR_AUDIT_LOG=str(audit_path)
    )
    assert purged.returncode == 0, purged.stderr
    remaining = {m.message_id for m in await drain(amqp_vhost_url, dlq_name)}
    assert remaining == {r.message_id for r in raws}
    [entry] = AuditLog(audit_path).entries()
    assert entry["action"] == "purge"
    assert entry["message_ids"] == ["garbage-2"]
    assert entry["filters"] == {"reasons": ["malformed"]}


_CONSUMER_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {support!r})
from dlq_support import run_consumer
from kpr.config import Settings
settings = Settings.from_env()
asyncio.run(run_consumer(settings, settings.topology(), until_idle_s=1.0))
"""


async def _kill_while_draining(
    argv: list[str], env: dict[str, str], rng: random.Random, url: str, queue_name: str
) -> int:
    """Start a process and SIGKILL it a random 0-500 ms after the queue starts to shrink
    (i.e. while it is working through it); returns the queue depth after the kill."""
    start = await depth(url, queue_name)
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            queue = await channel.declare_queue(queue_name, passive=True)
            if (queue.declaration_result.message_count or 0) < start:
                break
            await asyncio.sleep(0.01)
    await asyncio.sleep(rng.uniform(0.0, 0.5))
    with contextlib.suppress(ProcessLookupError):  # it may have drained the queue already
        process.send_signal(signal.SIGKILL)
    await process.wait()
    return await depth(url, queue_name)


@pytest.mark.slow
async def test_no_message_is_lost_when_the_consumer_is_killed_while_dead_lettering(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """kill -9 the consumer (with receipts) at random moments over a mix of good and
    rejected messages, then let one run finish: every published id is committed exactly
    once or in the dead-letter queue, none lost, the work queue empty."""
    rng = random.Random(45)
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=["310000035"])
    topology = settings.topology()
    events = generate_events(150, seed=45)
    raws = [sealed_event(e, dev_pki, register_her_id=settings.register_her_id) for e in events]
    good = {
        r.message_id
        for r, e in zip(raws, events, strict=True)
        if e.reporting_unit_org_number in {"310000000", "310000035"}
    }
    rejected = {r.message_id for r in raws} - good
    assert good
    assert rejected
    await publish_raw(amqp_vhost_url, topology, raws)
    argv = [sys.executable, "-c", _CONSUMER_SCRIPT.format(support=str(SUPPORT_DIR))]

    left_after_kills = []
    for _ in range(4):
        left_after_kills.append(
            await _kill_while_draining(
                argv, _env(settings), rng, amqp_vhost_url, topology.work_queue
            )
        )
    _counts, summary = await run_consumer(settings, topology, until_idle_s=1.0)

    print("work queue depth after each kill:", left_after_kills)
    # At least one kill landed while the consumer was part-way through the queue.
    assert any(0 < left < len(raws) for left in left_after_kills)
    assert await depth(amqp_vhost_url, topology.work_queue) == 0
    stored = _stored_message_ids(settings)
    assert len(stored) == len(set(stored))
    assert set(stored) == good
    assert summary.events_committed == len(good)
    dead = {m.message_id for m in await drain(amqp_vhost_url, topology.dead_letter_queue)}
    assert dead == rejected


@pytest.mark.slow
async def test_no_message_is_lost_when_a_replay_is_killed(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """kill -9 `kpr dlq replay --rate` mid-way, replay again, consume: every dead letter
    commits exactly once and the dead-letter queue ends empty (a letter republished but
    not yet acked when killed is replayed twice and deduplicated by the store)."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path, grants=[])
    raws = await _dead_lettered(settings, _foreign_unit_events(40, seed=46), dev_pki)
    _grant_all(settings)
    topology = settings.topology()
    argv = [sys.executable, "-m", "kpr", "dlq", "replay", "--rate", "40"]

    dlq_depth = await _kill_while_draining(
        argv, _env(settings), random.Random(46), amqp_vhost_url, topology.dead_letter_queue
    )
    finish = _kpr(settings, "dlq", "replay", "--json")
    _counts, summary = await run_consumer(settings, topology, receipts=False, until_idle_s=0.5)

    assert 0 < dlq_depth < len(raws)
    assert finish.returncode == 0, finish.stderr
    assert summary.events_committed == len(raws)
    stored = _stored_message_ids(settings)
    assert sorted(stored) == sorted(r.message_id for r in raws)
    assert await depth(amqp_vhost_url, topology.dead_letter_queue) == 0
    assert await depth(amqp_vhost_url, topology.work_queue) == 0
