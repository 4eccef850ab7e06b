"""Reading CMS structure with asn1crypto; no cryptography here (building: :mod:`._asn1`).

``parse_*`` read untrusted DER into plain frozen dataclasses in one go, so that
asn1crypto's lazy parsing cannot surface an error later, somewhere else: every
parse error of any kind becomes :class:`MalformedMessage` inside these functions.
Which algorithms are acceptable is decided by :mod:`contracts.envelope`, not here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, core, parser
from asn1crypto import x509 as asn1_x509

from contracts.errors import MalformedMessage

__all__ = [
    "KeyTransport",
    "ParsedEnvelope",
    "ParsedSigned",
    "asn1_certificate",
    "names_equal",
    "parse_envelope",
    "parse_signed",
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


def _key_transport(ktri: cms.KeyTransRecipientInfo) -> KeyTransport:
    rid = ktri["rid"]
    issuer_der = serial = key_id = None
    if rid.name == "issuer_and_serial_number":
        issuer_der = bytes(rid.chosen["issuer"].dump())
        serial = int(rid.chosen["serial_number"].native)
    else:
        key_id = bytes(rid.chosen.native)
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
        sid = signer["sid"]
        issuer_der = serial = key_id = None
        if sid.name == "issuer_and_serial_number":
            issuer_der = bytes(sid.chosen["issuer"].dump())
            serial = int(sid.chosen["serial_number"].native)
        else:
            key_id = bytes(sid.chosen.native)
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
