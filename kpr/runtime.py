"""Wiring: settings in, running producer / consumer out. Shared by the CLI and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from consumers.consumer import Consumer
from consumers.metrics import CertificateRole, ConsumerMetrics
from consumers.opener import Opener
from consumers.processing import Processor
from consumers.pseudonym import Pseudonymiser, load_or_create_key
from consumers.store import SqlStore, StoreSummary, open_store
from contracts.events import Event, parse_event
from kpr.config import Settings
from kpr.observability import ObservabilityServer, ReadinessCheck
from producers.metrics import ProducerMetrics
from producers.publisher import Publisher, PublishReport
from producers.sealer import SealedMessage, Sealer

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


log = logging.getLogger("kpr.runtime")

PATHWAY_SAMPLE_INTERVAL_S = 30.0


@contextlib.asynccontextmanager
async def _endpoint(
    settings: Settings, registry: CollectorRegistry, readiness: ReadinessCheck
) -> AsyncIterator[ObservabilityServer | None]:
    """The ``/metrics`` endpoint on ``settings.metrics_port`` (0: a free port), if set."""
    if settings.metrics_port is None:
        yield None
        return
    async with ObservabilityServer(registry, readiness, port=settings.metrics_port) as server:
        yield server


async def publish_events(
    settings: Settings,
    events: Iterable[Event],
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
) -> PublishReport:
    """Seal and publish ``events``; once ``stop`` is set, publish no more and wait for
    the confirms of those already sent (the report then covers fewer than all)."""
    sealer = build_sealer(settings)
    metrics = ProducerMetrics(registry if registry is not None else CollectorRegistry())
    metrics.set_signing_certificate_expiry(settings.signing_identity().certificate)

    def sealed_until_stopped() -> Iterator[SealedMessage]:
        for event in events:
            if stop is not None and stop.is_set():
                log.info("stop requested: no more publishes")
                return
            yield sealer.seal(event)

    async with (
        Publisher(
            settings.amqp_url,
            topology=settings.topology(),
            tls=settings.tls_settings(),
            metrics=metrics,
        ) as publisher,
        _endpoint(settings, metrics.registry, publisher.readiness_problems),
    ):
        return await publisher.publish_all(sealed_until_stopped())


def _certificate_gauges(settings: Settings, metrics: ConsumerMetrics) -> None:
    keys = settings.decryption_keys()
    roles = (CertificateRole.DECRYPTION, CertificateRole.DECRYPTION_PREVIOUS)
    for role, key in zip(roles, keys, strict=False):
        metrics.set_certificate_expiry(role, key.certificate)


async def _sample_pathways(store: SqlStore, metrics: ConsumerMetrics, interval_s: float) -> None:
    while True:
        try:
            metrics.set_pathway_counts(await store.summary())
        except Exception as error:  # a metric sample must never stop the consumer
            log.warning("pathway counts not sampled: %s", type(error).__name__)
        await asyncio.sleep(interval_s)


async def consume(
    settings: Settings,
    *,
    until_idle_s: float | None = None,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    watch_interval_s: float = 5.0,
) -> Counter[str]:
    """Run the consumer until ``stop`` is set (then drain within ``settings.drain_timeout_s``)
    or the queue has been idle ``until_idle_s``; serve ``/metrics`` if a port is set."""
    metrics = ConsumerMetrics(registry if registry is not None else CollectorRegistry())
    _certificate_gauges(settings, metrics)
    store: SqlStore = open_store(settings.store_url)
    async with store:
        processor = Processor(build_opener(settings), pseudonymiser(settings), store)
        async with Consumer(
            settings.amqp_url,
            topology=settings.topology(),
            processor=processor,
            tls=settings.tls_settings(),
            drain_timeout_s=settings.drain_timeout_s,
            metrics=metrics,
            store_ping=store.ping,
            watch_interval_s=watch_interval_s,
        ) as consumer, _endpoint(settings, metrics.registry, consumer.readiness_problems):
            sampler = asyncio.create_task(
                _sample_pathways(store, metrics, PATHWAY_SAMPLE_INTERVAL_S)
            )

            async def relay_stop() -> None:
                if stop is not None:
                    await stop.wait()
                    consumer.request_stop()

            # Started after run() cleared its stop flag, so an early signal is not lost.
            relay = asyncio.create_task(relay_stop())
            try:
                return await consumer.run(until_idle_s=until_idle_s)
            finally:
                for task in (relay, sampler):
                    task.cancel()
                await asyncio.gather(relay, sampler, return_exceptions=True)


async def store_summary(settings: Settings) -> StoreSummary:
    async with open_store(settings.store_url) as store:
        return await store.summary()
