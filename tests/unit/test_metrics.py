"""Consumer and producer metrics: names per the metrics contract, enum labels, no ids."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumers.metrics import (
    CRYPTO_FAILURE_CLASS,
    CertificateRole,
    ConsumerMetrics,
    CryptoFailureClass,
    QueueRole,
)
from consumers.processing import Disposition, Outcome
from consumers.store import SenderActivity, StoreSummary
from contracts.errors import ConfirmTimeout, PublishNacked, Reason, Unroutable
from contracts.pki import PkiDir
from kpr.observability import ObservabilityServer
from producers.metrics import ProducerMetrics, ProducerOutcome

NOW = 1_750_000_000.0
EVENT_ID = "0b6f8c52-6d0f-4a53-9bd5-2f1b9b1f0c11"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"{name}{labels} is not exposed"
    return found


def committed(sender: int = 90001, registered: float = NOW - 2.0) -> Outcome:
    return Outcome(
        Disposition.COMMITTED,
        event_id=EVENT_ID,
        event_type="kad.admission",
        sender_her_id=sender,
        registered_at_epoch_s=registered,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ConsumerMetrics:
    return ConsumerMetrics(registry, clock=lambda: NOW)


def test_every_contract_series_exists_at_zero_before_anything_happens(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """Alerts on rate() need the series to exist: every enum label value is pre-created at 0."""
    for outcome in ("committed", "duplicate", "dead_lettered", "retried", "requeued"):
        assert value(registry, "kpr_consumer_messages_total", outcome=outcome) == 0
    for reason in Reason:
        assert value(registry, "kpr_consumer_dead_letters_total", reason=reason.value) == 0
    for failure_class in CryptoFailureClass:
        assert value(registry, "kpr_crypto_failures_total", **{"class": failure_class.value}) == 0
    for queue in ("work", "dead_letter"):
        assert value(registry, "kpr_queue_messages", queue=queue) == 0
    assert value(registry, "kpr_consumer_ready") == 0


def test_a_commit_counts_its_latencies_and_the_senders_last_commit_time(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """Committed: counter, processing histogram, end-to-end from registered_at, last commit."""
    metrics.observe_outcome(committed(registered=NOW - 2.0), 0.004)

    assert value(registry, "kpr_consumer_messages_total", outcome="committed") == 1
    assert value(registry, "kpr_consumer_processing_seconds_count") == 1
    assert value(registry, "kpr_consumer_processing_seconds_sum") == pytest.approx(0.004)
    assert value(registry, "kpr_end_to_end_seconds_sum") == pytest.approx(2.0)
    assert value(registry, "kpr_end_to_end_seconds_bucket", le="2.5") == 1
    assert value(registry, "kpr_end_to_end_seconds_bucket", le="1.0") == 0
    assert value(registry, "kpr_last_commit_timestamp_seconds", sender_her_id="90001") == NOW


def test_a_duplicate_is_counted_but_not_as_an_end_to_end_commit(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """A duplicate says nothing about latency to the register: no end-to-end observation."""
    metrics.observe_outcome(Outcome(Disposition.DUPLICATE, registered_at_epoch_s=NOW - 5), 0.01)

    assert value(registry, "kpr_consumer_messages_total", outcome="duplicate") == 1
    assert value(registry, "kpr_end_to_end_seconds_count") == 0


def test_an_event_registered_in_the_future_observes_zero_not_a_negative_latency(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """An EPJ clock ahead of ours must not corrupt the histogram's sum."""
    metrics.observe_outcome(committed(registered=NOW + 30.0), 0.01)
    assert value(registry, "kpr_end_to_end_seconds_sum") == 0.0


