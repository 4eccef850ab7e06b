"""Wiring: settings in, running producer / consumer out. Shared by the CLI and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumers.consumer import Consumer
from consumers.metrics import CertificateRole, ConsumerMetrics
from consumers.opener import Opener
from consumers.pool import OpenerPool
from consumers.processing import Processor
from consumers.pseudonym import MIN_KEY_BYTES, Pseudonymiser, load_or_create_key
from consumers.receipts import ReceiptSigner
from consumers.store import SqlStore, StoreSummary, open_store
from contracts.addressregister import AddressRegister, FileAddressRegister
from contracts.apprec import AppRecMode
from contracts.errors import (
    ContractViolation,
    InputRefused,
    KeyMaterialError,
    MalformedMessage,
    PublishFailed,
)
from contracts.events import Event, parse_event
from kpr.config import Settings
from kpr.lifecycle import interrupted_while_opening
from kpr.observability import ObservabilityServer, ReadinessCheck
from kpr.partitioned import PartitionedConsumers
from producers.metrics import ProducerMetrics
from producers.publisher import OutcomeCallback, Publisher, PublishOutcome, PublishReport
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


STDIN = Path("-")


def read_events(path: Path, settings: Settings) -> Iterator[Event]:
    """Events of a JSON Lines file (``-``: standard input), validated. A line that is not
    JSON stops with :class:`InputRefused`, an event that breaks a contract with its
    :class:`ContractViolation`; both name the file and the line number."""
    try:
        handle = sys.stdin.buffer if path == STDIN else path.open("rb")
    except OSError as error:
        raise InputRefused(
            f"cannot read the events file {path}: {error.strerror or error}",
            "give a JSON Lines file of events, or - for standard input",
        ) from None
    with contextlib.ExitStack() as stack:
        if handle is not sys.stdin.buffer:
            stack.enter_context(handle)
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield parse_event(line, environment=settings.environment)
            except MalformedMessage as malformed:
                raise InputRefused(
                    f"{path}:{number}: {malformed.description}", "one event per line, as JSON"
                ) from None
            except ContractViolation as violation:
                if violation.rule in ("not-json", "not-an-object"):
                    raise InputRefused(
                        f"{path}:{number}: {violation.description}",
                        "one event per line, as a JSON object",
                    ) from None
                hint = (
                    " (synthetic test data: set KPR_ENVIRONMENT=test to send it to a test register)"
                    if violation.rule == "synthetic-id-in-production"
                    else ""
                )
                raise type(violation)(
                    f"{path}:{number}: {violation.description}{hint}",
                    field=violation.field,
                    rule=violation.rule,
                ) from None


def build_sealer(settings: Settings) -> Sealer:
    return Sealer(
        settings.signing_identity(),
        settings.recipient_certificate(),
        recipient_her_id=settings.register_her_id,
        profile=settings.profile,
        partition_key=settings.partition_key(),
        letter_form=settings.letter_form,
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
    """The pseudonym key of ``settings``; a missing or malformed key file is a
    :class:`KeyMaterialError` that names the file (never its content)."""
    path = settings.pseudonym_key_path()
    try:
        if settings.pseudonym_key_file is None:
            return load_or_create_key(path)
        return Pseudonymiser.from_file(path)
    except OSError as error:
        raise KeyMaterialError(
            f"cannot read the pseudonym key {path}: {error.strerror or error}",
            "KPR_PSEUDONYM_KEY_FILE names a file of hex, at least 32 bytes",
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise KeyMaterialError(
            f"the pseudonym key {path} is not at least {MIN_KEY_BYTES} bytes of hex",
            "make one with: python -c 'import secrets; print(secrets.token_hex(32))'",
        ) from None


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
    async with ObservabilityServer(
        registry, readiness, port=settings.metrics_port, host=settings.metrics_host
    ) as server:
        yield server


def _inbound_exchange(settings: Settings) -> str | None:
    if settings.sender_her_id is None:
        return None
    return settings.topology().inbound_exchange(settings.sender_her_id)


async def publish_events(
    settings: Settings,
    events: Iterable[Event],
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    on_outcome: OutcomeCallback | None = None,
    confirm_timeout_s: float = 30.0,
    resend_rounds: int = 3,
    reconnect_timeout_s: float = 60.0,
) -> PublishReport:
    """Seal and publish ``events``; once ``stop`` is set, publish no more and wait for
    the confirms of those already sent (the report then covers fewer than all).

    A message whose outcome is unknown (no confirm within ``confirm_timeout_s``, or the
    connection broke under it) is resent, with the same message id, once the connection
    is back (waiting up to ``reconnect_timeout_s``), at most ``resend_rounds`` times.
    What is still unknown after that stays ``unknown`` in the report (``kpr produce``
    then exits 1): the wall time is bounded, the producer never hangs silently.
    ``on_outcome`` sees every attempt, the report only each message's final outcome."""
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
        interrupted_while_opening() as opened,
        Publisher(
            settings.amqp_url,
            topology=settings.topology(),
            # A sender's broker user may write only to its own inbound exchange.
            exchange=_inbound_exchange(settings),
            declare=settings.sender_her_id is None,
            tls=settings.tls_settings(),
            metrics=metrics,
            confirm_timeout_s=confirm_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
        ) as publisher,
        _endpoint(settings, metrics.registry, publisher.readiness_problems),
    ):
        opened()
        final: dict[str, PublishOutcome] = {}
        unknown: dict[str, SealedMessage] = {}

        async def track(
            sealed: SealedMessage, outcome: PublishOutcome, error: PublishFailed | None
        ) -> None:
            final[sealed.message_id] = outcome
            if outcome is PublishOutcome.UNKNOWN:
                unknown[sealed.message_id] = sealed
            else:
                unknown.pop(sealed.message_id, None)
            if on_outcome is not None:
                await on_outcome(sealed, outcome, error)

        await publisher.publish_all(sealed_until_stopped(), on_outcome=track)
        for _ in range(resend_rounds):
            if not unknown or (stop is not None and stop.is_set()):
                break
            if not await _reconnected(publisher, reconnect_timeout_s):
                log.error("broker not back in time: %d messages left unknown", len(unknown))
                break
            log.warning("resending %d messages whose outcome is unknown", len(unknown))
            await publisher.publish_all(list(unknown.values()), on_outcome=track)
        report = PublishReport()
        for message_id, outcome in final.items():
            report.record(message_id, outcome)
        return report


