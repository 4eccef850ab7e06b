"""What the producer's and the consumer's metrics have in common, declared once.

Each service keeps its metrics in one class of its own (:mod:`producers.metrics`,
:mod:`consumers.metrics`); a series both export is defined here, so that its name, help
text and labels cannot drift apart between them (the alert rules match on all three).
"""

from __future__ import annotations

from enum import StrEnum, unique

from cryptography import x509
from prometheus_client import CollectorRegistry, Gauge

__all__ = ["CertificateExpiry", "CertificateRole"]


@unique
class CertificateRole(StrEnum):
    """The ``certificate`` label of ``kpr_certificate_expiry_timestamp_seconds``."""

    SIGNING = "signing"
    DECRYPTION = "decryption"
    DECRYPTION_PREVIOUS = "decryption_previous"
    TRUST_ROOT = "trust_root"
    TRUST_INTERMEDIATE = "trust_intermediate"


class CertificateExpiry:
    """``kpr_certificate_expiry_timestamp_seconds{certificate=<role>}`` on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "kpr_certificate_expiry_timestamp_seconds",
            "Unix time at which a configured certificate expires.",
            ["certificate"],
            registry=registry,
        )

    def set(self, role: CertificateRole, certificate: x509.Certificate) -> None:
        self.gauge.labels(certificate=role.value).set(certificate.not_valid_after_utc.timestamp())