@pytest.mark.parametrize(
    ("reason", "failure_class"),
    [
        (Reason.UNDECRYPTABLE, "decryption"),
        (Reason.BAD_SIGNATURE, "signature"),
        (Reason.UNTRUSTED_CERTIFICATE, "trust"),
        (Reason.EXPIRED_CERTIFICATE, "expired"),
        (Reason.REVOKED_CERTIFICATE, "revoked"),
        (Reason.UNSUPPORTED_ALGORITHM, "unsupported_algorithm"),
        (Reason.MALFORMED, "malformed"),
    ],
)
def test_a_crypto_rejection_counts_as_dead_letter_and_as_its_crypto_class(
    registry: CollectorRegistry, metrics: ConsumerMetrics, reason: Reason, failure_class: str
) -> None:
    """Each crypto reason lands in exactly one crypto class, and in the dead-letter counts."""
    metrics.observe_outcome(Outcome(Disposition.DEAD_LETTER, reason), 0.002)

    assert value(registry, "kpr_consumer_messages_total", outcome="dead_lettered") == 1
    assert value(registry, "kpr_consumer_dead_letters_total", reason=reason.value) == 1
    assert value(registry, "kpr_crypto_failures_total", **{"class": failure_class}) == 1
    total = sum(
        value(registry, "kpr_crypto_failures_total", **{"class": c.value})
        for c in CryptoFailureClass
    )
    assert total == 1


