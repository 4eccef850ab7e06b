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

import orjson

from consumers.opener import Opener, VerifiedEvent
from consumers.pool import OpenerPool
from consumers.pseudonym import Pseudonymiser
from consumers.store import ApplyResult, EventRecord, PathwayStore, RejectionRecord
from contracts.errors import ContractViolation, Reason, Rejected, TransientFailure
from contracts.events import Event

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

    @property
    def acks_after_commit(self) -> bool:
        return self.disposition in (Disposition.COMMITTED, Disposition.DUPLICATE)


def pseudonymise(event: Event, pseudonymiser: Pseudonymiser, message_id: str) -> EventRecord:
    """The stored form of an event: the national id replaced by its keyed pseudonym.

    The digest that detects conflicting duplicates is keyed too, so it cannot be used
    to test guesses of the id either.
    """
    payload = event.model_dump(mode="json")
    person = payload["person"]
    person["person_key"] = pseudonymiser.pseudonym(person.pop("national_id"))
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    municipalities = getattr(event, "service_municipalities", None)
    municipality = (
        municipalities[0] if municipalities else str(getattr(event, "service_municipality", ""))
    )
    return EventRecord(
        message_id=message_id,
        event_id=str(event.event_id),
        revision=event.revision,
        record_key=str(event.record_key),
        event_type=event.event_type,
        correction=str(event.correction),
        person_key=person["person_key"],
        unit_org=event.reporting_unit_org_number,
        municipality=str(municipality),
        sender_her_id=event.sender_her_id,
        stay_id=getattr(event, "stay_id", None),
        clinical_time=event.clinical_time,
        registered_at=event.registered_at,
        digest=pseudonymiser.mac(canonical),
        payload=canonical,
    )


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
        worker processes; what it returns or raises is the same as ``opener``'s."""
        self._opener = opener
        self._pseudonymiser = pseudonymiser
        self._store = store
        self._opener_pool = opener_pool

    async def process(
        self, body: bytes, *, message_id: str | None, from_her_id: int | None
    ) -> Outcome:
        verified: VerifiedEvent | None = None
        try:
            if not message_id:
                raise _missing_message_id()
            if self._opener_pool is not None:
                verified = await self._opener_pool.open(
                    body, message_id=message_id, from_her_id=from_her_id
                )
            else:
                verified = self._opener.open(body, message_id=message_id, from_her_id=from_her_id)
            record = pseudonymise(verified.event, self._pseudonymiser, message_id)
            result = await self._store.apply(record)
        except Rejected as rejection:
            context = _context_of(verified, rejection)
            await self._record_rejection(rejection, context, message_id, from_her_id)
            return Outcome(
                Disposition.DEAD_LETTER,
                rejection.reason,
                rejection.description,
                event_id=context.get("event_id"),
                event_type=context.get("event_type"),
                sender_her_id=(
                    verified.event.sender_her_id if verified is not None else from_her_id
                ),
            )
        except TransientFailure as failure:
            return self._outcome(
                verified, Disposition.RETRY, description=str(failure), sender_her_id=from_her_id
            )
        disposition = (
            Disposition.COMMITTED if result is ApplyResult.COMMITTED else Disposition.DUPLICATE
        )
        return self._outcome(verified, disposition, sender_her_id=from_her_id)

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
        verified: VerifiedEvent | None,
        disposition: Disposition,
        *,
        reason: Reason | None = None,
        description: str = "",
        sender_her_id: int | None = None,
    ) -> Outcome:
        if verified is None:
            return Outcome(disposition, reason, description, sender_her_id=sender_her_id)
        event = verified.event
        return Outcome(
            disposition,
            reason,
            description,
            event_id=str(event.event_id),
            event_type=event.event_type,
            sender_her_id=event.sender_her_id,
            registered_at_epoch_s=event.registered_at.timestamp(),
        )


def _context_of(verified: VerifiedEvent | None, rejection: Rejected) -> dict[str, str]:
    """What names the rejected event: the verified event if it got that far (a conflicting
    duplicate), else what the opener could read from the signed letter."""
    if verified is None:
        return dict(rejection.context)
    event = verified.event
    municipalities = getattr(event, "service_municipalities", None)
    municipality = (
        municipalities[0] if municipalities else getattr(event, "service_municipality", "")
    )
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "unit_org": event.reporting_unit_org_number,
        "municipality": str(municipality),
    }


def _missing_message_id() -> Rejected:
    from contracts.errors import MalformedMessage

    return MalformedMessage("the AMQP message has no message id")
