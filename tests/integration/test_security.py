"""Security, end to end on a real broker: replay, revoked and foreign signers, a sender
reporting for another unit or as another sender, a re-addressed message, and no personal
data in broker metadata.

Every case goes through the public pipeline (``publish_events`` or a raw publish of
hand-made letters -> ``consume`` -> store / dead-letter queue) and asserts the store and
the dead letters' headers. Each test drains every dead letter and receipt it produced
through :func:`_drain_scanned`, which fails if any header value or AMQP property holds a
national identity number of the events used (case 6).

Broker permissions (a sender cannot read queues or publish to another sender's
exchange) are proven in ``test_broker_definitions.py`` and not repeated here.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aio_pika.abc import AbstractIncomingMessage
from cryptography.hazmat.primitives import serialization
from dlq_support import Raw, drain, letter_for, make_settings, publish_raw
from faults_support import read_store

from consumers.deadletter import (
    HEADER_DESCRIPTION,
    HEADER_ORIGINAL_MESSAGE_ID,
    HEADER_REASON,
    HEADER_SENDER_HER_ID,
)
from contracts.envelope import SigningIdentity, seal
from contracts.errors import PublishFailed, Reason
from contracts.events import Event, encode_event
from contracts.letter import Party, encode_letter
from contracts.pki import (
    ISSUING_KEY,
    PARTIES,
    SIGNING,
    DevCa,
    PkiDir,
    create_crl,
    generate_dev_pki,
    load_private_key,
)
from contracts.synth import generate_events
from contracts.topology import KPR_HER_IDS
from kpr.config import Settings
from kpr.runtime import build_sealer, consume, publish_events
from producers.publisher import PublishOutcome
from producers.sealer import SealedMessage, message_id_for

IDLE_S = 0.5
SENDER_HER_ID = PARTIES["sender"].her_id
OTHER_SENDER_HER_ID = 90002
# The unit the dev sender may *not* report for in the authorisation tests.
FOREIGN_UNIT = "310000027"
AUTHORISED_UNITS = ("310000035", "310000043", "310000051")


# -- fixtures: one PKI of ours, one foreign, one impostor chain per module ------------------


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """An unrelated dev PKI: same subject names and org numbers as ours, other keys."""
    return generate_dev_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture(scope="module")
def issuing_ca(dev_pki: PkiDir) -> DevCa:
    """Our issuing CA with its key, as ``generate_dev_pki`` wrote it (it signs the CRLs)."""
    [certificate] = dev_pki.intermediates
    return DevCa(certificate, load_private_key(dev_pki.directory / ISSUING_KEY))


@pytest.fixture(scope="module")
def impostor(dev_pki: PkiDir) -> SigningIdentity:
    """A signer under a foreign intermediate whose issuer is our root's subject name; the
    message embeds that intermediate and a self-signed foreign root with our root's exact
    subject. Names match, keys do not."""
    fake_root = DevCa.create_root()
    assert fake_root.certificate.subject == dev_pki.root.subject
    intermediate = fake_root.issue_intermediate("KPR Dev Issuing CA 2")
    assert intermediate.certificate.issuer == dev_pki.root.subject
    certificate, key = intermediate.issue_party(PARTIES["sender"], SIGNING)
    return SigningIdentity(certificate, key, (intermediate.certificate, fake_root.certificate))


# -- helpers ---------------------------------------------------------------------------------


def _settings(
    amqp_url: str, pki: PkiDir, state_dir: Path, *, grants: Sequence[str] | None = None
) -> Settings:
    """Settings for one test, on a fresh queue prefix (the URL may be a shared vhost)."""
    return make_settings(amqp_url, pki, state_dir, grants=grants).with_overrides(
        queue_prefix=f"s{secrets.token_hex(4)}."
    )


def _with_crls(settings: Settings, *crl_files: Path) -> Settings:
    """The same settings with ``KPR_CRL_FILES`` set, as an operator would configure it."""
    return settings.with_overrides(env={"KPR_CRL_FILES": ":".join(str(p) for p in crl_files)})


def _write_crl(path: Path, ca: DevCa, revoked_serials: Sequence[int]) -> Path:
    path.write_bytes(create_crl(ca, revoked_serials).public_bytes(serialization.Encoding.PEM))
    return path


def _national_ids(events: Iterable[Event]) -> frozenset[str]:
    return frozenset(event.person.national_id for event in events)


def _leaves(value: object) -> Iterable[str]:
    """Every scalar inside a header table / property value, as text."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value).decode("latin-1")
    elif value is not None:
        yield value.isoformat() if isinstance(value, datetime) else str(value)


