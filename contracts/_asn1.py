"""DER building for the messages we send, by hand, for speed.

asn1crypto's object model costs many times an RSA signature to build a SignedData with
embedded certificates, and sealing runs once per message. The structures we emit are
few and fixed, so they are concatenated here from tag-length-value pieces, with the
certificates and issuer names copied verbatim from their DER. Parsing what others
send stays with asn1crypto (:mod:`contracts._cms`); the tests check that asn1crypto
and OpenSSL read what this module writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = [
    "auth_enveloped_data",
    "enveloped_data",
    "signed_attributes",
    "signed_data",
]

_SEQUENCE = 0x30
_SET = 0x31
_OCTET_STRING = 0x04
_INTEGER = 0x02
_OID = 0x06
_NULL = b"\x05\x00"
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_CONTEXT_0 = 0xA0  # [0] constructed (EXPLICIT, or IMPLICIT of a constructed type)
_CONTEXT_1 = 0xA1
_CONTEXT_0_PRIMITIVE = 0x80  # [0] IMPLICIT OCTET STRING


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def tlv(tag: int, *parts: bytes) -> bytes:
    content = b"".join(parts)
    return bytes([tag]) + _length(len(content)) + content


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(_OID, bytes(body))


_DATA = oid("1.2.840.113549.1.7.1")
_SIGNED_DATA = oid("1.2.840.113549.1.7.2")
_ENVELOPED_DATA = oid("1.2.840.113549.1.7.3")
_AUTH_ENVELOPED_DATA = oid("1.2.840.113549.1.9.16.1.23")
_CONTENT_TYPE_ATTR = oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST_ATTR = oid("1.2.840.113549.1.9.4")
_SIGNING_TIME_ATTR = oid("1.2.840.113549.1.9.5")
_SHA256 = tlv(_SEQUENCE, oid("2.16.840.1.101.3.4.2.1"), _NULL)
_RSA_ENCRYPTION = tlv(_SEQUENCE, oid("1.2.840.113549.1.1.1"), _NULL)
RSAES_OAEP_SHA256 = tlv(
    _SEQUENCE,
    oid("1.2.840.113549.1.1.7"),
    tlv(
        _SEQUENCE,
        tlv(_CONTEXT_0, _SHA256),
        tlv(_CONTEXT_1, tlv(_SEQUENCE, oid("1.2.840.113549.1.1.8"), _SHA256)),
    ),
)
_AES256_CBC = oid("2.16.840.1.101.3.4.1.42")
_AES256_GCM = oid("2.16.840.1.101.3.4.1.46")


def _time(moment: datetime) -> bytes:
    """RFC 5652 §11.3: UTCTime for 1950-2049, GeneralizedTime otherwise."""
    moment = moment.astimezone(UTC)
    if 1950 <= moment.year < 2050:
        return tlv(_UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(_GENERALIZED_TIME, moment.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def signed_attributes(digest: bytes, signing_time: datetime) -> bytes:
    """DER SET of content-type id-data, signing-time and message-digest (what is signed)."""
    attributes = [
        tlv(_SEQUENCE, _CONTENT_TYPE_ATTR, tlv(_SET, _DATA)),
        tlv(_SEQUENCE, _SIGNING_TIME_ATTR, tlv(_SET, _time(signing_time))),
        tlv(_SEQUENCE, _MESSAGE_DIGEST_ATTR, tlv(_SET, tlv(_OCTET_STRING, digest))),
    ]
    return tlv(_SET, *sorted(attributes))  # DER orders SET OF by encoding


def _issuer_and_serial(issuer_der: bytes, serial: int) -> bytes:
    return tlv(_SEQUENCE, issuer_der, integer(serial))


def signed_data(
    content: bytes,
    *,
    attributes_der: bytes,
    signature: bytes,
    signer_issuer_der: bytes,
    signer_serial: int,
    certificates_der: Sequence[bytes],
) -> bytes:
    """ContentInfo(SignedData v1): SHA-256, rsaEncryption, signer by issuerAndSerialNumber."""
    signer_info = tlv(
        _SEQUENCE,
        integer(1),
        _issuer_and_serial(signer_issuer_der, signer_serial),
        _SHA256,
        bytes([_CONTEXT_0]) + attributes_der[1:],  # [0] IMPLICIT SET OF Attribute
        _RSA_ENCRYPTION,
        tlv(_OCTET_STRING, signature),
    )
    body = tlv(
        _SEQUENCE,
        integer(1),
        tlv(_SET, _SHA256),
        tlv(_SEQUENCE, _DATA, tlv(_CONTEXT_0, tlv(_OCTET_STRING, content))),
        tlv(_CONTEXT_0, *sorted(certificates_der)),
        tlv(_SET, signer_info),
    )
    return tlv(_SEQUENCE, _SIGNED_DATA, tlv(_CONTEXT_0, body))


def _key_transport(
    algorithm: bytes, recipient_issuer_der: bytes, recipient_serial: int, encrypted_key: bytes
) -> bytes:
    return tlv(
        _SEQUENCE,
        integer(0),
        _issuer_and_serial(recipient_issuer_der, recipient_serial),
        algorithm,
        tlv(_OCTET_STRING, encrypted_key),
    )


def enveloped_data(
    *,
    recipient_issuer_der: bytes,
    recipient_serial: int,
    encrypted_key: bytes,
    iv: bytes,
    ciphertext: bytes,
) -> bytes:
    """ContentInfo(EnvelopedData v0): AES-256-CBC, RSA PKCS#1 v1.5 key transport."""
    body = tlv(
        _SEQUENCE,
        integer(0),
        tlv(
            _SET,
            _key_transport(_RSA_ENCRYPTION, recipient_issuer_der, recipient_serial, encrypted_key),
        ),
        tlv(
            _SEQUENCE,
            _DATA,
            tlv(_SEQUENCE, _AES256_CBC, tlv(_OCTET_STRING, iv)),
            tlv(_CONTEXT_0_PRIMITIVE, ciphertext),
        ),
    )
    return tlv(_SEQUENCE, _ENVELOPED_DATA, tlv(_CONTEXT_0, body))


def auth_enveloped_data(
    *,
    recipient_issuer_der: bytes,
    recipient_serial: int,
    encrypted_key: bytes,
    nonce: bytes,
    ciphertext: bytes,
    tag: bytes,
) -> bytes:
    """ContentInfo(AuthEnvelopedData v0, RFC 5083): AES-256-GCM, RSA-OAEP-SHA256."""
    gcm_parameters = tlv(_SEQUENCE, tlv(_OCTET_STRING, nonce), integer(len(tag)))
    body = tlv(
        _SEQUENCE,
        integer(0),
        tlv(
            _SET,
            _key_transport(
                RSAES_OAEP_SHA256, recipient_issuer_der, recipient_serial, encrypted_key
            ),
        ),
        tlv(
            _SEQUENCE,
            _DATA,
            tlv(_SEQUENCE, _AES256_GCM, gcm_parameters),
            tlv(_CONTEXT_0_PRIMITIVE, ciphertext),
        ),
        tlv(_OCTET_STRING, tag),
    )
    return tlv(_SEQUENCE, _AUTH_ENVELOPED_DATA, tlv(_CONTEXT_0, body))
