"""From queue bytes to a verified, authorised, valid event. Pure: no I/O.

The order is fixed by what may be trusted when:

1. size cap, before any parsing;
2. decrypt and verify the inner signature and the signer's chain (nothing decrypted is
   looked at before the signature holds: CBC is malleable);
3. the letter binds the message to us, to this AMQP message and to the signer;
4. the signer may report for the unit the event names (anything else is spoofing);
5. the event satisfies the contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.envelope import (
    MAX_MESSAGE_BYTES,
    DecryptionKey,
    Profile,
    SignatureForm,
    open_envelope,
)
from contracts.errors import MessageTooLarge, Rejected, SenderNotAuthorised
from contracts.events import Environment, Event, parse_event
from contracts.letter import Letter, check_binding, decode_letter
from contracts.pki import org_number_of
from contracts.trust import SenderAuthorisation, TrustStore

__all__ = ["Opener", "VerifiedEvent", "letter_context"]

_EVENT_TYPES = frozenset({"kad.admission", "kad.discharge", "hst.consultation"})


@dataclass(frozen=True)
class VerifiedEvent:
    event: Event
    letter: Letter
    signer_org_number: str
    signing_time: datetime
    profile: Profile
    #: What the signature covers: our signed attributes, or (.NET SignedCms) the content,
    #: whose signer was then judged at receipt time.
    signature_form: SignatureForm = SignatureForm.ATTRIBUTES


class Opener:
    def __init__(
        self,
        *,
        keys: Sequence[DecryptionKey],
        trust: TrustStore,
        authorisation: SenderAuthorisation,
        own_her_id: int,
        environment: Environment,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._keys = tuple(keys)
        self._trust = trust
        self._authorisation = authorisation
        self._own_her_id = own_her_id
        self._environment = environment
        self._max_message_bytes = max_message_bytes

    def open(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        from_her_id: int | None = None,
    ) -> VerifiedEvent:
        """Raise a :class:`~contracts.errors.Rejected` subclass, or return the event."""
        if len(body) > self._max_message_bytes:
            raise MessageTooLarge(
                f"the message is {len(body)} bytes, over the {self._max_message_bytes} limit"
            )
        opened = open_envelope(body, keys=self._keys, trust=self._trust)
        signer_org = org_number_of(opened.signer)
        letter = decode_letter(opened.content)
        check_binding(
            letter,
            own_her_id=self._own_her_id,
            signer_org_number=signer_org,
            amqp_message_id=message_id,
            amqp_from_her_id=from_her_id,
        )
        assert signer_org is not None  # check_binding compared it with the letter's sender
        try:
            event = parse_event(letter.event, environment=self._environment)
            if event.sender_her_id != letter.sender.her_id:
                raise SenderNotAuthorised("the event names another sender than the signed letter")
            self._authorisation.check_sender(letter.sender.her_id, signer_org)
            self._authorisation.check(signer_org, event.reporting_unit_org_number)
        except Rejected as rejection:
            # The signature held, so what the letter says of the event may name it in the
            # receipt and the reports, even though the event itself is refused.
            rejection.context.update(letter_context(letter.event))
            raise
        return VerifiedEvent(
            event=event,
            letter=letter,
            signer_org_number=signer_org,
            signing_time=opened.signing_time,
            profile=opened.profile,
            signature_form=opened.signature_form,
        )


def letter_context(event: Mapping[str, Any]) -> dict[str, str]:
    """Identifying, non-personal fields of an event that failed validation, read loosely:
    only values of the expected shape are taken (an id, a type, 9 or 4 digits)."""
    context: dict[str, str] = {}
    event_id = event.get("event_id")
    if isinstance(event_id, str) and _UUID.fullmatch(event_id):
        context["event_id"] = event_id
    event_type = event.get("event_type")
    if event_type in _EVENT_TYPES:
        context["event_type"] = str(event_type)
    unit = event.get("unit")
    org = unit.get("org_number") if isinstance(unit, Mapping) else None
    if isinstance(org, str) and _DIGITS_9.fullmatch(org):
        context["unit_org"] = org
    municipalities = event.get("service_municipalities")
    municipality = (
        municipalities[0]
        if isinstance(municipalities, list) and municipalities
        else event.get("service_municipality")
    )
    if isinstance(municipality, str) and _DIGITS_4.fullmatch(municipality):
        context["municipality"] = municipality
    return context


_UUID = re.compile(r"[0-9a-fA-F-]{36}")
_DIGITS_9 = re.compile(r"\d{9}")
_DIGITS_4 = re.compile(r"\d{4}")
