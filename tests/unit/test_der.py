"""The fast CMS reader answers exactly as the asn1crypto reader, or leaves the input to it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from crypto_fixtures import CONTENT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import _asn1, _cms, _der
from contracts.envelope import Profile, seal
from contracts.envelope import _der as certificate_der
from contracts.errors import MalformedMessage
from contracts.pki import PkiDir

SIGNING_TIME = datetime(2024, 5, 17, 8, 30, 0, tzinfo=UTC)


def _signed_data(pki: PkiDir) -> bytes:
    signer = pki.sender.signing_identity
    issuer, serial, _ = _cms_identifiers(pki)
    return _asn1.signed_data(
        CONTENT,
        attributes_der=_asn1.signed_attributes(hashlib.sha256(CONTENT).digest(), SIGNING_TIME),
        signature=b"\x01" * 256,
        signer_issuer_der=issuer,
        signer_serial=serial,
        certificates_der=[certificate_der(c) for c in (signer.certificate, *signer.chain)],
    )


def _cms_identifiers(pki: PkiDir) -> tuple[bytes, int, bytes | None]:
    from contracts.envelope import _identifiers

    return _identifiers(pki.sender.signing_identity.certificate)


def _envelopes(pki: PkiDir) -> list[bytes]:
    return [
        seal(
            CONTENT,
            signer=pki.sender.signing_identity,
            recipient=pki.register.encryption_certificate,
            profile=profile,
        )
        for profile in Profile
    ]


def _both(parse_fast: object, parse_general: object, data: bytes) -> tuple[object, object]:
    def outcome(parse: object) -> object:
        try:
            return parse(data)  # type: ignore[operator]
        except MalformedMessage:
            return MalformedMessage

    return outcome(parse_fast), outcome(parse_general)


def test_our_envelopes_take_the_fast_path_and_read_as_asn1crypto_reads_them(
    dev_pki: PkiDir,
) -> None:
    """Both profiles: the fast reader recognises what seal makes, with identical fields."""
    for message in _envelopes(dev_pki):
        fast = _cms._fast_envelope(message)
        assert fast is not None
        assert fast == _cms.parse_envelope_asn1crypto(message)


def test_our_signed_data_takes_the_fast_path_and_reads_as_asn1crypto_reads_it(
    dev_pki: PkiDir,
) -> None:
    """The inner SignedData: signer id, attributes, time and certificates are identical."""
    inner = _signed_data(dev_pki)
    fast = _cms._fast_signed(inner)
    assert fast is not None
    assert fast == _cms.parse_signed_asn1crypto(inner)
    assert fast.attr_signing_time == SIGNING_TIME
    assert len(fast.certificates) == 1 + len(dev_pki.sender.signing_identity.chain)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_mutated_message_reads_the_same_through_either_reader(
    dev_pki: PkiDir, data: st.DataObject
) -> None:
    """Truncated, extended or byte-flipped: whatever the public parser answers (fields or
    MalformedMessage), the asn1crypto reader answers the same."""
    originals = [*_envelopes_cached(dev_pki), _signed_cached(dev_pki)]
    original = data.draw(st.sampled_from(originals))
    position = data.draw(st.integers(0, len(original) - 1))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if mutation == "flip":
        value = data.draw(st.integers(1, 255))
        mutated = (
            original[:position] + bytes([original[position] ^ value]) + original[position + 1 :]
        )
    elif mutation == "truncate":
        mutated = original[:position]
    else:
        mutated = original + bytes([position % 256])
    if original is originals[-1]:
        public, general = _both(_cms.parse_signed, _cms.parse_signed_asn1crypto, mutated)
    else:
        public, general = _both(_cms.parse_envelope, _cms.parse_envelope_asn1crypto, mutated)
    assert public == general


_CACHE: dict[str, object] = {}


def _envelopes_cached(pki: PkiDir) -> list[bytes]:
    if "envelopes" not in _CACHE:
        _CACHE["envelopes"] = _envelopes(pki)
    result = _CACHE["envelopes"]
    assert isinstance(result, list)
    return result


def _signed_cached(pki: PkiDir) -> bytes:
    if "signed" not in _CACHE:
        _CACHE["signed"] = _signed_data(pki)
    result = _CACHE["signed"]
    assert isinstance(result, bytes)
    return result


@pytest.mark.parametrize(
    "encoded",
    [
        b"\x30\x80\x00\x00",  # indefinite length (BER)
        b"\x30\x81\x01\x00",  # non-minimal length
        b"\x30\x03\x02\x01",  # longer than the buffer
        b"\x30\x00\x00",  # trailing byte
    ],
)
def test_the_der_reader_does_not_recognise_ber_or_inconsistent_lengths(encoded: bytes) -> None:
    """Anything but minimal definite lengths that fit exactly is left to the general reader."""
    with pytest.raises(_der.NotRecognised):
        _der.whole(encoded, _der.SEQUENCE).done()


@pytest.mark.parametrize(
    ("tag", "text", "expected"),
    [
        (_der.UTC_TIME, b"490101000000Z", datetime(2049, 1, 1, tzinfo=UTC)),
        (_der.UTC_TIME, b"500101000000Z", datetime(1950, 1, 1, tzinfo=UTC)),
        (_der.GENERALIZED_TIME, b"20500101000000Z", datetime(2050, 1, 1, tzinfo=UTC)),
    ],
)
def test_times_follow_the_rfc_5280_utctime_window(
    tag: int, text: bytes, expected: datetime
) -> None:
    """UTCTime years 50-99 are 19xx, 00-49 are 20xx; GeneralizedTime is read as written."""
    assert _der.read_time(tag, text) == expected


@pytest.mark.parametrize("text", [b"2401010000Z", b"240101000000+0100", b"24013200000Z"])
def test_other_time_forms_are_left_to_the_general_reader(text: bytes) -> None:
    """No seconds, an offset, or an impossible date: not recognised."""
    with pytest.raises(_der.NotRecognised):
        _der.read_time(_der.UTC_TIME, text)