def _personal_data_in(metadata: Mapping[str, object], national_ids: Iterable[str]) -> list[str]:
    """Names of the properties / headers whose value (at any depth) holds a national id."""
    ids = tuple(national_ids)
    return [
        name
        for name, value in metadata.items()
        if any(nid in leaf for leaf in _leaves(value) for nid in ids)
    ]


def _metadata(message: AbstractIncomingMessage) -> dict[str, object]:
    """Every AMQP property and delivery field (headers included), by name."""
    return dict(message.info())


async def _drain_scanned(
    settings: Settings, queue: str, national_ids: frozenset[str]
) -> dict[str, AbstractIncomingMessage]:
    """Take every message off ``queue`` (by message id), failing on any national id in
    its broker metadata."""
    messages = await drain(settings.amqp_url, queue)
    for message in messages:
        leaked = _personal_data_in(_metadata(message), national_ids)
        assert not leaked, f"a national id in the broker metadata: {leaked}"
    by_id = {str(m.message_id): m for m in messages}
    assert len(by_id) == len(messages)
    return by_id


async def _dead_letters(
    settings: Settings, national_ids: frozenset[str]
) -> dict[str, AbstractIncomingMessage]:
    return await _drain_scanned(settings, settings.topology().dead_letter_queue, national_ids)


async def _receipts(
    settings: Settings, sender_her_id: int, national_ids: frozenset[str]
) -> list[AbstractIncomingMessage]:
    queue = settings.topology().receipt_queue(sender_her_id)
    return list((await _drain_scanned(settings, queue, national_ids)).values())


def _assert_dead_letter(
    dead: Mapping[str, AbstractIncomingMessage],
    raw: Raw | SealedMessage,
    reason: Reason,
    *,
    says: str,
) -> None:
    """``raw`` was dead-lettered unchanged with ``reason``, and its description says why."""
    letter = dead[raw.message_id]
    headers = letter.headers
    assert letter.body == raw.body
    assert headers[HEADER_REASON] == reason.value
    assert headers[HEADER_ORIGINAL_MESSAGE_ID] == raw.message_id
    description = headers[HEADER_DESCRIPTION]
    assert isinstance(description, str)
    assert says in description, description


def _event_rows(settings: Settings) -> list[tuple[str, int, str, str]]:
    """(event id, revision, digest, committed at) of every stored event, sorted."""
    connection = sqlite3.connect(settings.store_url)
    try:
        rows = connection.execute(
            "SELECT event_id, revision, digest, committed_at FROM events ORDER BY 1, 2"
        ).fetchall()
    finally:
        connection.close()
    return [(str(a), int(b), str(c), str(d)) for a, b, c, d in rows]


def _stored_event_ids(settings: Settings) -> set[str]:
    return {row[0] for row in _event_rows(settings)}


def _with_headers(sealed: SealedMessage, **changes: object) -> Raw:
    headers: dict[str, object] = {**sealed.headers(), **changes}
    return Raw(sealed.body, sealed.message_id, headers)


async def _publish_keeping(settings: Settings, events: Sequence[Event]) -> dict[str, SealedMessage]:
    """Publish through the producer; returns what went on the wire, by message id."""
    sent: dict[str, SealedMessage] = {}

    async def keep(
        sealed: SealedMessage, outcome: PublishOutcome, error: PublishFailed | None
    ) -> None:
        del error
        if outcome is PublishOutcome.CONFIRMED:
            sent[sealed.message_id] = sealed

    report = await publish_events(settings, events, on_outcome=keep)
    assert report.all_confirmed
    assert len(sent) == len(events)
    return sent


def _sealed_by(
    signer: SigningIdentity,
    pki: PkiDir,
    event: Event,
    *,
    recipient_her_id: int,
    sender: Party | None = None,
) -> Raw:
    """``event`` in a letter signed by ``signer`` and encrypted to our register; ``sender``
    is what the letter claims (default: the dev sender)."""
    claimed = sender or Party(her_id=SENDER_HER_ID, org_number=pki.sender.info.org_number)
    message_id = str(uuid.uuid4())
    letter = encode_letter(
        message_id=message_id,
        sender=claimed,
        recipient_her_id=recipient_her_id,
        event_json=encode_event(event),
    )
    body = seal(letter, signer=signer, recipient=pki.register.encryption_certificate)
    return Raw(body, message_id, {"fromHerId": claimed.her_id, "eventType": event.event_type})


