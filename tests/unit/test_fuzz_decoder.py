"""Hostile bytes at the message decoder: every input ends in a classified rejection.

``contracts.envelope.open_envelope`` and ``consumers.opener.Opener.open`` get random
bytes, pathological DER (10,000 nested SEQUENCE headers, indefinite lengths, a length
field claiming 2^60 bytes), and valid CMS whose signed content is garbage. Each input
must raise a :class:`~contracts.errors.Rejected` subclass (never another exception),
within a time bound, with a bounded peak of allocated memory (tracemalloc).
The truncation / bit-flip and random-bytes properties of ``open_envelope`` itself live in
``test_envelope.py``; this module adds the classes they do not cover.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import pytest
from crypto_fixtures import dev_opener, tlv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.opener import Opener
from contracts import _cms
from contracts.envelope import MAX_MESSAGE_BYTES, open_envelope, seal
from contracts.errors import MalformedMessage, MessageTooLarge, Rejected
from contracts.letter import Party, encode_letter
from contracts.pki import PkiDir, org_number_of
from contracts.synth import generate_events

TIME_BOUND_S = 2.0
MEMORY_BOUND_BYTES = 64 * 1024 * 1024  # the largest legitimate input is 1 MB
OWN_HER_ID = 8133973

ENVELOPED_DATA_OID = bytes.fromhex("06092a864886f70d010703")  # 1.2.840.113549.1.7.3


def nested_sequences(depth: int) -> bytes:
    """``depth`` SEQUENCEs each holding the next, with correct definite lengths."""
    inner = b"\x30\x00"
    for _ in range(depth):
        inner = tlv(0x30, inner)
    return inner


def content_info(content: bytes) -> bytes:
    """A ContentInfo claiming EnvelopedData, wrapping ``content`` as its [0] field."""
    return tlv(0x30, ENVELOPED_DATA_OID + tlv(0xA0, content))


def rejected_within_bounds(call: Callable[[], object]) -> Rejected:
    """Run ``call``; it must raise Rejected within the time and memory bounds."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
    except Rejected as rejection:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert elapsed < TIME_BOUND_S, f"took {elapsed:.2f} s"
        assert peak < MEMORY_BOUND_BYTES, f"peak {peak} bytes"
        return rejection
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
    pytest.fail("the input was accepted")


HOSTILE_DER: dict[str, bytes] = {
    "10,000 nested SEQUENCEs": nested_sequences(10_000),
    "10,000 nested SEQUENCEs inside a ContentInfo": content_info(nested_sequences(10_000)),
    "10,000 indefinite-length SEQUENCE headers": b"\x30\x80" * 10_000,
    "indefinite-length headers inside a ContentInfo": content_info(b"\x30\x80" * 10_000),
    "outer length 2^60": b"\x30\x88" + (2**60).to_bytes(8, "big") + b"\x06\x03\x55\x04\x03",
    "inner length 2^60": tlv(0x30, ENVELOPED_DATA_OID + b"\xa0\x88" + (2**60).to_bytes(8, "big")),
    "length of length 127": b"\x30\xff" + b"\xff" * 127,
    "length field of 126 bytes": b"\x30\xfe" + b"\x01" * 126 + b"\x00",
    "high tag number form": b"\x1f\xff\xff\xff\xff\xff\xff\xff\x7f\x00",
    "OCTET STRING of 999,000 bytes": tlv(0x04, b"\x00" * 999_000),
    "SET OF 100,000 empty SEQUENCEs": tlv(0x31, b"\x30\x00" * 100_000),
    "empty": b"",
}


@pytest.mark.parametrize("data", list(HOSTILE_DER.values()), ids=list(HOSTILE_DER))
def test_pathological_der_is_a_clean_rejection(dev_pki: PkiDir, data: bytes) -> None:
    """Deep nesting, indefinite lengths, lengths claiming 2^60 bytes: MalformedMessage, fast,
    without allocating anything near the claimed size."""
    trust = dev_pki.trust_store()
    rejection = rejected_within_bounds(
        lambda: open_envelope(data, keys=[dev_pki.register.decryption_key], trust=trust)
    )
    assert isinstance(rejection, MalformedMessage)


@pytest.fixture(scope="module")
def opener(dev_pki: PkiDir) -> Opener:
    return dev_opener(dev_pki, OWN_HER_ID)


@pytest.mark.parametrize("data", list(HOSTILE_DER.values()), ids=list(HOSTILE_DER))
def test_the_opener_rejects_pathological_der_the_same_way(opener: Opener, data: bytes) -> None:
    """The consumer's full open step classifies the same inputs as malformed."""
    rejection = rejected_within_bounds(lambda: opener.open(data, message_id="m-1"))
    assert isinstance(rejection, MalformedMessage)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096))