async def _reconnected(publisher: Publisher, timeout_s: float) -> bool:
    """Wait until ``publisher`` can publish again (robust reconnect); False after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await publisher.readiness_problems():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def _certificate_gauges(settings: Settings, metrics: ConsumerMetrics) -> None:
    keys = settings.decryption_keys()
    roles = (CertificateRole.DECRYPTION, CertificateRole.DECRYPTION_PREVIOUS)
    for role, key in zip(roles, keys, strict=False):
        metrics.set_certificate_expiry(role, key.certificate)
    trust = settings.trust_store()
    # Several anchors: the one that expires first is the one to act on.
    for role, certificates in (
        (CertificateRole.TRUST_ROOT, trust.roots),
        (CertificateRole.TRUST_INTERMEDIATE, trust.intermediates),
    ):
        if certificates:
            first = min(certificates, key=lambda c: c.not_valid_after_utc)
            metrics.set_certificate_expiry(role, first)


async def _sample_pathways_once(
    store: SqlStore, metrics: ConsumerMetrics, overdue_after: timedelta
) -> None:
    try:
        overdue = await store.incomplete_stays(older_than=overdue_after, as_of=datetime.now(UTC))
        metrics.set_pathway_counts(await store.summary(), overdue=len(overdue))
        metrics.set_sender_activity(await store.sender_activity())
    except Exception as error:  # a metric sample must never stop the consumer
        log.warning("pathway counts not sampled: %s", type(error).__name__)


async def _sample_pathways(
    store: SqlStore, metrics: ConsumerMetrics, interval_s: float, overdue_after: timedelta
) -> None:
    while True:
        await _sample_pathways_once(store, metrics, overdue_after)
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
    or the queue has been idle ``until_idle_s``; serve ``/metrics`` if a port is set.

    With ``settings.open_workers`` > 0 the RSA-heavy open step runs in that many worker
    processes, so both cores work while the event loop handles AMQP and the store."""
    # Read and checked before any connection: a bad file stops the start with one line.
    address_register = (
        settings.address_register() if settings.apprec is not AppRecMode.OFF else None
    )
    if settings.apprec is not AppRecMode.OFF and address_register is None:
        address_register = FileAddressRegister({})  # every AppRec counted as skipped
        log.warning(
            "KPR_ADDRESS_REGISTER is not set: no sender's encryption certificate is known, so "
            "no AppRec is sent (kpr_consumer_apprecs_total counts them as skipped); set it, "
            "or KPR_APPREC=off (docs/OPERATIONS.md, 'National bus')"
        )
    metrics = ConsumerMetrics(registry if registry is not None else CollectorRegistry())
    _certificate_gauges(settings, metrics)
    if settings.authorisation_path() is None:
        log.warning(
            "KPR_AUTHORISATION_FILE is not set: only units that sign for themselves are "
            "accepted, every other sender is dead-lettered as sender-not-authorised; set it "
            "to the grants file (docs/OPERATIONS.md, 'Who may send what')"
        )
    store: SqlStore = open_store(settings.store_url, linger_s=settings.group_commit_linger_s)
    # Before the pool starts: this may create the key file the workers then only read.
    pseudonyms = pseudonymiser(settings)
    with contextlib.ExitStack() as pools:
        pool = (
            pools.enter_context(
                OpenerPool(
                    functools.partial(build_opener, settings),
                    workers=settings.open_workers,
                    # The workers pseudonymise too: only plain records come back.
                    pseudonymiser_factory=functools.partial(pseudonymiser, settings),
                )
            )
            if settings.open_workers > 0
            else None
        )
        async with store:
            processor = Processor(build_opener(settings), pseudonyms, store, opener_pool=pool)
            return await _consume_with(
                settings,
                processor,
                store,
                metrics,
                until_idle_s,
                stop,
                watch_interval_s,
                address_register,
            )


