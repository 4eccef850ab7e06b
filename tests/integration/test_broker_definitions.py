"""The broker definitions (``infra/broker/definitions.json``) on a real RabbitMQ.

The file is imported into the session's local broker with ``rabbitmqctl import_definitions``;
then each user is driven with aio-pika to show that its permissions are what the
operations guide promises: a sender writes only to its own inbound exchange and reads
only its own receipt queue, the consumer can declare the code's topology over the
pre-declared one (no PRECONDITION_FAILED, no ACCESS_REFUSED), the operator reads only
the dead-letter queue and writes only to the work exchange.

The virtual host named in the file (``kpr``) belongs to this module alone; it and the
file's users are removed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelAccessRefused

from consumers.receipts import Receipt, ReceiptSender, ReceiptSigner
from contracts.errors import Reason
from contracts.pki import PkiDir
from contracts.topology import Topology
from kpr.localbroker import LocalRabbitMQ

DEFINITIONS = Path(__file__).resolve().parents[2] / "infra" / "broker" / "definitions.json"

# The documented development passwords (docs/OPERATIONS.md); production replaces them.
DEV_PASSWORDS = {
    "sender-90001": "sender-90001-dev",
    "sender-90002": "sender-90002-dev",
    "kpr-consumer": "kpr-consumer-dev",
    "kpr-operator": "kpr-operator-dev",
    "kpr-admin": "kpr-admin-dev",
}
TOPOLOGY = Topology()


def _definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def kpr_vhost(local_broker: LocalRabbitMQ) -> Iterator[str]:
    """Import the definitions; yield the vhost's name; delete the vhost and users after."""
    definitions = _definitions()
    (vhost,) = (entry["name"] for entry in definitions["vhosts"])
    local_broker.ctl("import_definitions", str(DEFINITIONS))
    try:
        yield vhost
    finally:
        local_broker.ctl("delete_vhost", vhost)
        for user in definitions["users"]:
            local_broker.ctl("delete_user", user["name"])


@pytest.fixture
def connect_as(local_broker: LocalRabbitMQ, kpr_vhost: str) -> Any:
    """``await connect_as(user)``: a connection to the kpr vhost as one of the file's users."""
    opened: list[AbstractConnection] = []

    async def connect(user: str) -> AbstractConnection:
        url = f"amqp://{user}:{DEV_PASSWORDS[user]}@127.0.0.1:{local_broker.amqp_port}/{kpr_vhost}"
        connection = await aio_pika.connect(url)
        opened.append(connection)
        return connection

    return connect, opened


@pytest.fixture
async def as_user(connect_as: Any) -> AsyncIterator[Any]:
    """``await as_user(user)``: a confirming channel as that user; connections closed after."""
    connect, opened = connect_as

    async def channel(user: str) -> AbstractChannel:
        connection: AbstractConnection = await connect(user)
        return await connection.channel(publisher_confirms=True, on_return_raises=True)

    yield channel
    for connection in opened:
        await connection.close()


def _message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def _publish(channel: AbstractChannel, exchange: str, body: bytes) -> None:
    target = await channel.get_exchange(exchange, ensure=False)
    await target.publish(_message(body), routing_key=TOPOLOGY.routing_key, mandatory=True)


async def _get(channel: AbstractChannel, queue: str) -> aio_pika.abc.AbstractIncomingMessage | None:
    source = await channel.get_queue(queue, ensure=False)
    return await source.get(no_ack=False, fail=False, timeout=5)


async def test_every_dev_password_opens_its_user(as_user: Any) -> None:
    """Each password hash in the file is the hash of the documented development password."""
    for user in DEV_PASSWORDS:
        channel = await as_user(user)
        assert not channel.is_closed


async def test_sender_publishes_to_own_inbound_exchange_and_reaches_work_queue(
    as_user: Any,
) -> None:
    """A confirmed publish to ``kpr.in.90001`` reaches the work queue through ``kpr.events``."""
    sender = await as_user("sender-90001")
    consumer = await as_user("kpr-consumer")
    body = b"definitions-test-route"
    await _publish(sender, TOPOLOGY.inbound_exchange(90001), body)
    message = await _get(consumer, TOPOLOGY.work_queue)
    assert message is not None
    assert message.body == body
    await message.ack()


@pytest.mark.parametrize(
    "exchange",
    [TOPOLOGY.inbound_exchange(90002), TOPOLOGY.work_exchange, TOPOLOGY.dead_letter_exchange],
)
async def test_sender_cannot_publish_elsewhere(as_user: Any, exchange: str) -> None:
    """Publishing as sender-90001 anywhere but its own inbound exchange closes the channel (403)."""
    sender = await as_user("sender-90001")
    with pytest.raises(ChannelAccessRefused):
        await _publish(sender, exchange, b"not allowed")


@pytest.mark.parametrize("queue", [TOPOLOGY.work_queue, TOPOLOGY.dead_letter_queue, "90002_error"])
async def test_sender_cannot_read_other_queues(as_user: Any, queue: str) -> None:
    """basic.get as sender-90001 on the work, dead-letter or another sender's queue is refused."""
    sender = await as_user("sender-90001")
    with pytest.raises(ChannelAccessRefused):
        await _get(sender, queue)


async def test_sender_cannot_consume_work_queue(as_user: Any) -> None:
    """basic.consume as a sender on the work queue is refused."""
    sender = await as_user("sender-90001")
    queue = await sender.get_queue(TOPOLOGY.work_queue, ensure=False)

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()

    with pytest.raises(ChannelAccessRefused):
        await queue.consume(take)


