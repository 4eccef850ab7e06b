"""Reading CMS structure; no cryptography here (building: :mod:`._asn1`).

``parse_*`` read untrusted DER into plain frozen dataclasses in one go, so that
lazy parsing cannot surface an error later, somewhere else: every parse error of any
kind becomes :class:`MalformedMessage` inside these functions. Which algorithms are
acceptable is decided by :mod:`contracts.envelope`, not here.

Two readers, one answer. The fast one (``_fast_*`` below, over :mod:`contracts._der`)
reads exactly the shapes that we and OpenSSL emit: definite-length DER, whitelisted
algorithm identifiers byte for byte, every child filling its parent. It costs a few
microseconds where asn1crypto's object model costs a large fraction of an RSA
operation. Anything it does not recognise, including every malformed or unusual input,
goes to the asn1crypto reader (``*_asn1crypto``), which decides (and rejects) exactly
as before. The fast reader only accepts inputs on which the asn1crypto reader returns
the same result (``tests/unit/test_der.py`` checks this, also on mutated messages).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import cms, core, parser
from asn1crypto import x509 as asn1_x509

from contracts import _asn1, _der
from contracts.errors import MalformedMessage

__all__ = [
    "KeyTransport",
    "ParsedEnvelope",
    "ParsedSigned",
    "asn1_certificate",
    "names_equal",
    "parse_envelope",
    "parse_envelope_asn1crypto",
    "parse_signed",
    "parse_signed_asn1crypto",
]

# Everything asn1crypto (and the stdlib underneath) raises on bad input.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    UnicodeError,
)


class GcmParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 GCMParameters (asn1crypto has the OIDs but not this structure)."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


@functools.lru_cache(maxsize=1024)
def asn1_certificate(der: bytes) -> asn1_x509.Certificate:
    """A certificate as asn1crypto object, cached: senders embed the same few every time."""
    return asn1_x509.Certificate.load(der)


def names_equal(first_der: bytes, second_der: bytes) -> bool:
    """Compare two DER Names, byte-exact first, then with X.500 normalisation."""
    if first_der == second_der:
        return True
    try:
        return bool(asn1_x509.Name.load(first_der) == asn1_x509.Name.load(second_der))
    except _PARSE_ERRORS:
        return False


# --- parsing -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyTransport:
    """One key-transport recipient: who it is for and how the key is wrapped."""

    issuer_der: bytes | None
    serial: int | None
    subject_key_id: bytes | None
    algorithm: str
    oaep_hash: str | None
    oaep_mgf_hash: str | None
    oaep_label: bytes | None
    encrypted_key: bytes


@dataclass(frozen=True)
class ParsedEnvelope:
    authenticated: bool
    recipients: tuple[KeyTransport, ...]
    content_type: str
    content_algorithm: str
    iv: bytes
    icv_length: int
    ciphertext: bytes
    mac: bytes
    aad: bytes


@dataclass(frozen=True)
class ParsedSigned:
    content_type: str
    content: bytes | None
    certificates: tuple[bytes, ...]
    signer_issuer_der: bytes | None
    signer_serial: int | None
    signer_key_id: bytes | None
    digest_algorithm: str
    signature_algorithm: str
    pss_hash: str | None
    pss_mgf_hash: str | None
    pss_salt_length: int | None
    signed_attrs_der: bytes | None
    attr_content_type: str | None
    attr_message_digest: bytes | None
    attr_signing_time: datetime | None
    signature: bytes


def _load_content_info(der: bytes) -> cms.ContentInfo:
    # strict=True: trailing bytes after the outer structure are an error too.
    return cms.ContentInfo.load(der, strict=True)


def parse_envelope(der: bytes) -> ParsedEnvelope:
    """Read EnvelopedData or AuthEnvelopedData; any structural problem is MalformedMessage."""
    fast = _fast_envelope(der)
    if fast is not None:
        return fast
    return parse_envelope_asn1crypto(der)


def parse_envelope_asn1crypto(der: bytes) -> ParsedEnvelope:
    """:func:`parse_envelope` through asn1crypto only (the general, slower reader)."""
    try:
        info = _load_content_info(der)
        kind = info["content_type"].native
        if kind not in ("enveloped_data", "authenticated_enveloped_data"):
            raise MalformedMessage("the message is not CMS EnvelopedData or AuthEnvelopedData")
        body = info["content"]
        authenticated = kind == "authenticated_enveloped_data"
        encrypted = body[
            "auth_encrypted_content_info" if authenticated else "encrypted_content_info"
        ]
        algorithm = encrypted["content_encryption_algorithm"]
        algorithm_name = str(algorithm["algorithm"].native)
        iv, icv_length = b"", 0
        if algorithm_name.endswith("_gcm"):
            params = GcmParameters.load(algorithm["parameters"].dump(), strict=True)
            iv, icv_length = bytes(params["aes_nonce"].native), int(params["aes_icvlen"].native)
        elif algorithm_name.endswith("_cbc"):
            iv = bytes(algorithm["parameters"].native)
        ciphertext = encrypted["encrypted_content"].native
        if not isinstance(ciphertext, bytes):
            raise MalformedMessage("the encrypted content is missing")
        aad = b""
        mac = b""
        if authenticated:
            mac = bytes(body["mac"].native)
            auth_attrs = body["auth_attrs"]
            if not isinstance(auth_attrs, core.Void):
                # RFC 5083 §2.2: the AAD is the DER of authAttrs with the SET OF tag.
                aad = b"\x31" + auth_attrs.dump()[1:]
        recipients = tuple(
            _key_transport(recipient.chosen)
            for recipient in body["recipient_infos"]
            if recipient.name == "ktri"
        )
        return ParsedEnvelope(
            authenticated=authenticated,
            recipients=recipients,
            content_type=str(encrypted["content_type"].native),
            content_algorithm=algorithm_name,
            iv=iv,
            icv_length=icv_length,
            ciphertext=ciphertext,
            mac=mac,
            aad=aad,
        )
    except _PARSE_ERRORS:
        raise MalformedMessage("the message is not well-formed CMS") from None


def _identifier(choice: Any) -> tuple[bytes | None, int | None, bytes | None]:
    """A recipient or signer identifier: (issuer DER, serial) or a subject key identifier."""
    if choice.name == "issuer_and_serial_number":
        return (
            bytes(choice.chosen["issuer"].dump()),
            int(choice.chosen["serial_number"].native),
            None,
        )
    return None, None, bytes(choice.chosen.native)


def _key_transport(ktri: cms.KeyTransRecipientInfo) -> KeyTransport:
    issuer_der, serial, key_id = _identifier(ktri["rid"])
    algorithm = ktri["key_encryption_algorithm"]
    name = str(algorithm["algorithm"].native)
    oaep_hash = oaep_mgf_hash = None
    label = None
    if name == "rsaes_oaep":
        params = algorithm["parameters"]
        oaep_hash = str(params["hash_algorithm"]["algorithm"].native)
        mgf = params["mask_gen_algorithm"]
        if mgf["algorithm"].native == "mgf1":
            oaep_mgf_hash = str(mgf["parameters"]["algorithm"].native)
        source = params["p_source_algorithm"]
        label = bytes(source["parameters"].native or b"")
    return KeyTransport(
        issuer_der=issuer_der,
        serial=serial,
        subject_key_id=key_id,
        algorithm=name,
        oaep_hash=oaep_hash,
        oaep_mgf_hash=oaep_mgf_hash,
        oaep_label=label,
        encrypted_key=bytes(ktri["encrypted_key"].native),
    )


def _certificates(field: core.Asn1Value) -> tuple[bytes, ...]:
    """The DER of each X.509 certificate in SignedData.certificates.

    Split at the TLV level rather than through asn1crypto's CertificateChoices, which
    would build every certificate's object tree on every message; the certificates are
    parsed (strictly) by cryptography afterwards, and cached by their bytes.
    """
    if isinstance(field, core.Void):
        return ()
    contents = bytes(field.contents)
    found: list[bytes] = []
    position = 0
    while position < len(contents):
        size = parser.peek(contents[position:])
        if size <= 0:
            raise ValueError("empty certificate choice")
        element = contents[position : position + size]
        if element[0] == 0x30:  # a Certificate; other CertificateChoices are ignored
            found.append(element)
        position += size
    return tuple(found)


def parse_signed(der: bytes) -> ParsedSigned:
    """Read ContentInfo(SignedData) with exactly one signer; structure problems raise
    MalformedMessage."""
    fast = _fast_signed(der)
    if fast is not None:
        return fast
    return parse_signed_asn1crypto(der)


def parse_signed_asn1crypto(der: bytes) -> ParsedSigned:
    """:func:`parse_signed` through asn1crypto only (the general, slower reader)."""
    try:
        info = _load_content_info(der)
        if info["content_type"].native != "signed_data":
            raise MalformedMessage("the decrypted content is not CMS SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        content_field = encap["content"]
        content = None if isinstance(content_field, core.Void) else content_field.native
        if content is not None and not isinstance(content, bytes):
            content = bytes(content_field.contents)
        certificates = _certificates(signed["certificates"])
        signer_infos = signed["signer_infos"]
        if len(signer_infos) != 1:
            raise MalformedMessage("the signed data must have exactly one signer")
        signer = signer_infos[0]
        issuer_der, serial, key_id = _identifier(signer["sid"])
        signature_algorithm = signer["signature_algorithm"]
        signature_name = str(signature_algorithm["algorithm"].native)
        pss_hash = pss_mgf_hash = None
        pss_salt = None
        if signature_name == "rsassa_pss":
            params = signature_algorithm["parameters"]
            pss_hash = str(params["hash_algorithm"]["algorithm"].native)
            pss_mgf_hash = str(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
            pss_salt = int(params["salt_length"].native)
        attrs = signer["signed_attrs"]
        attrs_der = None
        content_type_attr = digest_attr = time_attr = None
        if not isinstance(attrs, core.Void):
            attrs_der = b"\x31" + bytes(attrs.dump()[1:])
            seen: set[str] = set()
            for attribute in attrs:
                name = str(attribute["type"].native)
                if name in seen:
                    raise MalformedMessage("a signed attribute occurs twice")
                seen.add(name)
                values = attribute["values"]
                if name in ("content_type", "message_digest", "signing_time"):
                    if len(values) != 1:
                        raise MalformedMessage("a signed attribute must have one value")
                    value = values[0].native
                    if name == "content_type":
                        content_type_attr = str(value)
                    elif name == "message_digest":
                        digest_attr = bytes(value)
                    elif isinstance(value, datetime):
                        time_attr = value
                    else:
                        raise MalformedMessage("the signing time is not a time")
        return ParsedSigned(
            content_type=str(encap["content_type"].native),
            content=content,
            certificates=certificates,
            signer_issuer_der=issuer_der,
            signer_serial=serial,
            signer_key_id=key_id,
            digest_algorithm=str(signer["digest_algorithm"]["algorithm"].native),
            signature_algorithm=signature_name,
            pss_hash=pss_hash,
            pss_mgf_hash=pss_mgf_hash,
            pss_salt_length=pss_salt,
            signed_attrs_der=attrs_der,
            attr_content_type=content_type_attr,
            attr_message_digest=digest_attr,
            attr_signing_time=time_attr,
            signature=bytes(signer["signature"].native),
        )
    except _PARSE_ERRORS:
        raise MalformedMessage("the signed data is not well-formed CMS") from None


# --- the fast reader: exactly the shapes we accept, anything else -> None --------------

_CONTENT_TYPE_NAMES = {
    _asn1.oid("1.2.840.113549.1.7.1")[2:]: "data",
    _asn1.oid("1.2.840.113549.1.7.2")[2:]: "signed_data",
}
_DATA_OID = _asn1.oid("1.2.840.113549.1.7.1")
_SIGNED_DATA_OID = _asn1.oid("1.2.840.113549.1.7.2")[2:]
_ENVELOPED_DATA_OID = _asn1.oid("1.2.840.113549.1.7.3")[2:]
_AUTH_ENVELOPED_DATA_OID = _asn1.oid("1.2.840.113549.1.9.16.1.23")[2:]
_AES256_CBC_OID = _asn1.oid("2.16.840.1.101.3.4.1.42")[2:]
_AES256_GCM_OID = _asn1.oid("2.16.840.1.101.3.4.1.46")[2:]
_CONTENT_TYPE_ATTR = _asn1.oid("1.2.840.113549.1.9.3")[2:]
_MESSAGE_DIGEST_ATTR = _asn1.oid("1.2.840.113549.1.9.4")[2:]
_SIGNING_TIME_ATTR = _asn1.oid("1.2.840.113549.1.9.5")[2:]


def _algorithm_identifiers(names: dict[str, str]) -> dict[bytes, str]:
    """AlgorithmIdentifier DER (with NULL parameters, and without) -> asn1crypto's name."""
    table: dict[bytes, str] = {}
    for dotted, name in names.items():
        table[_asn1.tlv(0x30, _asn1.oid(dotted), b"\x05\x00")] = name
        table[_asn1.tlv(0x30, _asn1.oid(dotted))] = name
    return table