async def _consume_with(
    settings: Settings,
    processor: Processor,
    store: SqlStore,
    metrics: ConsumerMetrics,
    until_idle_s: float | None,
    stop: asyncio.Event | None,
    watch_interval_s: float,
    address_register: AddressRegister | None = None,
) -> Counter[str]:
    signer = settings.receipt_signing_identity()

    def consumer_of(queue: str | None) -> Consumer:
        return Consumer(
            settings.amqp_url,
            topology=settings.topology(),
            processor=processor,
            tls=settings.tls_settings(),
            drain_timeout_s=settings.drain_timeout_s,
            stall_after_s=settings.stall_after_s,
            metrics=metrics,
            store_ping=store.ping,
            watch_interval_s=watch_interval_s,
            receipt_signer=ReceiptSigner(signer),
            # The register's one signing identity signs receipts and AppRecs alike.
            apprec_signer=signer,
            address_register=address_register,
            apprec_mode=settings.apprec,
            queue=queue,
            connect_timeout_s=settings.connect_timeout_s,
        )

    # Partitioned: one Consumer per partition queue behind the same interface.
    consumers: Consumer | PartitionedConsumers = (
        PartitionedConsumers(
            consumer_of,
            settings.topology(),
            url=settings.amqp_url,
            tls=settings.tls_settings(),
            consumer_processes=settings.partition_consumers,
            standby_delay_s=settings.partition_standby_delay_s,
        )
        if settings.partitions
        else consumer_of(None)
    )
    async with (
        interrupted_while_opening() as opened,
        consumers as consumer,
        _endpoint(settings, metrics.registry, consumer.readiness_problems),
    ):
        opened()
        sampler = asyncio.create_task(
            _sample_pathways(
                store,
                metrics,
                PATHWAY_SAMPLE_INTERVAL_S,
                timedelta(days=settings.incomplete_stay_days),
            )
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
            # The last counts, so a final scrape (or the caller's registry) sees them.
            await _sample_pathways_once(
                store, metrics, timedelta(days=settings.incomplete_stay_days)
            )


async def store_summary(settings: Settings) -> StoreSummary:
    async with open_store(settings.store_url) as store:
        return await store.summary()