async def test_sender_reads_own_receipt_queue(as_user: Any) -> None:
    """sender-90001 may read ``90001_error``, where rejection receipts for it arrive."""
    sender = await as_user("sender-90001")
    consumer = await as_user("kpr-consumer")
    receipts = await consumer.get_exchange(TOPOLOGY.receipt_exchange, ensure=False)
    await receipts.publish(_message(b"receipt"), routing_key="90001", mandatory=True)
    message = await _get(sender, TOPOLOGY.receipt_queue(90001))
    assert message is not None
    assert message.body == b"receipt"
    await message.ack()


async def test_sender_reads_own_apprecs_and_the_consumer_reaches_them(as_user: Any) -> None:
    """kpr-consumer finds ``90001_async`` (passively: it may not configure it) and publishes
    an AppRec there through the bus exchange; sender-90001 reads it, sender-90002 may not."""
    sender = await as_user("sender-90001")
    consumer = await as_user("kpr-consumer")
    await consumer.declare_queue(TOPOLOGY.party_queue(90001), passive=True)
    bus = await consumer.get_exchange(TOPOLOGY.bus_exchange, ensure=False)
    await bus.publish(
        _message(b"apprec"), routing_key=TOPOLOGY.party_routing_key(90001), mandatory=True
    )
    message = await _get(sender, TOPOLOGY.party_queue(90001))
    assert message is not None
    assert message.body == b"apprec"
    await message.ack()
    other = await as_user("sender-90002")
    with pytest.raises(ChannelAccessRefused):
        await _get(other, TOPOLOGY.party_queue(90001))


async def test_the_consumers_receipt_sender_reaches_a_predeclared_error_queue(
    connect_as: Any, as_user: Any, dev_pki: PkiDir
) -> None:
    """ReceiptSender as kpr-consumer finds ``90001_error`` passively (declaring an existing
    queue needs configure permission, which the consumer's user has not) and delivers a
    signed receipt that sender-90001 reads."""
    connect, _ = connect_as
    connection = await connect("kpr-consumer")
    signer = ReceiptSigner(dev_pki.register.signing_identity)
    async with ReceiptSender(connection, topology=TOPOLOGY, signer=signer) as receipts:
        receipt = Receipt.for_rejection(
            original_message_id="m-definitions", reason=Reason.MALFORMED, description="test"
        )
        await receipts.send(receipt, sender_her_id=90001)
    sender = await as_user("sender-90001")
    message = await _get(sender, TOPOLOGY.receipt_queue(90001))
    assert message is not None
    assert message.headers["originalMessageId"] == "m-definitions"
    await message.ack()


@pytest.mark.parametrize("name", ["sender-made-queue", ""])
async def test_sender_cannot_declare_queues(as_user: Any, name: str) -> None:
    """A sender configures nothing: neither a named nor a server-named queue."""
    sender = await as_user("sender-90001")
    with pytest.raises(ChannelAccessRefused):
        await sender.declare_queue(name, exclusive=not name)


async def test_consumer_declares_the_code_topology_over_the_definitions(as_user: Any) -> None:
    """``Topology.declare`` as kpr-consumer succeeds: same arguments, permissions suffice."""
    consumer = await as_user("kpr-consumer")
    await TOPOLOGY.declare(consumer)
    assert not consumer.is_closed


async def test_consumer_publishes_to_dead_letter_retry_and_receipt_exchanges(
    as_user: Any,
) -> None:
    """The consumer's three outlets accept confirmed publishes; the DLQ then holds the message."""
    consumer = await as_user("kpr-consumer")
    operator = await as_user("kpr-operator")
    dlx = await consumer.get_exchange(TOPOLOGY.dead_letter_exchange, ensure=False)
    await dlx.publish(_message(b"dead"), routing_key=TOPOLOGY.dead_letter_queue, mandatory=True)
    retry = await consumer.get_exchange(TOPOLOGY.retry_exchange, ensure=False)
    # Long enough to stay in the delay queue for the rest of this module.
    retry_message = aio_pika.Message(b"later", expiration=600)
    await retry.publish(retry_message, routing_key=TOPOLOGY.retry_queue(4), mandatory=True)
    dead = await _get(operator, TOPOLOGY.dead_letter_queue)
    assert dead is not None
    assert dead.body == b"dead"
    await dead.ack()


async def test_consumer_cannot_read_dead_letter_queue(as_user: Any) -> None:
    """Reading the dead-letter queue is the operators' business, not the consumer's."""
    consumer = await as_user("kpr-consumer")
    with pytest.raises(ChannelAccessRefused):
        await _get(consumer, TOPOLOGY.dead_letter_queue)


async def test_operator_replays_to_work_exchange(as_user: Any) -> None:
    """kpr-operator may publish to ``kpr.events`` (replay) and reach the work queue."""
    operator = await as_user("kpr-operator")
    consumer = await as_user("kpr-consumer")
    await _publish(operator, TOPOLOGY.work_exchange, b"replayed")
    message = await _get(consumer, TOPOLOGY.work_queue)
    assert message is not None
    assert message.body == b"replayed"
    await message.ack()


async def test_operator_cannot_read_work_queue(as_user: Any) -> None:
    """kpr-operator cannot take messages from the work queue."""
    operator = await as_user("kpr-operator")
    with pytest.raises(ChannelAccessRefused):
        await _get(operator, TOPOLOGY.work_queue)