_DIGEST_ALGORITHMS = _algorithm_identifiers(
    {
        "2.16.840.1.101.3.4.2.1": "sha256",
        "2.16.840.1.101.3.4.2.2": "sha384",
        "2.16.840.1.101.3.4.2.3": "sha512",
    }
)
_SIGNATURE_ALGORITHMS = _algorithm_identifiers(
    {
        "1.2.840.113549.1.1.1": "rsassa_pkcs1v15",
        "1.2.840.113549.1.1.11": "sha256_rsa",
        "1.2.840.113549.1.1.12": "sha384_rsa",
        "1.2.840.113549.1.1.13": "sha512_rsa",
    }
)
# name, OAEP hash, OAEP MGF1 hash, OAEP label
_KEY_TRANSPORTS: dict[bytes, tuple[str, str | None, str | None, bytes | None]] = {
    **{
        identifier: ("rsaes_pkcs1v15", None, None, None)
        for identifier in _algorithm_identifiers({"1.2.840.113549.1.1.1": "rsa"})
    },
    _asn1.RSAES_OAEP_SHA256: ("rsaes_oaep", "sha256", "sha256", b""),
}


def _fast_envelope(der: bytes) -> ParsedEnvelope | None:
    try:
        return _read_envelope(der)
    except (_der.NotRecognised, *_PARSE_ERRORS):
        return None


