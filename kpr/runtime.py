"""Wiring: settings in, running producer / consumer out. Shared by the CLI and the demo."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from consumers.consumer import Consumer
from consumers.opener import Opener
from consumers.processing import Processor
from consumers.pseudonym import Pseudonymiser, load_or_create_key
from consumers.store import SqlStore, StoreSummary, open_store
from contracts.events import Event, parse_event
from kpr.config import Settings
from producers.publisher import PublishReport, Publisher
from producers.sealer import Sealer

__all__ = [
    "build_opener",
    "build_sealer",
    "consume",
    "pseudonymiser",
    "publish_events",
    "read_events",
    "store_summary",
]


def read_events(path: Path, settings: Settings) -> Iterator[Event]:
    """Events of a JSON Lines file, validated; a bad line stops with its line number."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield parse_event(orjson.loads(line), environment=settings.environment)
            except orjson.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON") from error
            except Exception as error:
                raise ValueError(f"{path}:{number}: {error}") from error


def build_sealer(settings: Settings) -> Sealer:
    return Sealer(
        settings.signing_identity(),
        settings.recipient_certificate(),
        recipient_her_id=settings.register_her_id,
        profile=settings.profile,
    )


def build_opener(settings: Settings) -> Opener:
    return Opener(
        keys=settings.decryption_keys(),
        trust=settings.trust_store(),
        authorisation=settings.sender_authorisation(),
        own_her_id=settings.register_her_id,
        environment=settings.environment,
    )


def pseudonymiser(settings: Settings) -> Pseudonymiser:
    path = settings.pseudonym_key_path()
    if settings.pseudonym_key_file is None:
        return load_or_create_key(path)
    return Pseudonymiser.from_file(path)


async def publish_events(settings: Settings, events: Iterable[Event]) -> PublishReport:
    sealer = build_sealer(settings)
    async with Publisher(settings.amqp_url, topology=settings.topology()) as publisher:
        return await publisher.publish_all(sealer.seal(event) for event in events)


async def consume(settings: Settings, *, until_idle_s: float | None = None) -> Counter[str]:
    store: SqlStore = open_store(settings.store_url)
    async with store:
        processor = Processor(build_opener(settings), pseudonymiser(settings), store)
        async with Consumer(
            settings.amqp_url, topology=settings.topology(), processor=processor
        ) as consumer:
            return await consumer.run(until_idle_s=until_idle_s)


async def store_summary(settings: Settings) -> StoreSummary:
    async with open_store(settings.store_url) as store:
        return await store.summary()
