"""Message protection: CMS sign-then-encrypt, pure bytes in and bytes out.

A message is a CMS SignedData (SHA-256, RSA PKCS#1 v1.5, signed attributes content-type,
message-digest and signing-time; signer certificate and intermediates embedded; signer
by issuerAndSerialNumber) whose DER ContentInfo is encrypted to the recipient's
encryption certificate. :func:`open_envelope` also accepts a SignerInfo with no signed
attributes at all, as .NET ``SignedCms`` makes it for Helsenorge.Messaging: the signature
is then over the content itself and the signer is judged at receipt time
(:class:`SignatureForm`). A signed-attributes set must carry message-digest and
signing-time. The profiles:

- ``national``: EnvelopedData, AES-256-CBC, RSA PKCS#1 v1.5 key transport;
- ``strict``: AuthEnvelopedData (RFC 5083), AES-256-GCM, RSA-OAEP-SHA256.

:func:`open_envelope` accepts both, whitelists algorithms (anything else is
:class:`UnsupportedAlgorithm`), and checks in this order: size, structure, decryption,
signature, trust. What a failure raises:

- :class:`MessageTooLarge` over :data:`MAX_MESSAGE_BYTES`, before any parsing;
- :class:`MalformedMessage` for anything that is not the expected CMS;
- :class:`DecryptionFailed` for *every* unwrap or decrypt failure, always with the same
  default message. A PKCS#1 v1.5 unwrap failure continues with a random key, so that it
  fails exactly where a wrong key would (RFC 3218 §2.3.2). CBC is unauthenticated, so a
  decrypted national-profile plaintext that is not a SignedData is also reported as
  DecryptionFailed: a distinct "malformed" answer there would be a padding/format oracle;
- :class:`SignatureInvalid` when the message digest or the signature does not verify;
- whatever :meth:`TrustStore.verify` raises for the signer.

Nothing decrypted is returned or interpreted before the inner signature has verified.
"""

from __future__ import annotations

import functools
import hmac
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum, unique

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts import _asn1, _cms
from contracts.certprofile import PARSE_ERRORS, UNREADABLE, certificate_problem
from contracts.errors import (
    DecryptionFailed,
    MalformedMessage,
    MessageTooLarge,
    SignatureInvalid,
    UnsupportedAlgorithm,
    UntrustedSigner,
)
from contracts.trust import MIN_RSA_KEY_BITS, TrustStore

__all__ = [
    "CONTENT_TYPE",
    "MAX_MESSAGE_BYTES",
    "DecryptionKey",
    "OpenedEnvelope",
    "Profile",
    "SignatureForm",
    "SigningIdentity",
    "open_envelope",
    "seal",
]

CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"
MAX_MESSAGE_BYTES = 1_000_000  # the national service bus limit
#: A signer and its intermediates; .NET SignedCms embeds the chain without the root.
MAX_EMBEDDED_CERTIFICATES = 16

_KEY_BYTES = 32  # AES-256
_GCM_NONCE_BYTES = 12
_GCM_TAG_BYTES = 16

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_WEAK = frozenset(
    {
        "md2", "md5", "sha1", "sha1_rsa", "md5_rsa", "md2_rsa", "sha1_dsa", "sha1_ecdsa",
        "des", "tripledes_3key", "rc2", "rc4", "rc5",
        "aes128_cbc", "aes192_cbc", "aes128_gcm", "aes192_gcm",
    }
)  # fmt: skip
_SIGNATURE_WITH_HASH = {"sha256_rsa": "sha256", "sha384_rsa": "sha384", "sha512_rsa": "sha512"}


@unique
class Profile(StrEnum):
    NATIONAL = "national"
    STRICT = "strict"


@dataclass(frozen=True)
class SigningIdentity:
    """The sender's signing certificate and key, plus intermediates to embed."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class DecryptionKey:
    """One of the receiver's encryption certificates and its key (current or previous)."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey


@unique
class SignatureForm(StrEnum):
    """What the SignerInfo signature covers (RFC 5652 §5.4)."""

    #: signed attributes content-type, message-digest and signing-time (what we seal)
    ATTRIBUTES = "signed-attributes"
    #: no signed attributes: the content itself (.NET SignedCms, Helsenorge.Messaging)
    CONTENT = "content"


@dataclass(frozen=True)
class OpenedEnvelope:
    """``signing_time`` is the signed signing-time, or for :attr:`SignatureForm.CONTENT`
    (which has none) the receipt time at which the signer was judged."""

    content: bytes
    signer: x509.Certificate
    signing_time: datetime
    profile: Profile
    embedded_certificates: tuple[x509.Certificate, ...]
    signature_form: SignatureForm = SignatureForm.ATTRIBUTES


