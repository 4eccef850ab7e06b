"""Helpers shared by the message-protection tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from consumers.opener import Opener
from contracts.envelope import Profile, SigningIdentity, _encrypt
from contracts.events import Environment
from contracts.pki import PkiDir
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS
from contracts.trust import SenderAuthorisation

CONTENT = b'{"letter_version":1,"message_id":"m-1","event":{"amount":100}}'


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    def identity(self, chain: Sequence[x509.Certificate] = ()) -> SigningIdentity:
        return SigningIdentity(self.certificate, self.key, tuple(chain))


IssueSigner = Callable[..., Issued]


def envelope_inner(
    inner: bytes, recipient: x509.Certificate, profile: Profile = Profile.NATIONAL
) -> bytes:
    """Encrypt arbitrary inner bytes to ``recipient``: seal's own encryption step."""
    return _encrypt(inner, recipient, profile)


def dev_opener(pki: PkiDir, own_her_id: int) -> Opener:
    """The consumer's open step over the dev PKI, the dev sender granted every unit."""
    return Opener(
        keys=[pki.register.decryption_key],
        trust=pki.trust_store(),
        authorisation=SenderAuthorisation.from_mapping(
            {pki.sender.info.org_number: list(DEFAULT_UNIT_ORG_NUMBERS)}
        ),
        own_her_id=own_her_id,
        environment=Environment.TEST,
    )


def der_length(length: int) -> bytes:
    """A DER length field (short form under 128, else long form)."""
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One DER tag-length-value, for bytes that no builder would make."""
    return bytes([tag]) + der_length(len(content)) + content


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


NOW = datetime.now(UTC)
