"""The signed letter binds sender, recipient and message id to the event."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from contracts.errors import MalformedMessage, RecipientMismatch
from contracts.letter import Party, check_binding, decode_letter, encode_letter

SENDER = Party(her_id=90001, org_number="310000000")


def _letter(**overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "message_id": "m-1",
        "sender": SENDER,
        "recipient_her_id": 8133973,
        "event_json": b'{"event_type":"kad.admission","n":1}',
        "created_at": datetime(2025, 8, 1, 12, tzinfo=UTC),
    }
    arguments.update(overrides)
    return encode_letter(**arguments)  # type: ignore[arg-type]


def test_a_letter_round_trips_with_the_event_json_embedded_verbatim() -> None:
    """The event bytes are spliced in, not re-encoded, and come back as the same object."""
    letter = decode_letter(_letter())
    assert letter.message_id == "m-1"
    assert letter.sender == SENDER
    assert letter.recipient_her_id == 8133973
    assert letter.event == {"event_type": "kad.admission", "n": 1}
    assert letter.created_at == datetime(2025, 8, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1, 2]", b"{}", orjson.dumps({"letter_version": 2})],
)
def test_anything_but_a_letter_is_malformed(data: bytes) -> None:
    """Non-JSON, non-objects and incomplete letters are rejected as malformed."""
    with pytest.raises(MalformedMessage):
        decode_letter(data)


def test_an_extra_field_in_the_letter_is_malformed() -> None:
    """The letter is strict: unknown fields are not silently carried."""
    raw = orjson.loads(_letter())
    raw["smuggled"] = True
    with pytest.raises(MalformedMessage, match="smuggled"):
        decode_letter(orjson.dumps(raw))


def test_binding_holds_for_the_right_recipient_message_and_signer() -> None:
    """No exception when everything agrees."""
    check_binding(
        decode_letter(_letter()),
        own_her_id=8133973,
        signer_org_number="310000000",
        amqp_message_id="m-1",
        amqp_from_her_id=90001,
    )


@pytest.mark.parametrize(
    ("own", "signer", "message_id", "from_her_id"),
    [
        (122612, "310000000", "m-1", 90001),  # addressed to another register
        (8133973, "310000019", "m-1", 90001),  # signed by another organisation
        (8133973, None, "m-1", 90001),  # signer certificate without organisation number
        (8133973, "310000000", "m-2", 90001),  # AMQP message id swapped
        (8133973, "310000000", "m-1", 90002),  # AMQP sender header forged
    ],
)
def test_any_mismatch_is_a_recipient_mismatch(
    own: int, signer: str | None, message_id: str, from_her_id: int
) -> None:
    """Re-addressed, re-signed or re-labelled messages are refused."""
    with pytest.raises(RecipientMismatch):
        check_binding(
            decode_letter(_letter()),
            own_her_id=own,
            signer_org_number=signer,
            amqp_message_id=message_id,
            amqp_from_her_id=from_her_id,
        )