@functools.lru_cache(maxsize=1024)
def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@functools.lru_cache(maxsize=1024)
def _load_embedded(der: bytes) -> x509.Certificate:
    """An embedded certificate parsed through everything the trust path will read
    (:func:`contracts.certprofile.certificate_problem`), so that a malformed one is a
    refusal here and not an exception later, inside signer matching or chain building
    (the message would be requeued instead of dead-lettered). Cached by DER: a sender's
    certificates are parsed once, not per message (a refusal is not cached)."""
    try:
        with warnings.catch_warnings():
            # a non-positive serial only warns (for now); certificate_problem refuses it
            warnings.simplefilter("ignore")
            certificate = x509.load_der_x509_certificate(der)
    except PARSE_ERRORS:
        raise MalformedMessage("an embedded certificate is not well formed") from None
    problem = certificate_problem(certificate)
    if problem == UNREADABLE:
        raise MalformedMessage("an embedded certificate is not well formed")
    if problem is not None:
        raise MalformedMessage(f"an embedded certificate is refused: {problem}")
    return certificate


@functools.lru_cache(maxsize=256)
def _identifiers(certificate: x509.Certificate) -> tuple[bytes, int, bytes | None]:
    """(issuer DER as encoded in the certificate, serial, subjectKeyIdentifier)."""
    asn1 = _cms.asn1_certificate(_der(certificate))
    try:
        key_id: bytes | None = certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        key_id = None
    return bytes(asn1["tbs_certificate"]["issuer"].dump()), certificate.serial_number, key_id


def _matches(
    certificate: x509.Certificate,
    issuer_der: bytes | None,
    serial: int | None,
    key_id: bytes | None,
) -> bool:
    own_issuer, own_serial, own_key_id = _identifiers(certificate)
    if key_id is not None:
        return own_key_id is not None and hmac.compare_digest(own_key_id, key_id)
    return (
        serial == own_serial and issuer_der is not None and _cms.names_equal(own_issuer, issuer_der)
    )


def _rsa_public_key(certificate: x509.Certificate) -> rsa.RSAPublicKey:
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise UnsupportedAlgorithm("only RSA keys are accepted")
    if key.key_size < MIN_RSA_KEY_BITS:
        raise UnsupportedAlgorithm(
            f"RSA key of {key.key_size} bits; at least {MIN_RSA_KEY_BITS} are required"
        )
    return key


# --- seal ----------------------------------------------------------------------------


def seal(
    content: bytes,
    *,
    signer: SigningIdentity,
    recipient: x509.Certificate,
    profile: Profile = Profile.NATIONAL,
    signing_time: datetime | None = None,
) -> bytes:
    """Sign ``content`` as ``signer``, then encrypt it to ``recipient``; returns DER.

    Raises :class:`UnsupportedAlgorithm` for a non-RSA or sub-2048-bit key.
    """
    _rsa_public_key(signer.certificate)
    certificates = [_der(c) for c in (signer.certificate, *signer.chain)]
    return _encrypt(_sign(content, signer, signing_time, certificates), recipient, profile)


