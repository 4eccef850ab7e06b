"""The processing context: one delivery in, one explicit decision out.

:meth:`Processor.process` runs open -> validate -> pseudonymise -> dedup + apply and
returns an :class:`Outcome` whose :class:`Disposition` is the *only* thing the consumer
looks at to ack, dead-letter or retry. The mapping from failure to disposition is a
lookup on the exception tree (:mod:`contracts.errors`):

=========================  ================================================
``Rejected``               ``DEAD_LETTER`` with the exception's reason
``TransientFailure``       ``RETRY`` (delay queue, then dead-letter)
anything else (our bug)    not caught: the consumer requeues, and the quorum
                           queue's delivery limit dead-letters a poison message
=========================  ================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum, unique

from consumers.opener import Opener
from consumers.pool import OpenerPool
from consumers.pseudonym import Pseudonymiser
from consumers.records import PSEUDONYM_KEY_CHECK, pseudonymise
from consumers.store import ApplyResult, EventRecord, PathwayStore, RejectionRecord
from contracts.envelope import SignatureForm
from contracts.errors import ContractViolation, Reason, Rejected, TransientFailure
from contracts.letter import LetterForm

__all__ = ["Disposition", "Outcome", "Processor", "pseudonymise"]

log = logging.getLogger("kpr.consumer")


@unique
class Disposition(StrEnum):
    COMMITTED = "committed"
    DUPLICATE = "duplicate"
    DEAD_LETTER = "dead_lettered"
    RETRY = "retried"


@dataclass(frozen=True)
class Outcome:
    disposition: Disposition
    reason: Reason | None = None
    description: str = ""
    event_id: str | None = None
    event_type: str | None = None
    sender_her_id: int | None = None
    registered_at_epoch_s: float | None = None
    #: True when a trusted signature established ``sender_her_id`` (the letter was
    #: opened); False when it is only the unsigned ``fromHerId`` header.
    sender_verified: bool = False
    municipality: str | None = None
    clinical_epoch_s: float | None = None
    letter_form: LetterForm | None = None
    signature_form: SignatureForm | None = None

    @property
    def acks_after_commit(self) -> bool:
        return self.disposition in (Disposition.COMMITTED, Disposition.DUPLICATE)


class Processor:
    def __init__(
        self,
        opener: Opener,
        pseudonymiser: Pseudonymiser,
        store: PathwayStore,
        *,
        opener_pool: OpenerPool | None = None,
    ) -> None:
        """With ``opener_pool``, the open step (decrypt, verify, validate) runs in its
        worker processes; what it returns or raises is the same as ``opener``'s. If the
        pool pseudonymises too (:attr:`OpenerPool.pseudonymises`), that also runs there.

        Raises ``ValueError`` if the pool pseudonymises with another key than
        ``pseudonymiser``.
        """
        if (
            opener_pool is not None
            and opener_pool.key_check is not None
            and opener_pool.key_check != pseudonymiser.mac(PSEUDONYM_KEY_CHECK)
        ):
            raise ValueError("the opener pool pseudonymises with another key")
        self._opener = opener
        self._pseudonymiser = pseudonymiser
        self._store = store
        self._opener_pool = opener_pool

    async def process(
        self, body: bytes, *, message_id: str | None, from_her_id: int | None
    ) -> Outcome:
        record: EventRecord | None = None
        try:
            if not message_id:
                raise _missing_message_id()
            record = await self._open(body, message_id=message_id, from_her_id=from_her_id)
            result = await self._store.apply(record)
        except Rejected as rejection:
            context = _context_of(record, rejection)
            await self._record_rejection(rejection, context, message_id, from_her_id)
            return Outcome(
                Disposition.DEAD_LETTER,
                rejection.reason,
                rejection.description,
                event_id=context.get("event_id"),
                event_type=context.get("event_type"),
                sender_her_id=record.sender_her_id if record is not None else from_her_id,
                # The opener names the event only once the signature held (opener.py).
                sender_verified=record is not None or bool(rejection.context),
                municipality=context.get("municipality"),
            )
        except TransientFailure as failure:
            return self._outcome(
                record, Disposition.RETRY, description=str(failure), sender_her_id=from_her_id
            )
        disposition = (
            Disposition.COMMITTED if result is ApplyResult.COMMITTED else Disposition.DUPLICATE
        )
        return self._outcome(record, disposition, sender_her_id=from_her_id)

    async def _open(self, body: bytes, *, message_id: str, from_her_id: int | None) -> EventRecord:
        """Open and pseudonymise: in the pool's workers if there is a pool, else here."""
        pool = self._opener_pool
        if pool is not None and pool.pseudonymises:
            return await pool.open_record(body, message_id=message_id, from_her_id=from_her_id)
        if pool is not None:
            verified = await pool.open(body, message_id=message_id, from_her_id=from_her_id)
        else:
            verified = self._opener.open(body, message_id=message_id, from_her_id=from_her_id)
        return pseudonymise(
            verified.event,
            self._pseudonymiser,
            message_id,
            letter_form=verified.letter.form,
            signature_form=verified.signature_form,
        )

    async def _record_rejection(
        self,
        rejection: Rejected,
        context: dict[str, str],
        message_id: str | None,
        from_her_id: int | None,
    ) -> None:
        """Count the rejection for data-quality reports; statistics never block dead-lettering."""
        violation = rejection if isinstance(rejection, ContractViolation) else None
        try:
            await self._store.record_rejection(
                RejectionRecord(
                    message_id=message_id or "",
                    reason=rejection.reason.value,
                    sender_her_id=from_her_id,
                    event_type=context.get("event_type"),
                    unit_org=context.get("unit_org"),
                    municipality=context.get("municipality"),
                    rejected_at=datetime.now(UTC),
                    rule=violation.rule if violation is not None else None,
                    field=violation.field if violation is not None else None,
                )
            )
        except TransientFailure:
            log.warning(
                "could not record a rejection for the reports", extra={"message_id": message_id}
            )

    @staticmethod
    def _outcome(
        record: EventRecord | None,
        disposition: Disposition,
        *,
        reason: Reason | None = None,
        description: str = "",
        sender_her_id: int | None = None,
    ) -> Outcome:
        if record is None:
            return Outcome(disposition, reason, description, sender_her_id=sender_her_id)
        return Outcome(
            disposition,
            reason,
            description,
            event_id=record.event_id,
            event_type=record.event_type,
            sender_her_id=record.sender_her_id,
            registered_at_epoch_s=record.registered_at.timestamp(),
            sender_verified=True,
            municipality=record.municipality,
            clinical_epoch_s=record.clinical_time.timestamp(),
            letter_form=record.letter_form,
            signature_form=record.signature_form,
        )


def _context_of(record: EventRecord | None, rejection: Rejected) -> dict[str, str]:
    """What names the rejected event: the verified event if it got that far (a conflicting
    duplicate), else what the opener could read from the signed letter."""
    if record is None:
        return dict(rejection.context)
    return {
        "event_id": record.event_id,
        "event_type": record.event_type,
        "unit_org": record.unit_org,
        "municipality": record.municipality,
    }


def _missing_message_id() -> Rejected:
    from contracts.errors import MalformedMessage

    return MalformedMessage("the AMQP message has no message id")