def test_a_contract_violation_is_a_dead_letter_but_not_a_crypto_failure(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """Rejections after the envelope opened (contract, authorisation) are no crypto failure."""
    for reason in (Reason.INVALID_CONTRACT, Reason.SENDER_NOT_AUTHORISED, Reason.TOO_LARGE):
        metrics.observe_outcome(Outcome(Disposition.DEAD_LETTER, reason), 0.002)
    assert value(registry, "kpr_consumer_dead_letters_total", reason="invalid-contract") == 1
    assert (
        sum(
            value(registry, "kpr_crypto_failures_total", **{"class": c.value})
            for c in CryptoFailureClass
        )
        == 0
    )
    assert set(CRYPTO_FAILURE_CLASS.values()) == set(CryptoFailureClass)


def test_retries_requeues_gauges_and_pathway_counts(
    registry: CollectorRegistry, metrics: ConsumerMetrics, dev_pki: PkiDir
) -> None:
    """The remaining consumer series move when their method is called."""
    metrics.observe_outcome(Outcome(Disposition.RETRY), 0.1)
    metrics.observe_requeued()
    metrics.set_ready(True)
    metrics.set_queue_depth(QueueRole.DEAD_LETTER, 7)
    metrics.set_pathway_counts(
        StoreSummary(events_committed=10, persons=4, stays=5, stays_incomplete=2, consultations=3),
        overdue=1,
    )
    certificate = dev_pki.register.decryption_key.certificate
    metrics.set_certificate_expiry(CertificateRole.DECRYPTION, certificate)

    assert value(registry, "kpr_consumer_messages_total", outcome="retried") == 1
    assert value(registry, "kpr_consumer_messages_total", outcome="requeued") == 1
    assert value(registry, "kpr_consumer_ready") == 1
    assert value(registry, "kpr_queue_messages", queue="dead_letter") == 7
    assert value(registry, "kpr_pathway_stays", state="complete") == 3
    assert value(registry, "kpr_pathway_stays", state="incomplete") == 2
    assert value(registry, "kpr_pathway_incomplete_stays_overdue") == 1
    assert value(registry, "kpr_pathway_consultations") == 3
    assert (
        value(registry, "kpr_certificate_expiry_timestamp_seconds", certificate="decryption")
        == certificate.not_valid_after_utc.timestamp()
    )


def test_the_exposition_carries_no_event_or_message_id(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """Ids are unbounded and linkable: they never appear as a label value."""
    metrics.observe_outcome(committed(), 0.01)
    text = generate_latest(registry).decode()
    assert EVENT_ID not in text
    label_names = set(re.findall(r"[{,](\w+)=", text))
    assert label_names <= {
        "outcome",
        "reason",
        "class",
        "queue",
        "sender_her_id",
        "state",
        "certificate",
        "status",
        "le",
    }


def test_two_consumer_metrics_on_one_registry_are_refused(registry: CollectorRegistry) -> None:
    """The registry is injected; registering the same names twice is a wiring bug, loudly."""
    ConsumerMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ConsumerMetrics(registry)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, ProducerOutcome.CONFIRMED),
        (Unroutable("x"), ProducerOutcome.RETURNED),
        (PublishNacked("x"), ProducerOutcome.NACKED),
        (ConfirmTimeout("x"), ProducerOutcome.UNKNOWN),
    ],
)
def test_each_publish_is_published_then_exactly_one_outcome(
    registry: CollectorRegistry, error: Exception | None, outcome: ProducerOutcome
) -> None:
    """published counts at send; in-flight goes up and back down; one outcome per publish."""
    producer = ProducerMetrics(registry)
    producer.observe_sent()
    assert value(registry, "kpr_producer_in_flight") == 1
    producer.observe_finished(error)  # type: ignore[arg-type]

    assert value(registry, "kpr_producer_in_flight") == 0
    assert value(registry, "kpr_producer_messages_total", outcome="published") == 1
    assert value(registry, "kpr_producer_messages_total", outcome=outcome.value) == 1
    others = [o for o in ProducerOutcome if o not in (outcome, ProducerOutcome.PUBLISHED)]
    assert all(value(registry, "kpr_producer_messages_total", outcome=o.value) == 0 for o in others)


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_the_endpoint_serves_metrics_health_and_readiness(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """/metrics is the registry, /healthz 200 always, /readyz 503 with the reasons, then 200."""
    problems: list[str] = ["broker: not connected"]

    async def readiness() -> list[str]:
        return problems

    metrics.observe_outcome(committed(), 0.01)
    async with ObservabilityServer(registry, readiness, port=0) as server:
        assert server.port is not None
        status, body = await _get(server.port, "/metrics")
        assert status == 200
        assert b'kpr_consumer_messages_total{outcome="committed"} 1.0' in body
        assert (await _get(server.port, "/healthz"))[0] == 200
        status, body = await _get(server.port, "/readyz")
        assert (status, b"broker: not connected" in body) == (503, True)
        problems.clear()
        assert await _get(server.port, "/readyz") == (200, b'{"status":"ready"}')
        assert (await _get(server.port, "/nothing"))[0] == 404


async def test_a_readiness_check_that_hangs_or_raises_is_not_ready(
    registry: CollectorRegistry,
) -> None:
    """A stuck store ping must turn /readyz red, not hang the prober."""

    async def hangs() -> list[str]:
        await asyncio.sleep(30)
        return []

    async def raises() -> list[str]:
        raise OSError("store gone")

    server = ObservabilityServer(registry, hangs, port=0, readiness_timeout_s=0.1)
    assert await server.readiness_problems() == ["readiness check timed out"]
    server = ObservabilityServer(registry, raises, port=0)
    assert await server.readiness_problems() == ["readiness check failed: OSError"]


CONTRACT_NAMES = frozenset(
    {
        "kpr_producer_messages_total",
        "kpr_consumer_messages_total",
        "kpr_consumer_dead_letters_total",
        "kpr_consumer_apprecs_total",
        "kpr_crypto_failures_total",
        "kpr_queue_messages",
        "kpr_last_commit_timestamp_seconds",
        "kpr_pathway_stays",
        "kpr_pathway_incomplete_stays_overdue",
        "kpr_pathway_consultations",
        "kpr_consumer_ready",
        "kpr_certificate_expiry_timestamp_seconds",
        "kpr_producer_in_flight",
        *(
            f"{histogram}{suffix}"
            for histogram in ("kpr_consumer_processing_seconds", "kpr_end_to_end_seconds")
            for suffix in ("_bucket", "_sum", "_count")
        ),
    }
)


def test_the_exported_series_are_exactly_the_metrics_contract(dev_pki: PkiDir) -> None:
    """Producer and consumer together export every contract name and nothing else
    (prometheus_client's own ``_created`` companions aside)."""
    consumer_registry, producer_registry = CollectorRegistry(), CollectorRegistry()
    consumer = ConsumerMetrics(consumer_registry, clock=lambda: NOW)
    producer = ProducerMetrics(producer_registry)
    consumer.observe_outcome(committed(), 0.01)
    consumer.set_certificate_expiry(
        CertificateRole.DECRYPTION, dev_pki.register.decryption_key.certificate
    )
    consumer.set_pathway_counts(StoreSummary(1, 1, 1, 0, 0))
    producer.set_signing_certificate_expiry(dev_pki.sender.signing_identity.certificate)
    names = {
        sample.name
        for registry in (consumer_registry, producer_registry)
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
    assert names == CONTRACT_NAMES


def test_timeliness_is_labelled_by_signed_sender_and_municipality_only(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """A commit sets the per-municipality last commit and observes the clinical delay; a
    dead letter counts under its sender only when a signature established the sender,
    else under 'unverified' (the unsigned header must not mint series)."""
    outcome = Outcome(
        Disposition.COMMITTED,
        event_id=EVENT_ID,
        event_type="hst.consultation",
        sender_her_id=90001,
        registered_at_epoch_s=NOW - 60,
        sender_verified=True,
        municipality="1103",
        clinical_epoch_s=NOW - 3 * 86400,
    )
    metrics.observe_outcome(outcome, 0.01)
    labels = {"sender_her_id": "90001", "municipality": "1103"}
    assert value(registry, "kpr_sender_last_commit_timestamp_seconds", **labels) == NOW
    assert value(registry, "kpr_clinical_to_commit_seconds_sum", sender_her_id="90001") == (
        3 * 86400
    )
    assert (
        value(
            registry, "kpr_clinical_to_commit_seconds_bucket", sender_her_id="90001", le="86400.0"
        )
        == 0
    )
    forged = Outcome(Disposition.DEAD_LETTER, Reason.UNDECRYPTABLE, sender_her_id=66666)
    signed = Outcome(
        Disposition.DEAD_LETTER,
        Reason.SENDER_NOT_AUTHORISED,
        sender_her_id=90001,
        sender_verified=True,
    )
    metrics.observe_outcome(forged, 0.01)
    metrics.observe_outcome(signed, 0.01)
    dead = "kpr_sender_dead_letters_total"
    assert value(registry, dead, sender_her_id="unverified", reason="undecryptable") == 1
    assert value(registry, dead, sender_her_id="90001", reason="sender-not-authorised") == 1
    assert "66666" not in generate_latest(registry).decode()


def test_sender_activity_from_the_store_never_sets_a_last_commit_back(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """The sampled store figures are published; a sample read before this replica's own
    latest commit leaves that commit's time in place."""
    metrics.observe_outcome(
        Outcome(
            Disposition.COMMITTED,
            sender_her_id=90001,
            sender_verified=True,
            municipality="1103",
        ),
        0.01,
    )
    earlier = datetime.fromtimestamp(NOW - 600, UTC)
    metrics.set_sender_activity(
        [SenderActivity(90001, "1103", 41, earlier), SenderActivity(90002, "4601", 7, earlier)]
    )
    last = "kpr_sender_last_commit_timestamp_seconds"
    assert value(registry, last, sender_her_id="90001", municipality="1103") == NOW
    assert value(registry, last, sender_her_id="90002", municipality="4601") == NOW - 600
    stored = "kpr_sender_events_stored"
    assert value(registry, stored, sender_her_id="90001", municipality="1103") == 41
    assert value(registry, stored, sender_her_id="90002", municipality="4601") == 7


def test_apprecs_are_counted_by_status_and_outcome_from_zero(
    registry: CollectorRegistry, metrics: ConsumerMetrics
) -> None:
    """Every status x outcome series exists before the first AppRec (rates start at 0)."""
    for status in ("ok", "rejected"):
        for outcome in ("sent", "skipped", "failed"):
            labels = {"status": status, "outcome": outcome}
            assert value(registry, "kpr_consumer_apprecs_total", **labels) == 0
    metrics.observe_apprec("rejected", "skipped")
    assert value(registry, "kpr_consumer_apprecs_total", status="rejected", outcome="skipped") == 1
