"""The processing context: real CMS in, one explicit disposition out (no broker needed)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from consumers import Disposition, Opener, Processor, Pseudonymiser, SqliteStore
from contracts import (
    Environment,
    Event,
    Party,
    PkiDir,
    Reason,
    SenderAuthorisation,
    encode_event,
    encode_letter,
    org_number_of,
    seal,
)
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS, generate_events

REGISTER_HER_ID = 8133973


@pytest.fixture
async def processor(dev_pki: PkiDir, tmp_path: Path) -> AsyncIterator[Processor]:
    sender_org = dev_pki.sender.info.org_number
    opener = Opener(
        keys=[dev_pki.register.decryption_key],
        trust=dev_pki.trust_store(),
        authorisation=SenderAuthorisation.from_mapping(
            {sender_org: list(DEFAULT_UNIT_ORG_NUMBERS[:-1])}
        ),
        own_her_id=REGISTER_HER_ID,
        environment=Environment.TEST,
    )
    async with SqliteStore(tmp_path / "store.sqlite3") as store:
        yield Processor(opener, Pseudonymiser(b"p" * 32), store)


def _sealed(pki: PkiDir, event_json: bytes, message_id: str) -> bytes:
    org = org_number_of(pki.sender.signing_identity.certificate)
    assert org is not None
    letter = encode_letter(
        message_id=message_id,
        sender=Party(her_id=90001, org_number=org),
        recipient_her_id=REGISTER_HER_ID,
        event_json=event_json,
    )
    return seal(
        letter, signer=pki.sender.signing_identity, recipient=pki.register.encryption_certificate
    )


def _event(unit_org: str = DEFAULT_UNIT_ORG_NUMBERS[0]) -> Event:
    return next(
        e
        for e in generate_events(40, seed=31, kinds=["kad"])
        if e.reporting_unit_org_number == unit_org
    )


def _rejections(tmp_path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "store.sqlite3") as connection:
        return connection.execute(
            "SELECT reason, event_type, unit_org, municipality, rule, field FROM rejections"
        ).fetchall()


async def test_a_valid_message_commits_once(processor: Processor, dev_pki: PkiDir) -> None:
    """Commit, then the same delivery again is a duplicate; the outcome names the event."""
    event = _event()
    body = _sealed(dev_pki, encode_event(event), "m-1")
    first = await processor.process(body, message_id="m-1", from_her_id=90001)
    again = await processor.process(body, message_id="m-1", from_her_id=90001)
    assert first.disposition is Disposition.COMMITTED
    assert first.event_id == str(event.event_id)
    assert again.disposition is Disposition.DUPLICATE


async def test_an_invalid_event_is_dead_lettered_and_still_named(
    processor: Processor, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """A contract violation after a good signature: the receipt and the reports can still
    say which event, unit and municipality, and which rule it broke."""
    event = _event()
    data = event.model_dump(mode="json")
    data["discharge_diagnoses"] = [{"system": "ICD-10", "code": "R74"}]  # ICPC-2 code as ICD-10
    data["event_type"] = "kad.discharge"
    data["discharged_at"] = data["admitted_at"]
    data["discharged_to"] = data.pop("referred_by")
    data.pop("admission_diagnoses")
    body = _sealed(dev_pki, orjson.dumps(data), "m-2")

    outcome = await processor.process(body, message_id="m-2", from_her_id=90001)

    assert outcome.disposition is Disposition.DEAD_LETTER
    assert outcome.reason is Reason.INVALID_CONTRACT
    assert outcome.event_id == str(event.event_id)
    assert outcome.event_type == "kad.discharge"
    [(reason, event_type, unit_org, municipality, rule, field)] = _rejections(tmp_path)
    assert (reason, event_type, unit_org) == (
        "invalid-contract",
        "kad.discharge",
        event.reporting_unit_org_number,
    )
    assert municipality == data["service_municipalities"][0]
    assert rule
    assert "discharge_diagnoses" in str(field)


async def test_a_sender_reporting_for_a_foreign_unit_is_refused_as_spoofing(
    processor: Processor, dev_pki: PkiDir
) -> None:
    """The signer is not authorised for the last synthetic unit: sender-not-authorised."""
    event = _event(DEFAULT_UNIT_ORG_NUMBERS[-1])
    body = _sealed(dev_pki, encode_event(event), "m-3")
    outcome = await processor.process(body, message_id="m-3", from_her_id=90001)
    assert outcome.reason is Reason.SENDER_NOT_AUTHORISED
    assert outcome.event_id == str(event.event_id)


async def test_garbage_is_malformed_and_names_nothing(processor: Processor, tmp_path: Path) -> None:
    """Bytes that are not CMS: malformed, recorded without any event context."""
    outcome = await processor.process(
        b"\x30\x03garbage", message_id=str(uuid.uuid4()), from_her_id=90001
    )
    assert outcome.disposition is Disposition.DEAD_LETTER
    assert outcome.reason is Reason.MALFORMED
    assert outcome.event_id is None
    assert _rejections(tmp_path) == [("malformed", None, None, None, None, None)]
