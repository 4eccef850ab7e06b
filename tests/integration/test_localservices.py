"""The broker and database the project starts itself serve what the pipeline needs.

Runs against the session's services from ``tests/conftest.py``: a local RabbitMQ node and
a local PostgreSQL on free ports (or what ``KPR_AMQP_URL`` / ``KPR_TEST_POSTGRES_URL`` name).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import psycopg
import pytest
from pamqp.commands import Basic

from kpr.localservices import LocalPostgres, LocalRabbitMQ, LocalServiceError

QUORUM = {"x-queue-type": "quorum"}


def _vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1] or "/"


async def _publish_persistent(url: str, queue_name: str, body: bytes) -> object:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        return await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name,
            mandatory=True,
        )


async def _get_one(url: str, queue_name: str) -> bytes:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        message = await queue.get(timeout=10)
        assert message is not None
        await message.ack()
        return message.body


async def test_local_broker_confirms_and_delivers_through_a_quorum_queue(
    amqp_vhost_url: str, local_broker: LocalRabbitMQ
) -> None:
    """A persistent message published with confirms into a quorum queue is acked, then consumed."""
    confirmation = await _publish_persistent(amqp_vhost_url, "kpr.test.quorum", b"hello")

    assert isinstance(confirmation, Basic.Ack)
    listing = local_broker.ctl(
        "list_queues",
        "-p",
        _vhost_of(amqp_vhost_url),
        "name",
        "type",
        "--no-table-headers",
    )
    assert listing.split() == ["kpr.test.quorum", "quorum"]
    assert await _get_one(amqp_vhost_url, "kpr.test.quorum") == b"hello"


async def test_each_test_gets_its_own_virtual_host(amqp_vhost_url: str, amqp_url: str) -> None:
    """The per-test vhost is empty of the queues other tests declared and differs from ``/``."""
    assert amqp_vhost_url != amqp_url
    async with await aio_pika.connect(amqp_vhost_url) as connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue("kpr.test.quorum", passive=True)


async def test_restart_keeps_a_persistent_message_in_a_durable_quorum_queue(
    amqp_vhost_url: str, local_broker: LocalRabbitMQ
) -> None:
    """A confirmed persistent message survives a full node restart on the same port and data."""
    port_before = local_broker.amqp_port
    await _publish_persistent(amqp_vhost_url, "kpr.test.durable", b"survives")

    await asyncio.to_thread(local_broker.restart)

    assert local_broker.amqp_port == port_before
    assert local_broker.running
    assert await _get_one(amqp_vhost_url, "kpr.test.durable") == b"survives"


def test_broker_ctl_failure_names_the_command_and_node(local_broker: LocalRabbitMQ) -> None:
    """A failing rabbitmqctl call raises LocalServiceError naming the command and the node."""
    with pytest.raises(LocalServiceError) as failure:
        local_broker.ctl("delete_vhost", f"no-such-vhost-{uuid.uuid4().hex}")

    assert "delete_vhost" in str(failure.value)
    assert local_broker.node_name in str(failure.value)


def test_postgres_answers_select_1(postgres_url: str) -> None:
    """The session's PostgreSQL accepts a connection to database ``kpr`` and answers a query."""
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT 1, current_database()").fetchone()

    assert row == (1, "kpr")


def test_postgres_keeps_committed_rows_across_stop_and_start(local_postgres: LocalPostgres) -> None:
    """Stopped, the server refuses connections; started again, same URL, the rows are there."""
    table = f"survivor_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(local_postgres.url) as connection:
        connection.execute(f"CREATE TABLE {table} (value text)")
        connection.execute(f"INSERT INTO {table} VALUES ('kept')")
    url_before = local_postgres.url

    local_postgres.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(local_postgres.url, connect_timeout=2).close()
    finally:
        local_postgres.start()

    assert local_postgres.url == url_before
    with psycopg.connect(local_postgres.url) as connection:
        assert connection.execute(f"SELECT value FROM {table}").fetchall() == [("kept",)]


async def test_async_context_manager_starts_and_stops_postgres(postgres_state_dir: Path) -> None:
    """``async with`` starts a server that answers, stops it on exit; a second stop is harmless."""
    async with LocalPostgres(postgres_state_dir) as server:
        connection = await psycopg.AsyncConnection.connect(server.url)
        async with connection:
            cursor = await connection.execute("SELECT 41 + 1")
            assert await cursor.fetchone() == (42,)

    assert not server.running
    server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2).close()
