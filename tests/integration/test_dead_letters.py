"""Failure handling on a real broker: every rejection class, retries, poison, receipts."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from dlq_support import (
    SENDER_HER_ID,
    Raw,
    depth,
    drain,
    letter_for,
    make_settings,
    publish_raw,
    run_consumer,
    sealed_event,
)

from consumers.deadletter import (
    CONSUMER_VERSION,
    HEADER_ATTEMPT,
    HEADER_DEAD_LETTERED_AT,
    HEADER_DESCRIPTION,
    HEADER_HOST,
    HEADER_ORIGINAL_EXCHANGE,
    HEADER_ORIGINAL_MESSAGE_ID,
    HEADER_ORIGINAL_ROUTING_KEY,
    HEADER_REASON,
    HEADER_RETRY_HISTORY,
    HEADER_SENDER_HER_ID,
    HEADER_VERSION,
)
from consumers.receipts import RECEIPT_CONTENT_TYPE
from consumers.replay import DeadLetterQueue
from contracts.errors import Reason
from contracts.pki import PkiDir, generate_dev_pki
from contracts.synth import generate_events
from contracts.topology import Topology


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """A second, unrelated CA with the same party names: trusted by nobody here."""
    return generate_dev_pki(tmp_path_factory.mktemp("other-pki"))


def _topology(her_id: int, **changes: object) -> Topology:
    return Topology(register_her_id=her_id, **changes)  # type: ignore[arg-type]


async def test_each_permanent_failure_is_dead_lettered_with_its_reason_and_headers(
    amqp_vhost_url: str, dev_pki: PkiDir, other_pki: PkiDir, tmp_path: Path
) -> None:
    """Every rejection class lands in the DLQ at once: original bytes, reason, description,
    time, host, version, original exchange / routing key / message id, sender HER-id; and
    its sender gets one signed receipt per rejection."""
    events = generate_events(40, seed=31)
    # The sender may report for every unit but 310000027: that one is spoofing.
    settings = make_settings(
        amqp_vhost_url, dev_pki, tmp_path, grants=["310000035", "310000043", "310000051"]
    )
    topology = settings.topology()
    her = settings.register_her_id
    authorised = [e for e in events if e.reporting_unit_org_number != "310000027"]
    unauthorised = next(e for e in events if e.reporting_unit_org_number == "310000027")

    committed_first = sealed_event(authorised[0], dev_pki, register_her_id=her)
    await publish_raw(amqp_vhost_url, topology, [committed_first])
    counts, summary = await run_consumer(settings, topology, until_idle_s=0.5)
    assert counts.get("committed") == 1

    good = sealed_event(authorised[1], dev_pki, register_her_id=her)
    tampered_body = bytearray(good.body)
    tampered_body[-40] ^= 0x01
    bad_checksum = authorised[2].model_dump(mode="json")["person"]
    bad_checksum["national_id"] = bad_checksum["national_id"][:-1] + str(
        (int(bad_checksum["national_id"][-1]) + 1) % 10
    )
    headers = {"fromHerId": SENDER_HER_ID}
    cases: dict[Reason, Raw] = {
        Reason.MALFORMED: Raw(b"this is not CMS", str(uuid.uuid4()), headers),
        Reason.TOO_LARGE: Raw(b"\x30" * 1_000_001, str(uuid.uuid4()), headers),
        Reason.UNDECRYPTABLE: letter_for(
            b"{}",
            signer=dev_pki.sender.signing_identity,
            recipient=other_pki.register.encryption_certificate,
            recipient_her_id=her,
        ),
        Reason.UNTRUSTED_CERTIFICATE: letter_for(
            orjson.dumps(authorised[3].model_dump(mode="json")),
            signer=other_pki.sender.signing_identity,
            recipient=dev_pki.register.encryption_certificate,
            recipient_her_id=her,
        ),
        Reason.WRONG_RECIPIENT: letter_for(
            orjson.dumps(authorised[4].model_dump(mode="json")),
            signer=dev_pki.sender.signing_identity,
            recipient=dev_pki.register.encryption_certificate,
            recipient_her_id=12345,
        ),
        Reason.SENDER_NOT_AUTHORISED: sealed_event(unauthorised, dev_pki, register_her_id=her),
        Reason.INVALID_CONTRACT: sealed_event(
            authorised[2], dev_pki, register_her_id=her, person=bad_checksum
        ),
        Reason.UNKNOWN_SCHEMA_VERSION: sealed_event(
            authorised[5], dev_pki, register_her_id=her, schema_version=99
        ),
        Reason.CONFLICTING_DUPLICATE: sealed_event(
            authorised[0], dev_pki, register_her_id=her, source_system="Another EPJ 1.0"
        ),
    }
    tampered = Raw(bytes(tampered_body), good.message_id, good.headers)
    await publish_raw(amqp_vhost_url, topology, [*cases.values(), tampered])

    counts, summary = await run_consumer(settings, topology, until_idle_s=1.0)

    assert counts.get("dead_lettered") == len(cases) + 1
    assert summary.events_committed == 1
    dead = {m.message_id: m for m in await drain(amqp_vhost_url, topology.dead_letter_queue)}
    assert len(dead) == len(cases) + 1
    national_ids = {e.person.national_id for e in events}
    for reason, raw in cases.items():
        letter = dead[raw.message_id]
        h = letter.headers
        assert letter.body == raw.body, reason
        assert h[HEADER_REASON] == reason.value
        assert h[HEADER_DESCRIPTION]
        assert not any(n in h[HEADER_DESCRIPTION] for n in national_ids)
        assert datetime.fromisoformat(h[HEADER_DEAD_LETTERED_AT]).tzinfo is not None
        assert h[HEADER_HOST] == socket.gethostname()
        assert h[HEADER_VERSION] == CONSUMER_VERSION
        assert h[HEADER_ORIGINAL_EXCHANGE] == topology.work_exchange
        assert h[HEADER_ORIGINAL_ROUTING_KEY] == topology.routing_key
        assert h[HEADER_ORIGINAL_MESSAGE_ID] == raw.message_id
        assert h[HEADER_SENDER_HER_ID] == SENDER_HER_ID
        assert letter.message_id == raw.message_id
    assert dead[tampered.message_id].headers[HEADER_REASON] in {"undecryptable", "bad-signature"}

    receipts = await drain(amqp_vhost_url, topology.receipt_queue(SENDER_HER_ID))
    by_original = {r.headers["originalMessageId"]: r for r in receipts}
    assert set(by_original) == set(dead)
    for reason, raw in cases.items():
        receipt = by_original[raw.message_id]
        assert receipt.content_type == RECEIPT_CONTENT_TYPE
        assert receipt.headers["errorCondition"] == reason.national_condition
        assert (
            receipt.headers["errorDescription"] == dead[raw.message_id].headers[HEADER_DESCRIPTION]
        )


@pytest.mark.openssl
async def test_a_rejection_receipt_is_signed_data_that_openssl_verifies(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """The receipt body is CMS SignedData by the register; `openssl cms -verify` accepts it
    against the dev root and the JSON inside names the event and the reason (here a
    conflicting duplicate: an event the consumer verified before rejecting it)."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path)
    topology = settings.topology()
    [event] = generate_events(1, seed=32)
    her = settings.register_her_id
    await publish_raw(amqp_vhost_url, topology, [sealed_event(event, dev_pki, register_her_id=her)])
    await run_consumer(settings, topology, until_idle_s=0.3)
    raw = sealed_event(event, dev_pki, register_her_id=her, source_system="Another EPJ 1.0")
    await publish_raw(amqp_vhost_url, topology, [raw])

    await run_consumer(settings, topology, until_idle_s=0.3)

    [receipt] = await drain(amqp_vhost_url, topology.receipt_queue(SENDER_HER_ID))
    signed = tmp_path / "receipt.der"
    signed.write_bytes(receipt.body)
    verified = await asyncio.to_thread(
        subprocess.run,
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(signed),
            "-CAfile",
            str(dev_pki.root_path),
            "-purpose",
            "any",
        ],
        check=True,
        capture_output=True,
    )
    assert b"Verification successful" in verified.stderr
    content = orjson.loads(verified.stdout)
    assert content["original_message_id"] == raw.message_id
    assert content["event_id"] == str(event.event_id)
    assert content["event_type"] == event.event_type
    assert content["reason"] == Reason.CONFLICTING_DUPLICATE.value
    assert content["error_condition"] == Reason.CONFLICTING_DUPLICATE.national_condition
    assert event.person.national_id not in verified.stdout.decode()


