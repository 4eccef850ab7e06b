"""Test PKIs for the message-protection tests: real keys, real X.509, generated once.

RSA key generation costs tens of milliseconds per key, so every PKI here is
session-scoped and shared; tests that need a special certificate issue it from
:func:`issuing_ca` (cheap: one signature) with a pre-generated key where they can.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from crypto_fixtures import Issued, IssueSigner
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts.pki import (
    PARTIES,
    SIGNING,
    DevCa,
    KeyUsageProfile,
    PkiDir,
    load_certificate,
    load_private_key,
    new_rsa_key,
)
from contracts.trust import TrustStore


@pytest.fixture(scope="session")
def issuing_ca(dev_pki: PkiDir) -> DevCa:
    return DevCa(
        load_certificate(dev_pki.directory / "issuing-ca.pem"),
        load_private_key(dev_pki.directory / "issuing-ca.key"),
    )


@pytest.fixture(scope="session")
def root_ca(dev_pki: PkiDir) -> DevCa:
    return DevCa(
        load_certificate(dev_pki.directory / "root-ca.pem"),
        load_private_key(dev_pki.directory / "root-ca.key"),
    )


@pytest.fixture(scope="session")
def spare_keys() -> list[rsa.RSAPrivateKey]:
    """Pre-generated 2048-bit keys for certificates issued inside tests."""
    return [new_rsa_key() for _ in range(4)]


@pytest.fixture
def trust(dev_pki: PkiDir) -> TrustStore:
    return dev_pki.trust_store()


@pytest.fixture(scope="session")
def issue_signer(issuing_ca: DevCa, spare_keys: list[rsa.RSAPrivateKey]) -> IssueSigner:
    """Issue a sender signing certificate from the dev issuing CA, with options."""

    def issue(
        *,
        ca: DevCa | None = None,
        usage: KeyUsageProfile = SIGNING,
        key: rsa.RSAPrivateKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Issued:
        certificate, private_key = (ca or issuing_ca).issue_party(
            PARTIES["sender"],
            usage,
            key=key or spare_keys[0],
            not_before=not_before,
            not_after=not_after,
        )
        return Issued(certificate, private_key)

    return issue


@pytest.fixture(scope="session")
def other_ca(spare_keys: list[rsa.RSAPrivateKey]) -> DevCa:
    """A root CA nobody configured."""
    return DevCa.create_root("Other Root CA", key=spare_keys[1])
