"""The signed letter: what the sender signs, next to the event itself.

Sign-then-encrypt does not bind the recipient: anyone who can open a message could
re-encrypt the inner signed data to somebody else. So the signed content names the
sender, the recipient, the message id and the creation time, and the receiver checks
them against its own identity, the AMQP properties and the signer certificate
(:func:`check_binding`).

Wire form (JSON, UTF-8)::

    {"letter_version": 1, "message_id": "...", "created_at": "...Z",
     "sender": {"her_id": 1234, "org_number": "310000000"},
     "recipient_her_id": 8133973,
     "event": { ...the event as contracts.events encodes it... }}

The event stays a JSON object here: it is validated separately so that a broken
letter (malformed) and a broken event (contract violation) are told apart.

The same letter may come as a KITH MsgHead v1.2 (:mod:`contracts.msghead`), as the national
bus's EPJ systems send: :func:`decode_letter` reads either (XML is told by its first
byte) and says which in :attr:`Letter.form`. The JSON form stays readable through the
migration window (docs/NATIONAL_BUS.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import MalformedMessage, RecipientMismatch
from contracts.msghead import decode_msghead, is_xml

__all__ = ["Letter", "LetterForm", "Party", "check_binding", "decode_letter", "encode_letter"]

LETTER_VERSION: Literal[1] = 1


class LetterForm(StrEnum):
    """Which wire form a letter came in: a metrics label."""

    JSON = "json"
    MSGHEAD = "msghead"


class Party(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    her_id: int = Field(gt=0)
    org_number: str = Field(pattern=r"^\d{9}$")


class Letter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    letter_version: Literal[1] = LETTER_VERSION
    message_id: str = Field(min_length=1, max_length=128)
    created_at: datetime
    sender: Party
    recipient_her_id: int = Field(gt=0)
    event: dict[str, Any]
    #: Set by :func:`decode_letter`, never read from the JSON form.
    form: LetterForm = Field(default=LetterForm.JSON, exclude=True)


def encode_letter(
    *,
    message_id: str,
    sender: Party,
    recipient_her_id: int,
    event_json: bytes,
    created_at: datetime | None = None,
) -> bytes:
    """Wrap already-encoded event JSON in a letter, without decoding it again."""
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    return orjson.dumps(
        {
            "letter_version": LETTER_VERSION,
            "message_id": message_id,
            "created_at": created,
            "sender": {"her_id": sender.her_id, "org_number": sender.org_number},
            "recipient_her_id": recipient_her_id,
            "event": orjson.Fragment(event_json),
        },
        option=orjson.OPT_UTC_Z,
    )


def decode_letter(data: bytes) -> Letter:
    """Parse a letter, JSON or MsgHead; anything that is not one is :class:`MalformedMessage`."""
    if is_xml(data):
        raw: Any = {**decode_msghead(data), "form": LetterForm.MSGHEAD}
    else:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MalformedMessage("the signed content is neither JSON nor XML") from None
        if not isinstance(raw, dict):
            raise MalformedMessage("the signed content is not a JSON object")
        if "form" in raw:
            raise MalformedMessage("the letter is not well formed: form")
    try:
        return Letter.model_validate(raw)
    except ValidationError as error:
        fields = sorted({".".join(str(part) for part in e["loc"]) for e in error.errors()})
        raise MalformedMessage(f"the letter is not well formed: {', '.join(fields)}") from None


def check_binding(
    letter: Letter,
    *,
    own_her_id: int,
    signer_org_number: str | None,
    amqp_message_id: str | None = None,
    amqp_from_her_id: int | None = None,
) -> None:
    """Raise :class:`RecipientMismatch` unless the letter is bound to this delivery.

    The letter must name us, the AMQP message id and sender HER-id must equal the signed
    ones (when the transport gives them), and the signer certificate must belong to the
    organisation the letter names as sender.
    """
    if letter.recipient_her_id != own_her_id:
        raise RecipientMismatch("the signed letter is addressed to another recipient")
    if amqp_message_id is not None and amqp_message_id != letter.message_id:
        raise RecipientMismatch("the AMQP message id differs from the signed message id")
    if amqp_from_her_id is not None and amqp_from_her_id != letter.sender.her_id:
        raise RecipientMismatch("the AMQP sender HER-id differs from the signed sender")
    if signer_org_number != letter.sender.org_number:
        raise RecipientMismatch(
            "the signer certificate belongs to another organisation than the signed sender"
        )
