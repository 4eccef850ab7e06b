"""Every producer metric in one class, on a registry the caller injects.

Names follow the metrics contract (prefix ``kpr_``, ``_total`` counters, enum labels,
nothing personal). ``published`` counts publishes sent; each then ends in exactly one
of ``confirmed``, ``returned`` (unroutable under ``mandatory``), ``nacked`` or
``unknown`` (no confirm in time, or the connection broke under it).
"""

from __future__ import annotations

from enum import StrEnum, unique

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge

from contracts.errors import ConfirmTimeout, PublishFailed, PublishNacked, Unroutable
from contracts.metrics import CertificateExpiry, CertificateRole

__all__ = ["ProducerMetrics", "ProducerOutcome", "producer_outcome_of"]


@unique
class ProducerOutcome(StrEnum):
    """The ``outcome`` label of ``kpr_producer_messages_total``."""

    PUBLISHED = "published"
    CONFIRMED = "confirmed"
    RETURNED = "returned"
    NACKED = "nacked"
    UNKNOWN = "unknown"


def producer_outcome_of(error: PublishFailed | None) -> ProducerOutcome:
    """The outcome of one finished publish, from the error it raised (``None``: confirmed)."""
    if error is None:
        return ProducerOutcome.CONFIRMED
    if isinstance(error, Unroutable):
        return ProducerOutcome.RETURNED
    if isinstance(error, PublishNacked):
        return ProducerOutcome.NACKED
    if isinstance(error, ConfirmTimeout):
        return ProducerOutcome.UNKNOWN
    return ProducerOutcome.UNKNOWN


class ProducerMetrics:
    """The producer's metrics, registered on ``registry`` (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "kpr_producer_messages",
            "Publishes sent, and how each ended.",
            ["outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "kpr_producer_in_flight",
            "Publishes sent and not yet confirmed, returned or nacked.",
            registry=registry,
        )
        self.certificate_expiry = CertificateExpiry(registry)
        for outcome in ProducerOutcome:
            self.messages.labels(outcome=outcome.value)

    def observe_sent(self) -> None:
        """A publish went out: counted as published and in flight until it ends."""
        self.messages.labels(outcome=ProducerOutcome.PUBLISHED.value).inc()
        self.in_flight.inc()

    def observe_finished(self, error: PublishFailed | None) -> None:
        """A publish that :meth:`observe_sent` counted ended (``error`` ``None``: confirmed)."""
        self.in_flight.dec()
        self.messages.labels(outcome=producer_outcome_of(error).value).inc()

    def set_signing_certificate_expiry(self, certificate: x509.Certificate) -> None:
        self.certificate_expiry.set(CertificateRole.SIGNING, certificate)