def _sign(
    content: bytes,
    signer: SigningIdentity,
    signing_time: datetime | None,
    certificates_der: Sequence[bytes],
) -> bytes:
    """SignedData over ``content`` carrying ``certificates_der`` as its certificate set."""
    when = (signing_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(content)
    attributes = _asn1.signed_attributes(digest.finalize(), when)
    signature = signer.private_key.sign(attributes, padding.PKCS1v15(), hashes.SHA256())
    signer_issuer, signer_serial, _ = _identifiers(signer.certificate)
    return _asn1.signed_data(
        content,
        attributes_der=attributes,
        signature=signature,
        signer_issuer_der=signer_issuer,
        signer_serial=signer_serial,
        certificates_der=list(certificates_der),
    )


def _encrypt(inner: bytes, recipient: x509.Certificate, profile: Profile) -> bytes:
    recipient_key = _rsa_public_key(recipient)
    recipient_issuer, recipient_serial, _ = _identifiers(recipient)
    key = os.urandom(_KEY_BYTES)
    if profile is Profile.STRICT:
        nonce = os.urandom(_GCM_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, inner, None)
        return _asn1.auth_enveloped_data(
            recipient_issuer_der=recipient_issuer,
            recipient_serial=recipient_serial,
            encrypted_key=recipient_key.encrypt(key, _oaep("sha256")),
            nonce=nonce,
            ciphertext=sealed[:-_GCM_TAG_BYTES],
            tag=sealed[-_GCM_TAG_BYTES:],
        )
    iv = os.urandom(16)
    padder = symmetric_padding.PKCS7(128).padder()
    padded = padder.update(inner) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return _asn1.enveloped_data(
        recipient_issuer_der=recipient_issuer,
        recipient_serial=recipient_serial,
        encrypted_key=recipient_key.encrypt(key, padding.PKCS1v15()),
        iv=iv,
        ciphertext=encryptor.update(padded) + encryptor.finalize(),
    )


def _oaep(hash_name: str) -> padding.OAEP:
    algorithm = _HASHES[hash_name]()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


# --- open ----------------------------------------------------------------------------


def open_envelope(
    der: bytes,
    *,
    keys: Sequence[DecryptionKey],
    trust: TrustStore,
    now: datetime | None = None,
) -> OpenedEnvelope:
    """Decrypt with one of ``keys``, verify the inner signature and the signer's trust.

    Raises the :class:`~contracts.errors.Rejected` subclasses listed in the module
    docstring, or :class:`~contracts.errors.CrlUnavailable` from the trust store.
    """
    if len(der) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    envelope = _cms.parse_envelope(bytes(der))
    _check_envelope_algorithms(envelope)
    inner = _decrypt(envelope, keys)
    profile = Profile.STRICT if envelope.authenticated else Profile.NATIONAL
    try:
        signed = _cms.parse_signed(inner)
    except MalformedMessage:
        if not envelope.authenticated:
            raise DecryptionFailed() from None
        raise
    return _verify_signed(signed, profile=profile, trust=trust, now=now)


def _check_envelope_algorithms(envelope: _cms.ParsedEnvelope) -> None:
    name = envelope.content_algorithm
    expected = "aes256_gcm" if envelope.authenticated else "aes256_cbc"
    if name != expected:
        why = "weak" if name in _WEAK else "unsupported"
        raise UnsupportedAlgorithm(f"{why} content encryption {name}; {expected} is required")
    if envelope.authenticated:
        if len(envelope.iv) != _GCM_NONCE_BYTES or envelope.icv_length != _GCM_TAG_BYTES:
            raise UnsupportedAlgorithm("AES-GCM needs a 12-byte nonce and a 16-byte tag")
        if len(envelope.mac) != _GCM_TAG_BYTES:
            raise MalformedMessage("the authentication tag has the wrong length")
    elif len(envelope.iv) != 16:
        raise MalformedMessage("the AES-CBC IV must be 16 bytes")
    if envelope.content_type not in ("data", "signed_data"):
        raise MalformedMessage("the encrypted content is not signed data")


def _unwrap_padding(recipient: _cms.KeyTransport, authenticated: bool) -> padding.AsymmetricPadding:
    """The key-transport padding for ``recipient``; an unacceptable one is UnsupportedAlgorithm."""
    if recipient.algorithm == "rsaes_oaep":
        if (
            recipient.oaep_hash not in _HASHES
            or recipient.oaep_mgf_hash != recipient.oaep_hash
            or recipient.oaep_label
        ):
            raise UnsupportedAlgorithm(
                f"RSA-OAEP with {recipient.oaep_hash}; SHA-256 or better with MGF1 of the "
                "same hash is required"
            )
        return _oaep(recipient.oaep_hash)
    if recipient.algorithm == "rsaes_pkcs1v15" and not authenticated:
        return padding.PKCS1v15()
    raise UnsupportedAlgorithm(f"unsupported key transport {recipient.algorithm}")


def _decrypt(envelope: _cms.ParsedEnvelope, keys: Sequence[DecryptionKey]) -> bytes:
    """The decrypted content, or DecryptionFailed() whatever went wrong."""
    chosen: tuple[_cms.KeyTransport, DecryptionKey] | None = None
    for recipient in envelope.recipients:
        for key in keys:
            if _matches(
                key.certificate, recipient.issuer_der, recipient.serial, recipient.subject_key_id
            ):
                chosen = (recipient, key)
                break
        if chosen is not None:
            break
    if chosen is None:
        raise DecryptionFailed()
    recipient, key = chosen
    scheme = _unwrap_padding(recipient, envelope.authenticated)
    try:
        content_key = key.private_key.decrypt(recipient.encrypted_key, scheme)
    except ValueError:
        content_key = b""
    if len(content_key) != _KEY_BYTES:
        # Carry on with a random key: the failure then surfaces exactly where a wrong
        # key's would, as the same DecryptionFailed, whether the padding was bad or not.
        content_key = os.urandom(_KEY_BYTES)
    if envelope.authenticated:
        try:
            return AESGCM(content_key).decrypt(
                envelope.iv, envelope.ciphertext + envelope.mac, envelope.aad or None
            )
        except InvalidTag:
            raise DecryptionFailed() from None
    if not envelope.ciphertext or len(envelope.ciphertext) % 16:
        raise DecryptionFailed()
    decryptor = Cipher(algorithms.AES(content_key), modes.CBC(envelope.iv)).decryptor()
    padded = decryptor.update(envelope.ciphertext) + decryptor.finalize()
    unpadder = symmetric_padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed() from None


def _verify_signed(
    signed: _cms.ParsedSigned, *, profile: Profile, trust: TrustStore, now: datetime | None
) -> OpenedEnvelope:
    if signed.content_type != "data":
        raise MalformedMessage("the signed content type is not id-data")
    if signed.content is None:
        raise MalformedMessage("the signed data carries no content (detached signature)")
    if signed.digest_algorithm not in _HASHES:
        why = "weak" if signed.digest_algorithm in _WEAK else "unsupported"
        raise UnsupportedAlgorithm(f"{why} digest algorithm {signed.digest_algorithm}")
    signature_padding = _signature_padding(signed)
    form = SignatureForm.CONTENT if signed.signed_attrs_der is None else SignatureForm.ATTRIBUTES
    if form is SignatureForm.ATTRIBUTES:
        # A signed-attributes set is held to the full form: without message-digest the
        # signature would not cover the content at all (RFC 5652 §5.3).
        if signed.attr_message_digest is None or signed.attr_signing_time is None:
            raise MalformedMessage("signed attributes without message-digest or signing-time")
        if signed.attr_content_type != signed.content_type:
            raise SignatureInvalid("the signed content-type attribute does not match the content")
    if len(signed.certificates) > MAX_EMBEDDED_CERTIFICATES:
        raise MalformedMessage(
            f"the message embeds {len(signed.certificates)} certificates; "
            f"at most {MAX_EMBEDDED_CERTIFICATES} are accepted"
        )
    embedded = tuple(_load_embedded(der) for der in signed.certificates)
    signer = next(
        (
            certificate
            for certificate in embedded
            if _matches(
                certificate, signed.signer_issuer_der, signed.signer_serial, signed.signer_key_id
            )
        ),
        None,
    )
    if signer is None:
        raise UntrustedSigner("the signer certificate is not included in the message")
    public_key = _signer_public_key(signer)
    hash_algorithm = _HASHES[signed.digest_algorithm]()
    if signed.signed_attrs_der is None:
        # .NET SignedCms as Helsenorge.Messaging uses it: the signature is over the content
        # itself, and with no signing-time the certificate is judged at receipt time.
        signed_bytes = signed.content
        signing_time = (now or datetime.now(UTC)).astimezone(UTC)
    else:
        # checked above for the signed-attributes form
        assert signed.attr_message_digest is not None
        assert signed.attr_signing_time is not None
        digest = hashes.Hash(hash_algorithm)
        digest.update(signed.content)
        if not hmac.compare_digest(digest.finalize(), signed.attr_message_digest):
            raise SignatureInvalid("the message digest does not match the signed content")
        signed_bytes = signed.signed_attrs_der
        signing_time = signed.attr_signing_time.astimezone(UTC)
    try:
        public_key.verify(signed.signature, signed_bytes, signature_padding, hash_algorithm)
    except InvalidSignature:
        raise SignatureInvalid("the signature does not verify") from None
    trust.verify(signer, hints=embedded, at=signing_time, now=now)
    return OpenedEnvelope(
        content=signed.content,
        signer=signer,
        signing_time=signing_time,
        profile=profile,
        embedded_certificates=embedded,
        signature_form=form,
    )


def _signer_public_key(signer: x509.Certificate) -> rsa.RSAPublicKey:
    """The signer's RSA key, after forcing the parts of the certificate that cryptography
    parses lazily (key, extensions, signature algorithm), so a broken certificate is
    MalformedMessage here and not a stray ValueError later in the trust checks."""
    try:
        signer.extensions  # noqa: B018 - accessed to parse
        signer.signature_hash_algorithm  # noqa: B018 - accessed to parse
        signer.public_key()
    except (ValueError, CryptographyUnsupportedAlgorithm):
        raise MalformedMessage("the signer certificate is not well formed") from None
    return _rsa_public_key(signer)


def _signature_padding(signed: _cms.ParsedSigned) -> padding.AsymmetricPadding:
    name = signed.signature_algorithm
    if name == "rsassa_pkcs1v15":
        return padding.PKCS1v15()
    if name in _SIGNATURE_WITH_HASH:
        if _SIGNATURE_WITH_HASH[name] != signed.digest_algorithm:
            raise UnsupportedAlgorithm("the signature and digest algorithms disagree")
        return padding.PKCS1v15()
    if name == "rsassa_pss":
        if (
            signed.pss_hash != signed.digest_algorithm
            or signed.pss_mgf_hash != signed.digest_algorithm
            or signed.pss_salt_length is None
        ):
            raise UnsupportedAlgorithm("RSASSA-PSS parameters must use the digest algorithm")
        mgf_hash = _HASHES[signed.digest_algorithm]()
        return padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=signed.pss_salt_length)
    why = "weak" if name in _WEAK else "unsupported"
    raise UnsupportedAlgorithm(f"{why} signature algorithm {name}")