async def test_a_transient_store_failure_is_retried_through_the_delay_queues_then_commits(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """StoreUnavailable twice: the message goes through two delay queues (quorum, per-message
    TTL, dead-lettered back into the work exchange) and commits on the third attempt."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path)
    topology = _topology(settings.register_her_id, retry_delays_s=(0.2, 0.4))
    [event] = generate_events(1, seed=33)
    raw = sealed_event(event, dev_pki, register_her_id=settings.register_her_id)
    await publish_raw(amqp_vhost_url, topology, [raw])

    counts, summary = await run_consumer(settings, topology, store_failures=2, until_idle_s=1.5)

    assert counts.get("retried") == 2
    assert counts.get("committed") == 1
    assert summary.events_committed == 1
    assert await depth(amqp_vhost_url, topology.dead_letter_queue) == 0
    for tier in (0, 1):
        assert await depth(amqp_vhost_url, topology.retry_queue(tier)) == 0


async def test_retries_exhausted_dead_letters_with_the_retry_history(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """A store that never recovers: after max_attempts the message is dead-lettered with
    reason retries-exhausted and one history line per retry, and no receipt blames the
    sender for our outage beyond the one rejection receipt."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path)
    topology = _topology(settings.register_her_id, retry_delays_s=(0.2, 0.4))
    [event] = generate_events(1, seed=34)
    raw = sealed_event(event, dev_pki, register_her_id=settings.register_her_id)
    await publish_raw(amqp_vhost_url, topology, [raw])

    counts, summary = await run_consumer(
        settings, topology, store_failures=None, max_attempts=3, until_idle_s=1.5
    )

    assert counts.get("retried") == 2
    assert counts.get("dead_lettered") == 1
    assert summary.events_committed == 0
    [dead] = await drain(amqp_vhost_url, topology.dead_letter_queue)
    assert dead.body == raw.body
    assert dead.headers[HEADER_REASON] == Reason.RETRIES_EXHAUSTED.value
    assert dead.headers[HEADER_ATTEMPT] == 2
    history = dead.headers[HEADER_RETRY_HISTORY]
    assert len(history) == 2
    assert "attempt 1" in history[0]
    assert "attempt 2" in history[1]
    assert "x-death" not in dead.headers


async def test_a_poison_message_is_dead_lettered_by_the_delivery_limit(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """A message that crashes the consumer (RuntimeError) is requeued until the quorum
    queue's delivery limit dead-letters it; the others commit; `kpr dlq` shows it as
    delivery-limit."""
    settings = make_settings(amqp_vhost_url, dev_pki, tmp_path)
    topology = _topology(settings.register_her_id, delivery_limit=2)
    events = generate_events(3, seed=35)
    raws = [sealed_event(e, dev_pki, register_her_id=settings.register_her_id) for e in events]
    await publish_raw(amqp_vhost_url, topology, raws)

    counts, summary = await run_consumer(
        settings, topology, poison_message_id=raws[1].message_id, until_idle_s=1.0
    )

    assert counts.get("committed") == 2
    assert counts.get("requeued", 0) >= 2
    assert summary.events_committed == 2
    async with DeadLetterQueue(amqp_vhost_url, topology=topology) as dlq:
        [info] = await dlq.list_matching()
    assert info.message_id == raws[1].message_id
    assert info.reason == Reason.DELIVERY_LIMIT.value
    assert info.sender_her_id == SENDER_HER_ID
    assert info.event_type == events[1].event_type
    assert info.dead_lettered_at is not None
    [dead] = await drain(amqp_vhost_url, topology.dead_letter_queue)
    assert dead.body == raws[1].body
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert dead.headers["x-death"][0]["queue"] == topology.work_queue