def test_random_bytes_at_the_opener_are_rejected(opener: Opener, data: bytes) -> None:
    """Random bytes through the whole open step: a Rejected subclass, nothing else."""
    with pytest.raises(Rejected):
        opener.open(data, message_id="m-1", from_her_id=90001)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from(
        [b"\x30\x80", b"\x30\x84\xff\xff\xff\xff", b"\x30\x82\x10\x00", content_info(b"")[:-2]]
    ),
    tail=st.binary(max_size=2048),
)
def test_der_shaped_prefixes_with_random_tails_are_rejected(
    opener: Opener, prefix: bytes, tail: bytes
) -> None:
    """Inputs that start like DER (so the parser goes further than on pure noise)."""
    with pytest.raises(Rejected):
        opener.open(prefix + tail, message_id="m-1")


def _sealed_letter(pki: PkiDir, content: bytes) -> bytes:
    return seal(
        content, signer=pki.sender.signing_identity, recipient=pki.register.encryption_certificate
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(max_size=512),
        st.text(max_size=256).map(str.encode),
        st.sampled_from(
            [
                b"null",
                b"[]",
                b"1e308",
                b'"x"',
                b"{}",
                b"[" * 2000 + b"]" * 2000,
                b'{"a":' * 2000 + b"1" + b"}" * 2000,
                b"9" * 5000,
            ]
        ),
    )
)
def test_valid_cms_with_garbage_inside_is_malformed(
    opener: Opener, dev_pki: PkiDir, garbage: bytes
) -> None:
    """Correctly signed and encrypted, but the signed content is not a letter: the
    signature holds, and the letter step refuses it as MalformedMessage."""
    rejection = rejected_within_bounds(
        lambda: opener.open(_sealed_letter(dev_pki, garbage), message_id="m-1")
    )
    assert isinstance(rejection, MalformedMessage)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=20), st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=3
    )
)
def test_a_letter_with_a_valid_event_and_extra_letter_fields_is_malformed(
    opener: Opener, dev_pki: PkiDir, extra: dict[str, int]
) -> None:
    """Extra top-level letter fields are refused (extra="forbid"), even with a valid event."""
    import orjson

    [event] = generate_events(1, seed=7)
    org = org_number_of(dev_pki.sender.signing_identity.certificate)
    assert org is not None
    letter = orjson.loads(
        encode_letter(
            message_id="m-1",
            sender=Party(her_id=event.sender_her_id, org_number=org),
            recipient_her_id=OWN_HER_ID,
            event_json=orjson.dumps(event.model_dump(mode="json")),
        )
    )
    extra = {key: value for key, value in extra.items() if key not in letter}
    if not extra:
        return
    letter.update(extra)
    with pytest.raises(MalformedMessage):
        opener.open(_sealed_letter(dev_pki, orjson.dumps(letter)), message_id="m-1")


class CountingParser:
    """A wrapper that counts calls to the CMS parser, installed only in the test."""

    def __init__(self) -> None:
        self.calls = 0
        self._inner = _cms.parse_envelope

    def __call__(self, der: bytes) -> _cms.ParsedEnvelope:
        self.calls += 1
        return self._inner(der)


def test_one_byte_over_one_megabyte_is_too_large_without_calling_the_parser(
    opener: Opener, dev_pki: PkiDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1 MB limit of the national bus is enforced before any decoding: a DER-shaped body
    of 1 MB + 1 byte is MessageTooLarge and the CMS parser is never called; at exactly
    1 MB the parser is called (the limit is the only thing that stopped it)."""
    counter = CountingParser()
    monkeypatch.setattr(_cms, "parse_envelope", counter)
    over = tlv(0x30, ENVELOPED_DATA_OID + tlv(0xA0, b"\x00" * MAX_MESSAGE_BYTES))
    over = over[: MAX_MESSAGE_BYTES + 1]
    assert len(over) == MAX_MESSAGE_BYTES + 1

    started = time.perf_counter()
    with pytest.raises(MessageTooLarge) as raised:
        opener.open(over, message_id="m-1")
    elapsed = time.perf_counter() - started
    with pytest.raises(MessageTooLarge):
        open_envelope(over, keys=[dev_pki.register.decryption_key], trust=dev_pki.trust_store())

    assert counter.calls == 0
    assert raised.value.reason.value == "too-large"
    assert elapsed < 0.05
    with pytest.raises(MalformedMessage):
        opener.open(over[:MAX_MESSAGE_BYTES], message_id="m-1")
    assert counter.calls == 1
