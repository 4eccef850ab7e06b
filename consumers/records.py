"""The stored form of an event: the national id replaced by its keyed pseudonym.

Pure (no I/O), and importable from the opener pool's worker processes, which
pseudonymise there so that only an :class:`~consumers.store.EventRecord` (primitives
and bytes, cheap to pickle) crosses back to the consumer, never the pydantic event.
"""

from __future__ import annotations

import orjson

from consumers.pseudonym import Pseudonymiser
from consumers.store import EventRecord
from contracts.envelope import SignatureForm
from contracts.events import Event
from contracts.letter import LetterForm

__all__ = ["PSEUDONYM_KEY_CHECK", "pseudonymise"]

#: What two holders of a pseudonymiser both MAC to tell whether they hold the same key,
#: without either showing the key (see :attr:`consumers.pool.OpenerPool.key_check`).
PSEUDONYM_KEY_CHECK = b"kpr pseudonym key check v1"


def pseudonymise(
    event: Event,
    pseudonymiser: Pseudonymiser,
    message_id: str,
    *,
    letter_form: LetterForm = LetterForm.JSON,
    signature_form: SignatureForm = SignatureForm.ATTRIBUTES,
) -> EventRecord:
    """The stored form of an event: the national id replaced by its keyed pseudonym.

    The digest that detects conflicting duplicates is keyed too, so it cannot be used
    to test guesses of the id either.
    """
    payload = event.model_dump(mode="json")
    person = payload["person"]
    person_key = pseudonymiser.pseudonym(person.pop("national_id"))
    person["person_key"] = person_key
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    # The first service municipality of a consultation, else the stay's municipality.
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
        person_key=person_key,
        unit_org=event.reporting_unit_org_number,
        municipality=str(municipality),
        sender_her_id=event.sender_her_id,
        stay_id=getattr(event, "stay_id", None),
        clinical_time=event.clinical_time,
        registered_at=event.registered_at,
        digest=pseudonymiser.mac(canonical),
        payload=canonical,
        letter_form=letter_form,
        signature_form=signature_form,
    )
