"""An AMQP 1.0 sender as Helsenorge.Messaging is one, against our consumer on RabbitMQ.

The sender and the receiver are python-qpid-proton's blocking client: an AMQP 1.0
implementation independent of our aio-pika (0-9-1) code. The sender attaches to the
address Helsenorge.Messaging builds for RabbitMQ (``/exchange/{namespace}/{toHerId}_async``,
``src/Helsenorge.Messaging/Amqp/AmqpConnection.cs``) and sets the properties its
``AmqpCore`` sets: string ``fromHerId``, ``toHerId``, ``applicationTimeStamp``
(``yyyy-MM-ddTHH:mm:ssK``) and ``cpaId``, the message function as subject, a free
message id, correlation id, reply-to and the CMS content type. The receipt is read the
way its error listener reads ``/amq/queue/{herId}_error``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
import pytest
from openssl_tools import openssl, openssl_encrypt, openssl_sign_as_dotnet
from prometheus_client import CollectorRegistry
from proton import Message, Timeout
from proton.utils import BlockingConnection
from support import pipeline_settings

from contracts.addressregister import dev_address_register
from contracts.apprec import AppRec, AppRecStatus, apprec_error, decode_apprec
from contracts.envelope import CONTENT_TYPE
from contracts.errors import Reason
from contracts.events import encode_event
from contracts.msghead import encode_msghead
from contracts.pki import PkiDir
from contracts.synth import generate_events
from kpr.config import Settings
from kpr.localbroker import LocalRabbitMQ
from kpr.runtime import build_sealer, consume, store_summary

#: .NET's "yyyy-MM-ddTHH:mm:ssK", as Helsenorge.Messaging formats applicationTimeStamp.
DOTNET_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def settings(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path, local_broker: LocalRabbitMQ
) -> Settings:
    # local_broker: its rabbitmq_amqp1_0 plugin is on (kpr.localbroker.DEFAULT_PLUGINS).
    return pipeline_settings(amqp_vhost_url, dev_pki, tmp_path)


def _proton(settings: Settings) -> BlockingConnection:
    """A 1.0 connection to the test's vhost (RabbitMQ reads it from the open frame)."""
    url = urlsplit(settings.amqp_url)
    vhost = url.path.lstrip("/") or "/"
    return BlockingConnection(
        f"amqp://{url.username}:{url.password}@{url.hostname}:{url.port}",
        virtual_host=f"vhost:{vhost}",
        timeout=30,
    )


def _helsenorge_message(
    body: bytes, *, message_id: str, from_her_id: int, to_her_id: int
) -> Message:
    message = Message(
        body=body,
        id=message_id,
        subject="KPR_EVENT",
        correlation_id=message_id,
        reply_to=f"{from_her_id}_async",
        content_type=CONTENT_TYPE,
        durable=True,
        properties={
            "fromHerId": str(from_her_id),
            "toHerId": str(to_her_id),
            "applicationTimeStamp": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "cpaId": str(uuid.uuid4()),
        },
    )
    message.inferred = True  # a data section, as AMQPNetLite sends a byte[] body
    return message


def _send(settings: Settings, messages: list[Message]) -> None:
    topology = settings.topology()
    connection = _proton(settings)
    try:
        sender = connection.create_sender(
            f"/exchange/{topology.bus_exchange}/{topology.bus_routing_key}"
        )
        for message in messages:
            sender.send(message)  # blocks until the broker settles it (accepted)
    finally:
        connection.close()


def _receive(settings: Settings, queue: str, count: int) -> list[Message]:
    connection = _proton(settings)
    try:
        receiver = connection.create_receiver(f"/amq/queue/{queue}")
        received = []
        for _ in range(count):
            received.append(receiver.receive(timeout=30))
            receiver.accept()
        return received
    finally:
        connection.close()


