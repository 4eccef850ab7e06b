"""Turning a validated event into the bytes and properties that go on the queue.

Pure: no I/O. ``seal`` is the expensive step (one RSA private-key operation), so a
back-fill may run it in a process pool; everything here is picklable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aio_pika.abc import FieldValue
from cryptography import x509

from contracts.envelope import Profile, SigningIdentity, seal
from contracts.events import Event, encode_event
from contracts.letter import LetterForm, Party, encode_letter
from contracts.msghead import encode_msghead
from contracts.partitioning import PARTITION_HEADER, partition_token
from contracts.pki import org_number_of, organisation_name_of
from contracts.wire import application_timestamp

__all__ = ["SealedMessage", "Sealer", "message_id_for"]

# Namespace for message ids derived from (event id, revision): a resend of the same
# event revision (retry after a lost confirm, resumed back-fill) keeps its message id,
# so the consumer's message-id dedup suppresses it.
_MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d3c1e-7d7b-4d0c-9a3e-6b6e2f4c8a10")


def message_id_for(event: Event) -> str:
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, f"{event.event_id}/{event.revision}"))


@dataclass(frozen=True)
class SealedMessage:
    """A sealed event and the clear-text metadata that may travel beside it.

    Nothing here is personal: ids, types, HER-ids and times only. ``partition_key`` is a
    keyed, truncated hash of the person (:func:`contracts.partitioning.partition_token`),
    not the id; ``None`` when the producer has no partition key (unpartitioned).
    """

    message_id: str
    body: bytes
    event_id: str
    event_type: str
    sender_her_id: int
    recipient_her_id: int
    created_at: datetime
    partition_key: str | None = None

    def headers(self) -> dict[str, FieldValue]:
        # The national bus's properties as Helsenorge.Messaging writes them: strings.
        headers: dict[str, FieldValue] = {
            "fromHerId": str(self.sender_her_id),
            "toHerId": str(self.recipient_her_id),
            "applicationTimeStamp": application_timestamp(self.created_at),
            "eventType": self.event_type,
        }
        if self.partition_key is not None:
            # The consistent-hash exchange routes on this header, not on the routing key:
            # the routing key stays "event" so sender bindings and retries are unchanged.
            headers[PARTITION_HEADER] = self.partition_key
        return headers


class Sealer:
    """Signs as the sender and encrypts to the register, one event at a time."""

    def __init__(
        self,
        signer: SigningIdentity,
        recipient_certificate: x509.Certificate,
        *,
        recipient_her_id: int,
        profile: Profile = Profile.NATIONAL,
        partition_key: bytes | None = None,
        letter_form: LetterForm = LetterForm.MSGHEAD,
    ) -> None:
        """With ``partition_key``, each message carries the person's partition token.
        ``letter_form``: MsgHead v1.2 (the national form) or the JSON letter."""
        signer_org = org_number_of(signer.certificate)
        if signer_org is None:
            raise ValueError("the signing certificate carries no organisation number")
        self._signer = signer
        self._signer_org = signer_org
        self._recipient = recipient_certificate
        self._recipient_her_id = recipient_her_id
        self._profile = profile
        self._partition_key = partition_key
        self._letter_form = letter_form
        self._signer_name = organisation_name_of(signer.certificate) or signer_org

    def seal(self, event: Event, *, created_at: datetime | None = None) -> SealedMessage:
        created = created_at or datetime.now(UTC)
        message_id = message_id_for(event)
        if self._letter_form is LetterForm.MSGHEAD:
            letter = encode_msghead(
                message_id=message_id,
                sender_her_id=event.sender_her_id,
                sender_org_number=self._signer_org,
                sender_name=self._signer_name,
                recipient_her_id=self._recipient_her_id,
                event_json=encode_event(event),
                created_at=created,
            )
        else:
            letter = encode_letter(
                message_id=message_id,
                sender=Party(her_id=event.sender_her_id, org_number=self._signer_org),
                recipient_her_id=self._recipient_her_id,
                event_json=encode_event(event),
                created_at=created,
            )
        body = seal(
            letter,
            signer=self._signer,
            recipient=self._recipient,
            profile=self._profile,
            signing_time=created,
        )
        return SealedMessage(
            message_id=message_id,
            body=body,
            event_id=str(event.event_id),
            event_type=event.event_type,
            sender_her_id=event.sender_her_id,
            recipient_her_id=self._recipient_her_id,
            created_at=created,
            partition_key=(
                None
                if self._partition_key is None
                else partition_token(event.person.national_id, self._partition_key)
            ),
        )
