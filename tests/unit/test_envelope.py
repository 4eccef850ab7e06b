"""Sign-then-encrypt: what seal makes, open_envelope accepts, and everything it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from crypto_fixtures import CONTENT, IssueSigner, envelope_inner
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import _asn1
from contracts.envelope import (
    MAX_MESSAGE_BYTES,
    DecryptionKey,
    Profile,
    SigningIdentity,
    open_envelope,
    seal,
)
from contracts.errors import (
    CertificateExpired,
    DecryptionFailed,
    MalformedMessage,
    MessageTooLarge,
    Rejected,
    SignatureInvalid,
    UnsupportedAlgorithm,
    UntrustedSigner,
)
from contracts.pki import ENCRYPTION, DevCa, PkiDir, new_rsa_key
from contracts.trust import TrustStore


def _seal(pki: PkiDir, profile: Profile = Profile.NATIONAL, content: bytes = CONTENT) -> bytes:
    return seal(
        content,
        signer=pki.sender.signing_identity,
        recipient=pki.register.encryption_certificate,
        profile=profile,
    )


@pytest.mark.parametrize("profile", list(Profile))
def test_a_sealed_message_opens_to_its_content_signer_and_profile(
    dev_pki: PkiDir, trust: TrustStore, profile: Profile
) -> None:
    """Round trip in both profiles: content, signer, profile and embedded chain come back."""
    signing_time = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    message = seal(
        CONTENT,
        signer=dev_pki.sender.signing_identity,
        recipient=dev_pki.register.encryption_certificate,
        profile=profile,
        signing_time=signing_time if signing_time > dev_pki.root.not_valid_before_utc else None,
    )
    opened = open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)
    assert opened.content == CONTENT
    assert opened.signer == dev_pki.sender.signing_certificate
    assert opened.profile is profile
    assert dev_pki.intermediates[0] in opened.embedded_certificates
    assert abs(opened.signing_time - datetime.now(UTC)) < timedelta(days=400)


def test_the_signing_time_is_carried_to_the_second(dev_pki: PkiDir, trust: TrustStore) -> None:
    """The signed signing-time attribute comes back as the sealer set it (UTC, seconds)."""
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    message = seal(
        CONTENT,
        signer=dev_pki.sender.signing_identity,
        recipient=dev_pki.register.encryption_certificate,
        signing_time=moment,
    )
    opened = open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)
    assert opened.signing_time == moment


def test_each_seal_is_fresh(dev_pki: PkiDir) -> None:
    """Random content key and IV: sealing the same content twice gives different bytes."""
    assert _seal(dev_pki) != _seal(dev_pki)


@pytest.mark.parametrize("profile", list(Profile))
def test_a_flipped_ciphertext_byte_never_yields_other_content(
    dev_pki: PkiDir, trust: TrustStore, profile: Profile
) -> None:
    """Under GCM any flipped byte is DecryptionFailed. Under CBC the garbled plaintext fails
    after decryption (padding, digest, signature, a certificate that no longer chains), or,
    where the flip only garbled the unsigned embedded certificates, the authentic content
    still opens: never anything but the signed content."""
    message = _seal(dev_pki, profile)
    tag_bytes = 18 if profile is Profile.STRICT else 0  # OCTET STRING header + 16-byte tag
    end = len(message) - tag_bytes
    rejected = 0
    for offset in range(end - 1, end - 2400, -37):
        tampered = bytearray(message)
        tampered[offset] ^= 0x01
        try:
            opened = open_envelope(
                bytes(tampered), keys=[dev_pki.register.decryption_key], trust=trust
            )
        except DecryptionFailed:
            rejected += 1
            continue
        except Rejected:
            assert profile is Profile.NATIONAL
            rejected += 1
            continue
        assert profile is Profile.NATIONAL
        assert opened.content == CONTENT
    assert rejected > 0


@pytest.mark.parametrize("profile", list(Profile))
def test_modified_signed_content_fails_the_signature(
    dev_pki: PkiDir, trust: TrustStore, profile: Profile
) -> None:
    """Someone who re-encrypts the signed data with the content changed gets SignatureInvalid."""
    identity = dev_pki.sender.signing_identity
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from contracts.envelope import _der, _identifiers

    attributes = _asn1.signed_attributes(_sha256(CONTENT), datetime.now(UTC).replace(microsecond=0))
    signature = identity.private_key.sign(attributes, padding.PKCS1v15(), hashes.SHA256())
    issuer, serial, _ = _identifiers(identity.certificate)
    forged = _asn1.signed_data(
        CONTENT.replace(b"100", b"999"),
        attributes_der=attributes,
        signature=signature,
        signer_issuer_der=issuer,
        signer_serial=serial,
        certificates_der=[_der(identity.certificate), _der(dev_pki.intermediates[0])],
    )
    message = envelope_inner(forged, dev_pki.register.encryption_certificate, profile)
    with pytest.raises(SignatureInvalid, match="digest"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def _sha256(data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def test_a_signer_from_another_ca_is_untrusted(
    dev_pki: PkiDir, trust: TrustStore, other_ca: DevCa, issue_signer: IssueSigner
) -> None:
    """A perfectly valid signature by a certificate from an unconfigured CA is refused."""
    stranger = issue_signer(ca=other_ca)
    message = seal(
        CONTENT,
        signer=stranger.identity([other_ca.certificate]),
        recipient=dev_pki.register.encryption_certificate,
    )
    with pytest.raises(UntrustedSigner) as caught:
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)
    assert type(caught.value) is UntrustedSigner


def test_a_key_encipherment_certificate_cannot_sign(dev_pki: PkiDir, trust: TrustStore) -> None:
    """The sender's encryption certificate (keyEncipherment only) is not a signing certificate."""
    identity = SigningIdentity(
        dev_pki.sender.encryption_certificate, dev_pki.sender.encryption_key, dev_pki.intermediates
    )
    message = seal(CONTENT, signer=identity, recipient=dev_pki.register.encryption_certificate)
    with pytest.raises(UntrustedSigner, match="not a signing certificate"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_an_expired_signer_is_refused(
    dev_pki: PkiDir, trust: TrustStore, issue_signer: IssueSigner
) -> None:
    """A certificate that expired yesterday fails even for a message signed while it was valid."""
    now = datetime.now(UTC)
    expired = issue_signer(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    message = seal(
        CONTENT,
        signer=expired.identity(dev_pki.intermediates),
        recipient=dev_pki.register.encryption_certificate,
        signing_time=now - timedelta(days=2),
    )
    with pytest.raises(CertificateExpired):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_a_not_yet_valid_signer_is_refused(
    dev_pki: PkiDir, trust: TrustStore, issue_signer: IssueSigner
) -> None:
    """A certificate valid only from tomorrow cannot sign today."""
    now = datetime.now(UTC)
    future = issue_signer(not_before=now + timedelta(days=1), not_after=now + timedelta(days=30))
    message = seal(
        CONTENT,
        signer=future.identity(dev_pki.intermediates),
        recipient=dev_pki.register.encryption_certificate,
    )
    with pytest.raises(CertificateExpired):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_an_rsa_1024_signer_cannot_seal(dev_pki: PkiDir, issue_signer: IssueSigner) -> None:
    """seal refuses a key under 2048 bits before signing anything."""
    weak = issue_signer(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(UnsupportedAlgorithm, match="1024"):
        seal(
            CONTENT,
            signer=weak.identity(dev_pki.intermediates),
            recipient=dev_pki.register.encryption_certificate,
        )


def test_a_message_for_another_recipient_cannot_be_decrypted(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """Sealed to the sender's own encryption certificate: the register has no matching key."""
    message = seal(
        CONTENT,
        signer=dev_pki.sender.signing_identity,
        recipient=dev_pki.sender.encryption_certificate,
    )
    with pytest.raises(DecryptionFailed):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


@pytest.mark.parametrize("profile", list(Profile))
def test_key_rollover_opens_messages_sealed_to_the_previous_key(
    dev_pki: PkiDir,
    trust: TrustStore,
    issuing_ca: DevCa,
    spare_keys: list[rsa.RSAPrivateKey],
    profile: Profile,
) -> None:
    """With [current, previous] configured, both old and new messages open."""
    from contracts.pki import PARTIES

    current_cert, current_key = issuing_ca.issue_party(
        PARTIES["register"], ENCRYPTION, key=spare_keys[2], purpose="kryptering 2"
    )
    current = DecryptionKey(current_cert, current_key)
    previous = dev_pki.register.decryption_key
    for recipient in (previous.certificate, current.certificate):
        message = seal(
            CONTENT, signer=dev_pki.sender.signing_identity, recipient=recipient, profile=profile
        )
        opened = open_envelope(message, keys=[current, previous], trust=trust)
        assert opened.content == CONTENT
    old = seal(CONTENT, signer=dev_pki.sender.signing_identity, recipient=previous.certificate)
    with pytest.raises(DecryptionFailed):
        open_envelope(old, keys=[current], trust=trust)


def test_an_oversized_message_is_refused_before_parsing(dev_pki: PkiDir, trust: TrustStore) -> None:
    """One byte over the limit is MessageTooLarge, whatever the bytes (here: not CMS at all)."""
    with pytest.raises(MessageTooLarge):
        open_envelope(
            b"\xff" * (MAX_MESSAGE_BYTES + 1), keys=[dev_pki.register.decryption_key], trust=trust
        )


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"not cms at all", b"\x30\x03\x06\x01\x00", b"\x30\x80" + b"\x00" * 8]
)
def test_garbage_is_malformed(dev_pki: PkiDir, trust: TrustStore, data: bytes) -> None:
    """Bytes that are not CMS at all are MalformedMessage."""
    with pytest.raises(MalformedMessage):
        open_envelope(data, keys=[dev_pki.register.decryption_key], trust=trust)


def test_trailing_bytes_after_the_message_are_malformed(dev_pki: PkiDir, trust: TrustStore) -> None:
    """Strict DER: nothing may follow the outer ContentInfo."""
    with pytest.raises(MalformedMessage):
        open_envelope(_seal(dev_pki) + b"\x00", keys=[dev_pki.register.decryption_key], trust=trust)


def test_a_signed_only_message_is_not_accepted(dev_pki: PkiDir, trust: TrustStore) -> None:
    """The outer layer must be EnvelopedData or AuthEnvelopedData: unencrypted SignedData is
    malformed for this protocol."""
    signed_only = _asn1.signed_data(
        CONTENT,
        attributes_der=_asn1.signed_attributes(_sha256(CONTENT), datetime.now(UTC)),
        signature=b"\x00" * 256,
        signer_issuer_der=b"\x30\x00",
        signer_serial=1,
        certificates_der=[],
    )
    with pytest.raises(MalformedMessage, match="EnvelopedData"):
        open_envelope(signed_only, keys=[dev_pki.register.decryption_key], trust=trust)


def test_a_non_signed_inner_is_malformed_under_gcm_but_undecryptable_under_cbc(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """Authenticated decryption may say "malformed"; CBC must not (it would be an oracle)."""
    recipient = dev_pki.register.encryption_certificate
    keys = [dev_pki.register.decryption_key]
    with pytest.raises(MalformedMessage):
        open_envelope(envelope_inner(b"plain", recipient, Profile.STRICT), keys=keys, trust=trust)
    with pytest.raises(DecryptionFailed):
        open_envelope(envelope_inner(b"plain", recipient, Profile.NATIONAL), keys=keys, trust=trust)


@pytest.fixture(scope="module")
def sample_messages(dev_pki: PkiDir) -> dict[Profile, bytes]:
    return {profile: _seal(dev_pki, profile) for profile in Profile}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    profile=st.sampled_from(list(Profile)),
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=3),
)
def test_truncated_or_bit_flipped_messages_end_in_a_rejection(
    dev_pki: PkiDir,
    sample_messages: dict[Profile, bytes],
    profile: Profile,
    cut: int,
    flips: list[tuple[int, int]],
) -> None:
    """Any truncation and bit flips of a real message: a Rejected subclass, never another
    exception. What still opens is the authentic signed content (a flip that only garbled
    an unsigned embedded certificate under CBC, or no damage at all)."""
    original = sample_messages[profile]
    damaged = bytearray(original[: len(original) - cut % len(original)])
    for position, mask in flips:
        if damaged:
            damaged[position % len(damaged)] ^= mask
    trust = dev_pki.trust_store()
    try:
        opened = open_envelope(bytes(damaged), keys=[dev_pki.register.decryption_key], trust=trust)
    except Rejected:
        return
    assert opened.content == CONTENT
    assert profile is Profile.NATIONAL or bytes(damaged) == original


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600))
def test_random_bytes_end_in_a_rejection(dev_pki: PkiDir, data: bytes) -> None:
    """Random input is always a Rejected subclass."""
    with pytest.raises(Rejected):
        open_envelope(data, keys=[dev_pki.register.decryption_key], trust=dev_pki.trust_store())