# -- the scanner itself ------------------------------------------------------------------------


def test_the_metadata_scan_finds_a_national_id_at_any_depth() -> None:
    """The privacy scan is not vacuous: a national id nested in a header table, a list or
    bytes, or in a plain property, is found; ids, reasons and HER-ids are not flagged."""
    nid = "10879306510"
    assert _personal_data_in({"headers": {"a": [{"b": nid.encode()}]}}, [nid]) == ["headers"]
    assert _personal_data_in({"correlation_id": f"x{nid}y"}, [nid]) == ["correlation_id"]
    clean = {
        "message_id": str(uuid.uuid4()),
        "headers": {"x-kpr-reason": "wrong-recipient", "fromHerId": 90001, "n": Decimal(1)},
    }
    assert _personal_data_in(clean, [nid]) == []


# -- 1. replay -------------------------------------------------------------------------------


async def test_a_replayed_message_never_changes_the_store(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """After three events committed, replays change no stored event:

    - the old message byte for byte, same message id: a duplicate (message id);
    - the same sealed bytes under a new AMQP message id: dead-lettered ``wrong-recipient``,
      because the signed letter names the original message id;
    - the same event re-sealed in a letter with a new message id: a duplicate (event id +
      revision), recorded as a received message id;
    - the producer's re-sealed resend (new signing time, new ciphertext, same message id):
      a duplicate.
    """
    settings = _settings(amqp_vhost_url, dev_pki, tmp_path)
    topology = settings.topology()
    events = generate_events(3, seed=41)
    national_ids = _national_ids(events)
    original = await _publish_keeping(settings, events)
    first = await consume(settings, until_idle_s=IDLE_S)
    assert first["committed"] == len(events)
    before = _event_rows(settings)
    assert len(before) == len(events)

    old = original[message_id_for(events[0])]
    same = _with_headers(old)
    renamed = Raw(old.body, str(uuid.uuid4()), same.headers)
    relabelled = letter_for(
        encode_event(events[0]),
        signer=dev_pki.sender.signing_identity,
        recipient=dev_pki.register.encryption_certificate,
        recipient_her_id=settings.register_her_id,
        event_type=events[0].event_type,
    )
    await publish_raw(settings.amqp_url, topology, [same, renamed, relabelled])
    [resent] = (await _publish_keeping(settings, events[:1])).values()
    assert resent.message_id == old.message_id
    assert resent.body != old.body

    counts = await consume(settings, until_idle_s=IDLE_S)

    assert counts["duplicate"] == 3
    assert counts["dead_lettered"] == 1
    assert counts["committed"] == 0
    assert _event_rows(settings) == before
    store = await read_store(settings.store_url)
    assert set(store.message_ids) == {*original, relabelled.message_id}
    assert renamed.message_id not in store.message_ids
    assert all(n == 1 for n in store.message_ids.values())
    assert all(n == 1 for n in store.event_keys.values())
    dead = await _dead_letters(settings, national_ids)
    assert set(dead) == {renamed.message_id}
    _assert_dead_letter(dead, renamed, Reason.WRONG_RECIPIENT, says="message id")
    await _receipts(settings, SENDER_HER_ID, national_ids)


# -- 2. revoked signer ------------------------------------------------------------------------


async def test_a_revoked_signer_is_dead_lettered_and_commits_without_the_crl(
    amqp_vhost_url: str, dev_pki: PkiDir, issuing_ca: DevCa, tmp_path: Path
) -> None:
    """With a CRL from our issuing CA that lists the sender's signing certificate, its
    message is dead-lettered ``revoked-certificate``; the same bytes commit under a CRL
    that lists only another certificate, and without any CRL (controls)."""
    base = _settings(amqp_vhost_url, dev_pki, tmp_path)
    revoking = _write_crl(
        tmp_path / "revoking.crl.pem",
        issuing_ca,
        [dev_pki.sender.signing_certificate.serial_number],
    )
    unrelated = _write_crl(
        tmp_path / "unrelated.crl.pem",
        issuing_ca,
        [dev_pki.register.signing_certificate.serial_number],
    )
    with_revoking_crl = _with_crls(base, revoking)
    with_unrelated_crl = _with_crls(base, unrelated)
    events = generate_events(2, seed=42)
    national_ids = _national_ids(events)
    [revoked] = (await _publish_keeping(base, events[:1])).values()

    refused = await consume(with_revoking_crl, until_idle_s=IDLE_S)

    assert refused["dead_lettered"] == 1
    assert refused["committed"] == 0
    assert _event_rows(base) == []
    dead = await _dead_letters(base, national_ids)
    _assert_dead_letter(dead, revoked, Reason.REVOKED_CERTIFICATE, says="revoked")
    [receipt] = await _receipts(base, SENDER_HER_ID, national_ids)
    assert receipt.headers["errorCondition"] == Reason.REVOKED_CERTIFICATE.national_condition

    await publish_raw(base.amqp_url, base.topology(), [_with_headers(revoked)])
    accepted_elsewhere = await consume(with_unrelated_crl, until_idle_s=IDLE_S)
    assert accepted_elsewhere["committed"] == 1

    [control] = (await _publish_keeping(base, events[1:])).values()
    accepted = await consume(base, until_idle_s=IDLE_S)
    assert accepted["committed"] == 1
    assert _stored_event_ids(base) == {str(e.event_id) for e in events}
    assert control.message_id in (await read_store(base.store_url)).message_ids
    assert await _dead_letters(base, national_ids) == {}


# -- 3. foreign CA ------------------------------------------------------------------------------


async def test_a_signer_from_a_foreign_ca_is_untrusted_whatever_the_message_embeds(
    amqp_vhost_url: str,
    dev_pki: PkiDir,
    other_pki: PkiDir,
    impostor: SigningIdentity,
    tmp_path: Path,
) -> None:
    """A signer from another dev PKI (same subject names and org number as ours, other
    keys), and a signer whose message embeds a foreign intermediate issued in our root's
    name plus a self-signed root with our root's exact subject: both ``untrusted-certificate``,
    because embedded certificates are hints only. An honest message in the same run commits."""
    settings = _settings(amqp_vhost_url, dev_pki, tmp_path)
    her = settings.register_her_id
    events = generate_events(3, seed=43)
    national_ids = _national_ids(events)
    foreign = _sealed_by(
        other_pki.sender.signing_identity, dev_pki, events[0], recipient_her_id=her
    )
    forged_chain = _sealed_by(impostor, dev_pki, events[1], recipient_her_id=her)
    await publish_raw(settings.amqp_url, settings.topology(), [foreign, forged_chain])
    await _publish_keeping(settings, events[2:])

    counts = await consume(settings, until_idle_s=IDLE_S)

    assert counts["dead_lettered"] == 2
    assert counts["committed"] == 1
    assert _stored_event_ids(settings) == {str(events[2].event_id)}
    dead = await _dead_letters(settings, national_ids)
    assert set(dead) == {foreign.message_id, forged_chain.message_id}
    for raw in (foreign, forged_chain):
        _assert_dead_letter(dead, raw, Reason.UNTRUSTED_CERTIFICATE, says="no chain")
    assert len(await _receipts(settings, SENDER_HER_ID, national_ids)) == 2


# -- 4. a sender reporting for another unit, or as another sender ------------------------------


async def test_a_sender_cannot_report_for_a_unit_or_as_a_sender_it_is_not(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """The dev sender may report for three units, not for ``FOREIGN_UNIT``:

    - an honest letter for the foreign unit: ``sender-not-authorised``;
    - a letter that claims the foreign unit's organisation as sender, signed with the dev
      sender's certificate: ``wrong-recipient`` (the signer is not the signed sender);
    - a valid message whose AMQP ``fromHerId`` is forged to another HER-id: ``wrong-recipient``;
    - a letter and header claiming another sender HER-id for an event of the dev sender:
      ``sender-not-authorised``;
    - event, letter and header all claiming another sender's HER-id, consistently, signed
      with the dev sender's certificate: ``sender-not-authorised`` (the HER-id is not
      registered to the signer's organisation).

    Only the control event from an authorised unit is stored."""
    settings = _settings(amqp_vhost_url, dev_pki, tmp_path, grants=AUTHORISED_UNITS)
    her = settings.register_her_id
    events = generate_events(40, seed=44)
    national_ids = _national_ids(events)
    foreign_unit = [e for e in events if e.reporting_unit_org_number == FOREIGN_UNIT]
    authorised = [e for e in events if e.reporting_unit_org_number in AUTHORISED_UNITS]
    assert len(foreign_unit) >= 2
    assert len(authorised) >= 4
    sender = dev_pki.sender
    [honest] = (await _publish_keeping(settings, foreign_unit[:1])).values()
    claims_unit = _sealed_by(
        sender.signing_identity,
        dev_pki,
        foreign_unit[1],
        recipient_her_id=her,
        sender=Party(her_id=SENDER_HER_ID, org_number=FOREIGN_UNIT),
    )
    forged_header = _with_headers(
        build_sealer(settings).seal(authorised[0]), fromHerId=OTHER_SENDER_HER_ID
    )
    other_sender = _sealed_by(
        sender.signing_identity,
        dev_pki,
        authorised[1],
        recipient_her_id=her,
        sender=Party(her_id=OTHER_SENDER_HER_ID, org_number=sender.info.org_number),
    )
    posing = _sealed_by(
        sender.signing_identity,
        dev_pki,
        authorised[3].model_copy(update={"sender_her_id": OTHER_SENDER_HER_ID}),
        recipient_her_id=her,
        sender=Party(her_id=OTHER_SENDER_HER_ID, org_number=sender.info.org_number),
    )
    await publish_raw(
        settings.amqp_url, settings.topology(), [claims_unit, forged_header, other_sender, posing]
    )
    await _publish_keeping(settings, authorised[2:3])

    counts = await consume(settings, until_idle_s=IDLE_S)

    assert counts["dead_lettered"] == 5
    assert counts["committed"] == 1
    assert _stored_event_ids(settings) == {str(authorised[2].event_id)}
    dead = await _dead_letters(settings, national_ids)
    assert len(dead) == 5
    _assert_dead_letter(dead, honest, Reason.SENDER_NOT_AUTHORISED, says=FOREIGN_UNIT)
    _assert_dead_letter(dead, claims_unit, Reason.WRONG_RECIPIENT, says="another organisation")
    _assert_dead_letter(dead, forged_header, Reason.WRONG_RECIPIENT, says="sender HER-id")
    _assert_dead_letter(dead, other_sender, Reason.SENDER_NOT_AUTHORISED, says="another sender")
    _assert_dead_letter(dead, posing, Reason.SENDER_NOT_AUTHORISED, says="not registered")
    assert dead[honest.message_id].headers[HEADER_SENDER_HER_ID] == SENDER_HER_ID
    to_signer = await _receipts(settings, SENDER_HER_ID, national_ids)
    assert {r.headers["originalMessageId"] for r in to_signer} == {
        honest.message_id,
        claims_unit.message_id,
    }
    # Drained for the privacy scan only: these receipts follow the claimed HER-id (the
    # unverified header, or the letter's), which the consumer cannot tie to the signer.
    await _receipts(settings, OTHER_SENDER_HER_ID, national_ids)


# -- 5. re-addressed ----------------------------------------------------------------------------


async def test_a_letter_signed_for_another_register_is_refused_when_encrypted_to_us(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """Letters the dev sender signed for the production and the QA register, re-encrypted
    to our key (what anyone who could open them could do): ``wrong-recipient``, nothing
    stored; the same event addressed to us commits."""
    settings = _settings(amqp_vhost_url, dev_pki, tmp_path)
    assert settings.register_her_id == KPR_HER_IDS["test"]
    events = generate_events(1, seed=45)
    national_ids = _national_ids(events)
    signer = dev_pki.sender.signing_identity
    readdressed = [
        _sealed_by(signer, dev_pki, events[0], recipient_her_id=KPR_HER_IDS[name])
        for name in ("production", "qa")
    ]
    await publish_raw(settings.amqp_url, settings.topology(), readdressed)

    counts = await consume(settings, until_idle_s=IDLE_S)

    assert counts["dead_lettered"] == 2
    assert counts["committed"] == 0
    assert _event_rows(settings) == []
    dead = await _dead_letters(settings, national_ids)
    for raw in readdressed:
        _assert_dead_letter(dead, raw, Reason.WRONG_RECIPIENT, says="another recipient")
    assert len(await _receipts(settings, SENDER_HER_ID, national_ids)) == 2

    await _publish_keeping(settings, events)
    assert (await consume(settings, until_idle_s=IDLE_S))["committed"] == 1
    assert _stored_event_ids(settings) == {str(events[0].event_id)}
