"""Shared helpers for the dead-letter and ``kpr dlq`` tests (real broker, real store)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from support import pipeline_settings

from consumers.consumer import Consumer
from consumers.processing import Processor
from consumers.receipts import ReceiptSigner
from consumers.store import ApplyResult, EventRecord, SqliteStore, StoreSummary, open_store
from contracts.envelope import CONTENT_TYPE, SigningIdentity, seal
from contracts.errors import StoreUnavailable
from contracts.events import Event, encode_event
from contracts.letter import Party, encode_letter
from contracts.pki import PkiDir, org_number_of
from contracts.topology import Topology
from kpr.config import Settings
from kpr.runtime import build_opener, pseudonymiser

SENDER_HER_ID = 90001


def make_settings(
    amqp_url: str, pki: PkiDir, state_dir: Path, *, grants: Sequence[str] | None = None
) -> Settings:
    """Settings for one test on its own vhost (so no name prefix); ``grants`` are the units
    the dev sender may report for (default: every synthetic unit)."""
    return pipeline_settings(amqp_url, pki, state_dir, grants=grants, isolate=False)


@dataclass(frozen=True)
class Raw:
    """A message as it goes on the wire, built by hand where a test needs a bad one."""

    body: bytes
    message_id: str
    headers: Mapping[str, Any]


def letter_for(
    event_json: bytes,
    *,
    signer: SigningIdentity,
    recipient: Any,
    recipient_her_id: int,
    sender_her_id: int = SENDER_HER_ID,
    message_id: str | None = None,
    event_type: str = "kad.admission",
) -> Raw:
    """Seal event JSON as a letter, bypassing validation (the test decides what is in it)."""
    message_id = message_id or str(uuid.uuid4())
    org = org_number_of(signer.certificate)
    assert org is not None
    letter = encode_letter(
        message_id=message_id,
        sender=Party(her_id=sender_her_id, org_number=org),
        recipient_her_id=recipient_her_id,
        event_json=event_json,
    )
    body = seal(letter, signer=signer, recipient=recipient)
    return Raw(body, message_id, {"fromHerId": sender_her_id, "eventType": event_type})


def sealed_event(event: Event, pki: PkiDir, *, register_her_id: int, **changes: Any) -> Raw:
    """An event sealed by the dev sender to the dev register; ``changes`` edit the JSON."""
    data = event.model_dump(mode="json")
    data.update(changes)
    return letter_for(
        orjson.dumps(data) if changes else encode_event(event),
        signer=pki.sender.signing_identity,
        recipient=pki.register.encryption_certificate,
        recipient_her_id=register_her_id,
        event_type=event.event_type,
    )


async def publish_raw(url: str, topology: Topology, messages: Sequence[Raw]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await topology.declare(channel)
        exchange = await channel.get_exchange(topology.work_exchange)
        for raw in messages:
            await exchange.publish(
                aio_pika.Message(
                    raw.body,
                    message_id=raw.message_id,
                    content_type=CONTENT_TYPE,
                    headers=dict(raw.headers),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=topology.routing_key,
                mandatory=True,
            )


async def drain(url: str, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take every message off a queue (acked: they are gone afterwards)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        messages = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            messages.append(message)
        return messages


async def depth(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)


class FlakyStore:
    """A store whose ``apply`` raises :class:`StoreUnavailable` for its first ``failures``
    calls (``None``: always), then delegates: a test double for the store only."""

    def __init__(self, inner: SqliteStore, failures: int | None) -> None:
        self._inner = inner
        self._failures = failures
        self.calls = 0

    async def apply(self, record: EventRecord) -> ApplyResult:
        self.calls += 1
        if self._failures is None or self.calls <= self._failures:
            raise StoreUnavailable("the pathway store is unavailable (test double)")
        return await self._inner.apply(record)

    async def record_rejection(self, rejection: Any) -> None:
        await self._inner.record_rejection(rejection)

    async def summary(self) -> StoreSummary:
        return await self._inner.summary()

    async def ping(self) -> None:
        await self._inner.ping()

    async def aclose(self) -> None:
        await self._inner.aclose()


class CrashingProcessor:
    """Raises ``RuntimeError`` (a bug, outside the tree) for one message id."""

    def __init__(self, inner: Processor, poison_message_id: str) -> None:
        self._inner = inner
        self._poison = poison_message_id
        self.crashes = 0

    async def process(self, body: bytes, *, message_id: str | None, from_her_id: int | None) -> Any:
        if message_id == self._poison:
            self.crashes += 1
            raise RuntimeError("simulated consumer bug")
        return await self._inner.process(body, message_id=message_id, from_her_id=from_her_id)


async def run_consumer(
    settings: Settings,
    topology: Topology,
    *,
    store_failures: int | None = 0,
    poison_message_id: str | None = None,
    receipts: bool = True,
    max_attempts: int = 5,
    until_idle_s: float = 1.0,
) -> tuple[dict[str, int], StoreSummary]:
    """Run a consumer until idle; returns its counts and the store summary afterwards."""
    async with open_store(settings.store_url) as real_store:
        store: Any = real_store if store_failures == 0 else FlakyStore(real_store, store_failures)
        processor: Any = Processor(build_opener(settings), pseudonymiser(settings), store)
        if poison_message_id is not None:
            processor = CrashingProcessor(processor, poison_message_id)
        signer = (
            ReceiptSigner(PkiDir.load(settings.pki_dir).register.signing_identity)
            if receipts
            else None
        )
        async with Consumer(
            settings.amqp_url,
            topology=topology,
            processor=processor,
            max_attempts=max_attempts,
            receipt_signer=signer,
        ) as consumer:
            counts = await consumer.run(until_idle_s=until_idle_s)
        return dict(counts), await real_store.summary()
