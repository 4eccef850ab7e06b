"""Every consumer metric in one class, on a registry the caller injects.

Names follow the metrics contract the alert rules and the dashboard are written against:
prefix ``kpr_``, base units (seconds, unix time), ``_total`` counters, and label values
from fixed enums only. No metric carries an id or anything personal; the one
identifier allowed as a label is the sender's HER-id (one per reporting party).

Counter children for every enum value are created up front, so a rate over a series
that has not happened yet is 0, not absent (alerts on absent series are error-prone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum, unique
from typing import Final

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumers.apprecs import APPREC_STATUS_LABELS, AppRecOutcome
from consumers.processing import Disposition, Outcome
from consumers.store import SenderActivity, StoreSummary
from contracts.errors import Reason
from contracts.metrics import CertificateExpiry, CertificateRole
from contracts.wire import Wire

__all__ = [
    "CRYPTO_FAILURE_CLASS",
    "UNVERIFIED_SENDER",
    "CertificateRole",
    "ConsumerMetrics",
    "ConsumerOutcome",
    "CryptoFailureClass",
    "QueueRole",
]

#: The sender label of a dead letter whose sender no trusted signature established: the
#: unsigned header is not a label value (anyone could mint new series with it).
UNVERIFIED_SENDER: Final = "unverified"


@unique
class ConsumerOutcome(StrEnum):
    """The ``outcome`` label of ``kpr_consumer_messages_total``."""

    COMMITTED = "committed"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    RETRIED = "retried"
    REQUEUED = "requeued"


_OUTCOME_OF: Final[dict[Disposition, ConsumerOutcome]] = {
    Disposition.COMMITTED: ConsumerOutcome.COMMITTED,
    Disposition.DUPLICATE: ConsumerOutcome.DUPLICATE,
    Disposition.DEAD_LETTER: ConsumerOutcome.DEAD_LETTERED,
    Disposition.RETRY: ConsumerOutcome.RETRIED,
}


@unique
class CryptoFailureClass(StrEnum):
    """The ``class`` label of ``kpr_crypto_failures_total``."""

    MALFORMED = "malformed"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    DECRYPTION = "decryption"
    SIGNATURE = "signature"
    TRUST = "trust"
    EXPIRED = "expired"
    REVOKED = "revoked"


# Which rejections are failures of the envelope (CMS, keys, certificates). Too-large is
# refused before any parsing and contract / authorisation failures happen after the
# cryptography succeeded, so they are not crypto failures.
CRYPTO_FAILURE_CLASS: Final[dict[Reason, CryptoFailureClass]] = {
    Reason.MALFORMED: CryptoFailureClass.MALFORMED,
    Reason.UNSUPPORTED_ALGORITHM: CryptoFailureClass.UNSUPPORTED_ALGORITHM,
    Reason.UNDECRYPTABLE: CryptoFailureClass.DECRYPTION,
    Reason.BAD_SIGNATURE: CryptoFailureClass.SIGNATURE,
    Reason.UNTRUSTED_CERTIFICATE: CryptoFailureClass.TRUST,
    Reason.EXPIRED_CERTIFICATE: CryptoFailureClass.EXPIRED,
    Reason.REVOKED_CERTIFICATE: CryptoFailureClass.REVOKED,
}


@unique
class QueueRole(StrEnum):
    """The ``queue`` label of ``kpr_queue_messages``: a role, not a (prefixed) queue name."""

    WORK = "work"
    DEAD_LETTER = "dead_letter"


PROCESSING_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# From the EPJ's registration to our commit: seconds when live, days in a back-fill.
END_TO_END_BUCKETS_S: Final = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
    604800.0,
)

# From the clinical event to our commit: hours when live, years in a back-fill.
CLINICAL_DELAY_BUCKETS_S: Final = (
    3600.0,
    6 * 3600.0,
    86400.0,
    2 * 86400.0,
    7 * 86400.0,
    30 * 86400.0,
    90 * 86400.0,
    365 * 86400.0,
    3 * 365 * 86400.0,
    10 * 365 * 86400.0,
)


class ConsumerMetrics:
    """The consumer's metrics, registered on ``registry`` (use a fresh one per test).

    ``clock`` returns unix time; it is injectable so end-to-end latency is testable.
    Registering two instances on one registry raises ``ValueError`` (duplicate names).
    """

    def __init__(
        self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._last_commit_seen: dict[tuple[str, str], float] = {}
        self.registry = registry
        self.messages = Counter(
            "kpr_consumer_messages",
            "Deliveries handled by the consumer, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "kpr_consumer_dead_letters",
            "Deliveries dead-lettered, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.letters = Counter(
            "kpr_consumer_letters",
            "Events committed or found duplicate, by the letter's wire form (msghead, json): "
            "how far the senders have moved to MsgHead.",
            ["form"],
            registry=registry,
        )
        self.signatures = Counter(
            "kpr_consumer_signatures",
            "Events committed or found duplicate, by what the CMS signature covers "
            "(signed-attributes; content: .NET SignedCms, the signer judged at receipt time).",
            ["form"],
            registry=registry,
        )
        self.wire_deliveries = Counter(
            "kpr_consumer_wire_deliveries",
            "Deliveries by the AMQP form their properties came in (amqp-1.0: packed by the "
            "broker from an AMQP 1.0 sender, as Helsenorge.Messaging's).",
            ["wire"],
            registry=registry,
        )
        self.apprecs = Counter(
            "kpr_consumer_apprecs",
            "AppRecs (KITH application receipts) for decided deliveries, by status (ok, "
            "rejected) and outcome: sent (confirmed), skipped (no encryption certificate "
            "known for the sender), failed.",
            ["status", "outcome"],
            registry=registry,
        )
        self.crypto_failures = Counter(
            "kpr_crypto_failures",
            "Rejections of the CMS envelope (decrypt, verify, trust), by class.",
            ["class"],
            registry=registry,
        )
        self.processing_seconds = Histogram(
            "kpr_consumer_processing_seconds",
            "Delivery received to decision done (ack, dead-letter or retry published).",
            buckets=PROCESSING_BUCKETS_S,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "kpr_end_to_end_seconds",
            "Event registered in the EPJ to committed in the pathway store.",
            buckets=END_TO_END_BUCKETS_S,
            registry=registry,
        )
        self.queue_messages = Gauge(
            "kpr_queue_messages",
            "Messages ready in the broker queue, sampled with a passive declare.",
            ["queue"],
            registry=registry,
        )
        self.last_commit = Gauge(
            "kpr_last_commit_timestamp_seconds",
            "Unix time of the last commit of an event from this sender.",
            ["sender_her_id"],
            registry=registry,
        )
        self.sender_dead_letters = Counter(
            "kpr_sender_dead_letters",
            "Deliveries dead-lettered, by signed sender HER-id (or 'unverified') and reason.",
            ["sender_her_id", "reason"],
            registry=registry,
        )
        self.clinical_delay_seconds = Histogram(
            "kpr_clinical_to_commit_seconds",
            "The clinical event (consultation, admission, discharge) to its commit, by sender.",
            ["sender_her_id"],
            buckets=CLINICAL_DELAY_BUCKETS_S,
            registry=registry,
        )
        self.sender_events = Gauge(
            "kpr_sender_events_stored",
            "Event revisions in the pathway store, by sender HER-id and municipality "
            "(today's number; sampled from the store, so every replica reports the same).",
            ["sender_her_id", "municipality"],
            registry=registry,
        )
        self.sender_last_commit = Gauge(
            "kpr_sender_last_commit_timestamp_seconds",
            "Unix time of the last commit from this sender for this municipality "
            "(sampled from the store, raised on every commit).",
            ["sender_her_id", "municipality"],
            registry=registry,
        )
        self.pathway_stays = Gauge(
            "kpr_pathway_stays",
            "Stays in the pathway store, by state.",
            ["state"],
            registry=registry,
        )
        self.pathway_incomplete_overdue = Gauge(
            "kpr_pathway_incomplete_stays_overdue",
            "Incomplete stays older than the configured age.",
            registry=registry,
        )
        self.pathway_consultations = Gauge(
            "kpr_pathway_consultations", "Consultations in the pathway store.", registry=registry
        )
        self.ready = Gauge(
            "kpr_consumer_ready",
            "1 when connected to broker and store and the consumer is active, else 0.",
            registry=registry,
        )
        self.certificate_expiry = CertificateExpiry(registry)
        for outcome in ConsumerOutcome:
            self.messages.labels(outcome=outcome.value)
        for reason in Reason:
            self.dead_letters.labels(reason=reason.value)
        for status in APPREC_STATUS_LABELS:
            for apprec_outcome in AppRecOutcome:
                self.apprecs.labels(status=status, outcome=apprec_outcome.value)
        for failure_class in CryptoFailureClass:
            self.crypto_failures.labels(failure_class.value)
        for role in QueueRole:
            self.queue_messages.labels(queue=role.value)

    def observe_apprec(self, status: str, outcome: str) -> None:
        """Count one AppRec (labels from :mod:`consumers.apprecs`: fixed values only)."""
        self.apprecs.labels(status=status, outcome=outcome).inc()

    def observe_wire(self, wire: Wire) -> None:
        self.wire_deliveries.labels(wire=wire.value).inc()

    def observe_outcome(self, outcome: Outcome, seconds: float) -> None:
        """Count one decided delivery; ``seconds`` from receipt to decision done."""
        self.messages.labels(outcome=_OUTCOME_OF[outcome.disposition].value).inc()
        self.processing_seconds.observe(max(seconds, 0.0))
        if outcome.disposition is Disposition.DEAD_LETTER:
            reason = outcome.reason or Reason.MALFORMED
            self.dead_letters.labels(reason=reason.value).inc()
            sender = (
                str(outcome.sender_her_id)
                if outcome.sender_verified and outcome.sender_her_id is not None
                else UNVERIFIED_SENDER
            )
            self.sender_dead_letters.labels(sender_her_id=sender, reason=reason.value).inc()
            failure_class = CRYPTO_FAILURE_CLASS.get(reason)
            if failure_class is not None:
                self.crypto_failures.labels(failure_class.value).inc()
        if outcome.letter_form is not None and outcome.acks_after_commit:
            self.letters.labels(form=outcome.letter_form.value).inc()
        if outcome.signature_form is not None and outcome.acks_after_commit:
            self.signatures.labels(form=outcome.signature_form.value).inc()
        if outcome.disposition is Disposition.COMMITTED:
            now = self._clock()
            if outcome.registered_at_epoch_s is not None:
                # A clock skewed ahead in the EPJ must not make a negative observation.
                self.end_to_end_seconds.observe(max(now - outcome.registered_at_epoch_s, 0.0))
            if outcome.sender_her_id is not None:
                sender = str(outcome.sender_her_id)
                self.last_commit.labels(sender_her_id=sender).set(now)
                if outcome.clinical_epoch_s is not None:
                    self.clinical_delay_seconds.labels(sender_her_id=sender).observe(
                        max(now - outcome.clinical_epoch_s, 0.0)
                    )
                if outcome.municipality is not None:
                    self._set_last_commit((sender, outcome.municipality), now)

    def observe_requeued(self) -> None:
        """Count a delivery handed back to the broker because processing failed (our bug)."""
        self.messages.labels(outcome=ConsumerOutcome.REQUEUED.value).inc()

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def set_queue_depth(self, queue: QueueRole, messages: int) -> None:
        self.queue_messages.labels(queue=queue.value).set(messages)

    def set_pathway_counts(self, summary: StoreSummary, *, overdue: int | None = None) -> None:
        """Publish the store's counts; ``overdue`` only when the caller computed it."""
        self.pathway_stays.labels(state="complete").set(summary.stays - summary.stays_incomplete)
        self.pathway_stays.labels(state="incomplete").set(summary.stays_incomplete)
        self.pathway_consultations.set(summary.consultations)
        if overdue is not None:
            self.pathway_incomplete_overdue.set(overdue)

    def set_sender_activity(self, activity: list[SenderActivity]) -> None:
        """Publish the store's per-sender figures; a last commit only moves forward (a
        commit this replica made since the sample was read must not be set back)."""
        for row in activity:
            labels = {"sender_her_id": str(row.sender_her_id), "municipality": row.municipality}
            self.sender_events.labels(**labels).set(row.events)
            key = (labels["sender_her_id"], row.municipality)
            self._set_last_commit(key, row.last_committed_at.timestamp())

    def _set_last_commit(self, key: tuple[str, str], when: float) -> None:
        latest = max(self._last_commit_seen.get(key, 0.0), when)
        self._last_commit_seen[key] = latest
        self.sender_last_commit.labels(sender_her_id=key[0], municipality=key[1]).set(latest)

    def set_certificate_expiry(self, role: CertificateRole, certificate: x509.Certificate) -> None:
        self.certificate_expiry.set(role, certificate)