def test_every_unwrap_and_decrypt_failure_looks_the_same(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """No oracle: wrong recipient, corrupted wrapped key, wrong private key behind the right
    certificate, bad CBC padding and bad GCM tag all raise the same class with the same text."""
    keys = [dev_pki.register.decryption_key]
    national = bytearray(_seal(dev_pki, Profile.NATIONAL))
    strict = bytearray(_seal(dev_pki, Profile.STRICT))
    wrapped_key_at = _find_wrapped_key(bytes(national), dev_pki)
    failures: list[tuple[bytes, list[DecryptionKey]]] = []
    failures.append((_seal_to(dev_pki, dev_pki.sender.encryption_certificate), keys))
    corrupted_key = bytearray(national)
    corrupted_key[wrapped_key_at + 5] ^= 0xFF
    failures.append((bytes(corrupted_key), keys))
    impostor = DecryptionKey(dev_pki.register.encryption_certificate, dev_pki.sender.encryption_key)
    failures.append((bytes(national), [impostor]))
    bad_padding = bytearray(national)
    bad_padding[-17] ^= 0x55  # the last block's padding byte, through the previous block
    failures.append((bytes(bad_padding), keys))
    bad_tag = bytearray(strict)
    bad_tag[-1] ^= 0x01
    failures.append((bytes(bad_tag), keys))
    outcomes = set()
    for message, key_list in failures:
        with pytest.raises(DecryptionFailed) as caught:
            open_envelope(message, keys=key_list, trust=trust)
        outcomes.add((type(caught.value), str(caught.value), caught.value.description))
    assert len(outcomes) == 1
    assert outcomes.pop()[1] == DecryptionFailed().description


def _seal_to(dev_pki: PkiDir, recipient: object) -> bytes:
    from cryptography import x509

    assert isinstance(recipient, x509.Certificate)
    return seal(CONTENT, signer=dev_pki.sender.signing_identity, recipient=recipient)


def _find_wrapped_key(message: bytes, dev_pki: PkiDir) -> int:
    """Offset of the 256-byte wrapped content key (OCTET STRING 04 82 01 00)."""
    offset = message.index(b"\x04\x82\x01\x00")
    return offset + 4


def test_a_detached_or_multi_signer_message_is_malformed_under_gcm(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """A SignedData without content is refused (we never verify detached signatures)."""
    from asn1crypto import cms

    identity = dev_pki.sender.signing_identity
    from contracts.envelope import _der, _identifiers

    issuer, serial, _ = _identifiers(identity.certificate)
    full = cms.ContentInfo.load(
        _asn1.signed_data(
            CONTENT,
            attributes_der=_asn1.signed_attributes(_sha256(CONTENT), datetime.now(UTC)),
            signature=b"\x00" * 256,
            signer_issuer_der=issuer,
            signer_serial=serial,
            certificates_der=[_der(identity.certificate)],
        )
    )
    signed = full["content"]
    signed["encap_content_info"] = {"content_type": "data"}
    detached = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump(force=True)
    message = envelope_inner(detached, dev_pki.register.encryption_certificate, Profile.STRICT)
    with pytest.raises(MalformedMessage, match="detached"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_a_recipient_key_under_2048_bits_is_refused_when_sealing(
    dev_pki: PkiDir, issuing_ca: DevCa
) -> None:
    """We do not encrypt to weak keys either."""
    from contracts.pki import PARTIES

    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_cert, _ = issuing_ca.issue_party(PARTIES["register"], ENCRYPTION, key=weak_key)
    with pytest.raises(UnsupportedAlgorithm):
        seal(CONTENT, signer=dev_pki.sender.signing_identity, recipient=weak_cert)


def test_new_rsa_key_default_is_2048_bits() -> None:
    """The development default matches the national minimum."""
    assert new_rsa_key().key_size == 2048