def _read_envelope(der: bytes) -> ParsedEnvelope:
    info = _der.whole(der, _der.SEQUENCE)
    kind = info.value(_der.OID)
    if kind not in (_ENVELOPED_DATA_OID, _AUTH_ENVELOPED_DATA_OID):
        raise _der.NotRecognised
    authenticated = kind == _AUTH_ENVELOPED_DATA_OID
    explicit = info.enter(_der.CONTEXT_0)
    info.done()
    body = explicit.enter(_der.SEQUENCE)
    explicit.done()
    body.value(_der.INTEGER)  # version: not interpreted (as before)
    recipient_set = body.enter(_der.SET)  # originatorInfo [0] is not accepted here
    recipients: list[KeyTransport] = []
    while recipient_set.peek() is not None:
        recipients.append(_read_key_transport(recipient_set.enter(_der.SEQUENCE)))
    encrypted = body.enter(_der.SEQUENCE)
    content_type = _CONTENT_TYPE_NAMES.get(encrypted.value(_der.OID))
    if content_type is None:
        raise _der.NotRecognised
    algorithm = encrypted.enter(_der.SEQUENCE)
    algorithm_oid = algorithm.value(_der.OID)
    icv_length = 0
    if authenticated and algorithm_oid == _AES256_GCM_OID:
        algorithm_name = "aes256_gcm"
        parameters = algorithm.enter(_der.SEQUENCE)
        iv = parameters.value(_der.OCTET_STRING)
        icv_length = 12
        if parameters.peek() is not None:
            icv_length = _der.read_integer(parameters.value(_der.INTEGER))
        parameters.done()
    elif not authenticated and algorithm_oid == _AES256_CBC_OID:
        algorithm_name = "aes256_cbc"
        iv = algorithm.value(_der.OCTET_STRING)
    else:
        raise _der.NotRecognised
    algorithm.done()
    ciphertext = encrypted.value(_der.CONTEXT_0_PRIMITIVE)
    encrypted.done()
    mac = body.value(_der.OCTET_STRING) if authenticated else b""  # authAttrs [1]: not here
    body.done()
    return ParsedEnvelope(
        authenticated=authenticated,
        recipients=tuple(recipients),
        content_type=content_type,
        content_algorithm=algorithm_name,
        iv=iv,
        icv_length=icv_length,
        ciphertext=ciphertext,
        mac=mac,
        aad=b"",
    )