async def _declare(settings: Settings) -> None:
    """The topology, before the 1.0 sender attaches (its exchange must exist)."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await settings.topology().declare(await connection.channel())


async def test_an_amqp_1_0_sender_as_helsenorge_messaging_is_committed_and_reads_our_receipt(
    settings: Settings, dev_pki: PkiDir
) -> None:
    """Two sealed events from the 1.0 sender commit; the same message with one byte
    changed is dead-lettered, and the 1.0 receiver reads the receipt on the sender's
    error queue with the properties Helsenorge.Messaging's error listener reads."""
    await _declare(settings)
    sealer = build_sealer(settings)
    sealed = [sealer.seal(event) for event in generate_events(2, seed=1601)]
    sender_her_id = sealed[0].sender_her_id
    register = settings.register_her_id
    broken = bytearray(sealed[0].body)
    broken[len(broken) // 2] ^= 0x01
    broken_id = str(uuid.uuid4())  # any message id, as the national library sends
    messages = [
        _helsenorge_message(
            s.body, message_id=s.message_id, from_her_id=sender_her_id, to_her_id=register
        )
        for s in sealed
    ]
    messages.append(
        _helsenorge_message(
            bytes(broken), message_id=broken_id, from_her_id=sender_her_id, to_her_id=register
        )
    )
    await asyncio.to_thread(_send, settings, messages)

    registry = CollectorRegistry()
    counts = await consume(settings, until_idle_s=2.0, registry=registry)
    assert counts["committed"] == 2, counts
    assert counts["dead_lettered"] == 1, counts
    assert (await store_summary(settings)).events_committed == 2
    wire = {"wire": "amqp-1.0"}
    assert registry.get_sample_value("kpr_consumer_wire_deliveries_total", wire) == 3

    topology = settings.topology()
    [receipt] = await asyncio.to_thread(
        _receive, settings, topology.receipt_queue(sender_her_id), 1
    )
    properties = receipt.properties or {}
    assert properties["fromHerId"] == str(register)
    assert properties["toHerId"] == str(sender_her_id)
    assert properties["originalMessageId"] == broken_id
    assert properties["errorCondition"] in {r.national_condition for r in Reason}
    assert properties["errorDescription"]
    for name in ("applicationTimeStamp", "receiverTimeStamp"):
        assert DOTNET_TIMESTAMP.match(properties[name]), (name, properties[name])
    # The error listener discards an error message without a message function (subject).
    assert receipt.subject
    assert receipt.id
    assert receipt.id != broken_id
    assert receipt.correlation_id == broken_id
    body = bytes(receipt.body)
    assert (
        body[:1] == b"\x30"
    )  # a DER SignedData (openssl reads it: tests/unit/test_openssl_interop.py)


async def test_with_partitions_the_national_entry_feeds_one_partition_in_order(
    settings: Settings,
) -> None:
    """A partitioned register still takes national traffic: the bus exchange is bound to
    the partition exchange, every 1.0 message (no partition key) lands in the same one
    partition queue, in the order sent, and the partition consumers commit them all."""
    partitioned = settings.with_overrides(partitions=4, partition_standby_delay_s=0.5)
    await _declare(partitioned)
    sealer = build_sealer(partitioned)
    sealed = [sealer.seal(event) for event in generate_events(6, seed=1602)]
    register = partitioned.register_her_id
    await asyncio.to_thread(
        _send,
        partitioned,
        [
            _helsenorge_message(
                s.body, message_id=s.message_id, from_her_id=s.sender_her_id, to_her_id=register
            )
            for s in sealed
        ],
    )
    topology = partitioned.topology()
    connection = await aio_pika.connect(partitioned.amqp_url)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in (*topology.partition_queues, topology.work_queue):
            declared = await channel.declare_queue(name, passive=True)
            depths[name] = declared.declaration_result.message_count
    [(busy, depth)] = [(name, n) for name, n in depths.items() if n]
    assert busy in topology.partition_queues, depths
    assert depth == len(sealed), depths
    arrived = [m.id for m in await asyncio.to_thread(_peek_in_order, partitioned, busy)]
    assert arrived == [s.message_id for s in sealed]

    counts = await consume(partitioned, until_idle_s=2.0, registry=CollectorRegistry())
    assert counts["committed"] == len(sealed), counts
    assert (await store_summary(partitioned)).events_committed == len(sealed)


def _peek_in_order(settings: Settings, queue: str) -> list[Message]:
    """Every message of ``queue`` in order, released back to it unsettled-as-modified."""
    connection = _proton(settings)
    try:
        receiver = connection.create_receiver(f"/amq/queue/{queue}", credit=100)
        received = []
        while (message := _receive_one(receiver)) is not None:
            received.append(message)
        return received
    finally:
        connection.close()  # unsettled deliveries go back to the queue, in order


def _receive_one(receiver: Any) -> Message | None:
    try:
        message: Message = receiver.receive(timeout=2)
    except Timeout:
        return None
    return message


async def test_a_message_sealed_as_dotnet_signedcms_commits_and_its_signature_form_is_counted(
    settings: Settings, dev_pki: PkiDir, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A MsgHead letter signed by the real openssl as .NET SignedCms signs (no signed
    attributes) and encrypted with AES-256-CBC, sent by the 1.0 client: committed, with
    the signer judged at receipt time, counted as form "content" and logged so."""
    await _declare(settings)
    [event] = generate_events(1, seed=1603)
    message_id = str(uuid.uuid4())
    head = encode_msghead(
        message_id=message_id,
        sender_her_id=event.sender_her_id,
        sender_org_number=dev_pki.sender.info.org_number,
        sender_name="Testkommune",
        recipient_her_id=settings.register_her_id,
        event_json=encode_event(event),
        created_at=datetime.now(UTC),
    )
    signed = openssl_sign_as_dotnet(dev_pki, tmp_path, head, "dotnet")
    body = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    message = _helsenorge_message(
        body,
        message_id=message_id,
        from_her_id=event.sender_her_id,
        to_her_id=settings.register_her_id,
    )
    await asyncio.to_thread(_send, settings, [message])

    caplog.set_level(logging.DEBUG, logger="kpr.consumer")
    registry = CollectorRegistry()
    counts = await consume(settings, until_idle_s=2.0, registry=registry)
    assert counts["committed"] == 1, counts
    forms = {
        form: registry.get_sample_value("kpr_consumer_signatures_total", {"form": form})
        for form in ("content", "signed-attributes")
    }
    assert forms == {"content": 1.0, "signed-attributes": None}
    [logged] = [r for r in caplog.records if getattr(r, "message_id", None) == message_id]
    assert logged.__dict__["signature"] == "content"


def _openssl_open(body: bytes, pki: PkiDir, folder: Path) -> bytes:
    """The real ``openssl cms -decrypt`` with the sender's dev key, then ``-verify``
    against the dev root: the content (a failure fails the test)."""
    sealed = folder / f"apprec-{uuid.uuid4()}.der"
    sealed.write_bytes(body)
    signed = openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", sealed,
        "-recip", pki.sender.encryption_certificate_path,
        "-inkey", pki.sender.encryption_key_path,
    )  # fmt: skip
    return openssl(
        "cms", "-verify", "-binary", "-inform", "DER",
        "-CAfile", pki.root_path, "-certfile", pki.intermediate_path,
        stdin=signed,
    )  # fmt: skip


@pytest.mark.openssl
async def test_committed_and_refused_messages_get_an_apprec_the_sender_opens_with_openssl(
    settings: Settings, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """A committed and a refused message from the 1.0 sender each produce an AppRec on the
    sender's ``{herId}_async`` queue, read with the AMQP 1.0 client as a Helsenorge.Messaging
    receiver reads its queue: the real openssl decrypts it with the sender's key and verifies
    the register's signature, and its XML carries the status, the original message id and
    the reason. A refused message from a sender the address register does not know gets
    none, and the metric counts it as skipped."""
    register_file = tmp_path / "address-register.json"
    register_file.write_bytes(dev_address_register(dev_pki, absolute=True))
    settings = settings.with_overrides(address_register_file=register_file)
    await _declare(settings)
    [sealed] = [build_sealer(settings).seal(e) for e in generate_events(1, seed=1602)]
    sender_her_id = sealed.sender_her_id
    unknown_her_id = sender_her_id + 1
    register = settings.register_her_id
    broken = bytearray(sealed.body)
    broken[len(broken) // 2] ^= 0x01
    broken_id, stranger_id = str(uuid.uuid4()), str(uuid.uuid4())
    sent_at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    messages = [
        _helsenorge_message(
            sealed.body, message_id=sealed.message_id, from_her_id=sender_her_id,
            to_her_id=register,
        ),
        _helsenorge_message(
            bytes(broken), message_id=broken_id, from_her_id=sender_her_id, to_her_id=register
        ),
        _helsenorge_message(
            bytes(broken), message_id=stranger_id, from_her_id=unknown_her_id, to_her_id=register
        ),
    ]  # fmt: skip
    refused_properties = messages[1].properties
    assert refused_properties is not None
    refused_properties["applicationTimeStamp"] = "2026-12-07T10:30:00+01:00"  # .NET's offset form
    await asyncio.to_thread(_send, settings, messages)

    registry = CollectorRegistry()
    counts = await consume(settings, until_idle_s=2.0, registry=registry)
    assert counts["committed"] == 1, counts
    assert counts["dead_lettered"] == 2, counts

    def apprecs(status: str, outcome: str) -> float | None:
        labels = {"status": status, "outcome": outcome}
        return registry.get_sample_value("kpr_consumer_apprecs_total", labels)

    assert apprecs("ok", "sent") == 1
    assert apprecs("rejected", "sent") == 1
    assert apprecs("rejected", "skipped") == 1
    assert apprecs("ok", "failed") == apprecs("rejected", "failed") == 0

    topology = settings.topology()
    received = await asyncio.to_thread(_receive, settings, topology.party_queue(sender_her_id), 2)
    by_original: dict[str, AppRec] = {}
    for message in received:
        properties: dict[str, Any] = dict(message.properties or {})
        # The properties Helsenorge.Messaging gives any asynchronous message, and the
        # AppRec metadata its MetadataHelper extracts.
        assert message.subject == "APPREC"
        assert message.content_type == CONTENT_TYPE
        assert message.reply_to == f"{register}_async"
        assert message.id
        assert properties["fromHerId"] == str(register)
        assert properties["toHerId"] == str(sender_her_id)
        assert DOTNET_TIMESTAMP.match(properties["applicationTimeStamp"])
        assert properties["X-MessageInfo-Type"] == "APPREC"
        body = message.body
        assert isinstance(body, bytes | memoryview)
        xml = await asyncio.to_thread(_openssl_open, bytes(body), dev_pki, tmp_path)
        apprec = decode_apprec(xml)
        assert properties["X-MessageInfo-MsgId"] == apprec.id
        assert properties["X-MessageInfo-OriginalMsgId"] == apprec.original_message_id
        assert apprec.sender_her_id == register
        assert apprec.receiver_her_id == sender_her_id
        by_original[apprec.original_message_id] = apprec
    assert set(by_original) == {sealed.message_id, broken_id}

    ok = by_original[sealed.message_id]
    assert ok.status is AppRecStatus.OK
    assert ok.errors == ()
    refused = by_original[broken_id]
    assert refused.status is AppRecStatus.REJECTED
    assert refused.original_issued_at == sent_at  # the sender's applicationTimeStamp
    [error] = refused.errors
    assert error.code_system == "2.16.578.1.12.4.1.1.8221"
    reason = Reason(str(error.original_text).split(":", 1)[0])
    assert error.code == apprec_error(reason, "").code

    # The stranger's refusal: an error-queue receipt as before, but no AppRec queue at all.
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(topology.party_queue(unknown_her_id), passive=True)
