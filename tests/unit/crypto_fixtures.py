"""Helpers shared by the message-protection tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts import _asn1
from contracts.envelope import Profile, SigningIdentity, _identifiers

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
    """Encrypt arbitrary inner bytes to ``recipient`` exactly as seal would."""
    issuer, serial, _ = _identifiers(recipient)
    public_key = recipient.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    key = os.urandom(32)
    if profile is Profile.STRICT:
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, inner, None)
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        return _asn1.auth_enveloped_data(
            recipient_issuer_der=issuer,
            recipient_serial=serial,
            encrypted_key=public_key.encrypt(key, oaep),
            nonce=nonce,
            ciphertext=sealed[:-16],
            tag=sealed[-16:],
        )
    iv = os.urandom(16)
    padder = symmetric_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return _asn1.enveloped_data(
        recipient_issuer_der=issuer,
        recipient_serial=serial,
        encrypted_key=public_key.encrypt(key, padding.PKCS1v15()),
        iv=iv,
        ciphertext=encryptor.update(padder.update(inner) + padder.finalize())
        + encryptor.finalize(),
    )


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


NOW = datetime.now(UTC)