def _read_identifier(reader: _der.Reader) -> tuple[bytes | None, int | None, bytes | None]:
    """The fast-path twin of :func:`_identifier`: issuerAndSerialNumber or [0] key id."""
    if reader.peek() == _der.SEQUENCE:
        issuer_and_serial = reader.enter(_der.SEQUENCE)
        issuer_der = issuer_and_serial.element(_der.SEQUENCE)
        serial = _der.read_integer(issuer_and_serial.value(_der.INTEGER))
        issuer_and_serial.done()
        return issuer_der, serial, None
    return None, None, reader.value(_der.CONTEXT_0_PRIMITIVE)


def _read_key_transport(ktri: _der.Reader) -> KeyTransport:
    ktri.value(_der.INTEGER)
    issuer_der, serial, key_id = _read_identifier(ktri)
    transport = _KEY_TRANSPORTS.get(ktri.element(_der.SEQUENCE))
    if transport is None:
        raise _der.NotRecognised
    encrypted_key = ktri.value(_der.OCTET_STRING)
    ktri.done()
    name, oaep_hash, oaep_mgf_hash, label = transport
    return KeyTransport(
        issuer_der=issuer_der,
        serial=serial,
        subject_key_id=key_id,
        algorithm=name,
        oaep_hash=oaep_hash,
        oaep_mgf_hash=oaep_mgf_hash,
        oaep_label=label,
        encrypted_key=encrypted_key,
    )


def _fast_signed(der: bytes) -> ParsedSigned | None:
    try:
        return _read_signed(der)
    except (_der.NotRecognised, *_PARSE_ERRORS):
        return None


def _read_signed(der: bytes) -> ParsedSigned:
    info = _der.whole(der, _der.SEQUENCE)
    if info.value(_der.OID) != _SIGNED_DATA_OID:
        raise _der.NotRecognised
    explicit = info.enter(_der.CONTEXT_0)
    info.done()
    signed = explicit.enter(_der.SEQUENCE)
    explicit.done()
    signed.value(_der.INTEGER)
    digest_set = signed.enter(_der.SET)  # not interpreted (as before): the signer's counts
    while digest_set.peek() is not None:
        digest_set.any_element()
    encapsulated = signed.enter(_der.SEQUENCE)
    if encapsulated.element(_der.OID) != _DATA_OID:
        raise _der.NotRecognised
    content = None
    if encapsulated.peek() is not None:
        wrapper = encapsulated.enter(_der.CONTEXT_0)
        content = wrapper.value(_der.OCTET_STRING)  # a constructed (BER) string: not here
        wrapper.done()
    encapsulated.done()
    certificates: list[bytes] = []
    if signed.peek() == _der.CONTEXT_0:
        choices = signed.enter(_der.CONTEXT_0)
        while choices.peek() is not None:
            tag, element = choices.any_element()
            if tag == _der.SEQUENCE:  # a Certificate; other CertificateChoices are ignored
                certificates.append(element)
    signer_set = signed.enter(_der.SET)  # CRLs [1]: not here
    signer = signer_set.enter(_der.SEQUENCE)  # more than one signer: not here
    signer_set.done()
    signed.done()
    signer.value(_der.INTEGER)
    issuer_der, serial, key_id = _read_identifier(signer)
    digest_algorithm = _DIGEST_ALGORITHMS.get(signer.element(_der.SEQUENCE))
    if digest_algorithm is None:
        raise _der.NotRecognised
    attrs_der = None
    content_type_attr = digest_attr = time_attr = None
    if signer.peek() == _der.CONTEXT_0:
        attrs_der = b"\x31" + signer.element(_der.CONTEXT_0)[1:]
        content_type_attr, digest_attr, time_attr = _read_signed_attributes(attrs_der)
    signature_algorithm = _SIGNATURE_ALGORITHMS.get(signer.element(_der.SEQUENCE))
    if signature_algorithm is None:
        raise _der.NotRecognised
    signature = signer.value(_der.OCTET_STRING)
    signer.done()  # unsigned attributes [1]: not here
    return ParsedSigned(
        content_type="data",
        content=content,
        certificates=tuple(certificates),
        signer_issuer_der=issuer_der,
        signer_serial=serial,
        signer_key_id=key_id,
        digest_algorithm=digest_algorithm,
        signature_algorithm=signature_algorithm,
        pss_hash=None,
        pss_mgf_hash=None,
        pss_salt_length=None,
        signed_attrs_der=attrs_der,
        attr_content_type=content_type_attr,
        attr_message_digest=digest_attr,
        attr_signing_time=time_attr,
        signature=signature,
    )


def _read_signed_attributes(
    attrs_der: bytes,
) -> tuple[str | None, bytes | None, datetime | None]:
    """content-type, message-digest and signing-time; any other attribute: not here."""
    content_type = digest = signing_time = None
    seen: set[bytes] = set()
    attributes = _der.whole(attrs_der, _der.SET)
    while attributes.peek() is not None:
        attribute = attributes.enter(_der.SEQUENCE)
        kind = attribute.value(_der.OID)
        if kind in seen:
            raise _der.NotRecognised
        seen.add(kind)
        values = attribute.enter(_der.SET)
        attribute.done()
        if kind == _CONTENT_TYPE_ATTR:
            if values.element(_der.OID) != _DATA_OID:
                raise _der.NotRecognised
            content_type = "data"
        elif kind == _MESSAGE_DIGEST_ATTR:
            digest = values.value(_der.OCTET_STRING)
        elif kind == _SIGNING_TIME_ATTR:
            tag = values.peek()
            if tag not in (_der.UTC_TIME, _der.GENERALIZED_TIME):
                raise _der.NotRecognised
            signing_time = _der.read_time(tag, values.value(tag))
        else:
            raise _der.NotRecognised
        values.done()  # exactly one value
    return content_type, digest, signing_time
