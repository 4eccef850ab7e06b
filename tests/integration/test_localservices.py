"""The broker and database the project starts itself serve what the pipeline needs.

Runs against the session's services from ``tests/conftest.py``: a local RabbitMQ node and
a local PostgreSQL on free ports (or what ``KPR_AMQP_URL`` / ``KPR_TEST_POSTGRES_URL`` name).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import aio_pika
import psycopg
import pytest
from pamqp.commands import Basic
from pamqp.common import FieldTable

from contracts.connection import TlsSettings, connect
from kpr.localservices import LocalPostgres, LocalRabbitMQ, LocalServiceError, TlsListener

QUORUM: FieldTable = {"x-queue-type": "quorum"}
TLS_CLIENT_USER = "kpr-test-client"


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


def test_broker_that_cannot_listen_fails_with_the_cause_from_its_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A node whose AMQP port is taken fails to start; the error carries the log's cause."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        broker = LocalRabbitMQ(tmp_path_factory.mktemp("rabbitmq-fail"), amqp_port=taken)
        with pytest.raises(LocalServiceError) as failure:
            broker.start()

    assert broker.node_name in str(failure.value)
    assert "eaddrinuse" in str(failure.value)
    assert not broker.running


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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(name: str, common_name: str, usage: str, cwd: Path) -> None:
    """Issue ``name.pem`` / ``name.key`` from the test CA in ``cwd`` (RSA 2048, 2 days)."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", f"/CN={common_name}", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        encoding="ascii",
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=cwd)  # fmt: skip


def _amqp_handshake_refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether the TLS listener on ``port`` refuses to start AMQP with this client context."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"AMQP\x00\x00\x09\x01")
            return tls.recv(1) == b""  # a frame (Connection.Start) means it was accepted
    except (ssl.SSLError, ConnectionResetError):
        return True


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=kpr test CA", cwd=directory)  # fmt: skip
    _issue("server", "localhost", "serverAuth", directory)
    _issue("client", TLS_CLIENT_USER, "clientAuth", directory)
    return directory


@pytest.mark.openssl
async def test_tls_listener_logs_a_client_in_by_its_certificate(
    tls_files: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With a TlsListener the node speaks AMQPS and logs a client in by its certificate.

    A client without a certificate is refused before AMQP starts.
    """
    listener = TlsListener(
        cacertfile=tls_files / "ca.pem",
        certfile=tls_files / "server.pem",
        keyfile=tls_files / "server.key",
    )
    async with LocalRabbitMQ(tmp_path_factory.mktemp("rabbitmq-tls"), tls=listener) as broker:
        broker.ctl("add_user", TLS_CLIENT_USER, uuid.uuid4().hex)
        broker.ctl("set_permissions", TLS_CLIENT_USER, ".*", ".*", ".*")
        settings = TlsSettings(
            ca_file=tls_files / "ca.pem",
            client_cert=tls_files / "client.pem",
            client_key=tls_files / "client.key",
        )
        connection = await connect(broker.amqps_url, tls=settings)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("kpr.test.tls", exclusive=True)
            listing = await asyncio.to_thread(
                broker.ctl, "list_connections", "user", "auth_mechanism", "ssl_protocol",
                "--no-table-headers",
            )  # fmt: skip

        assert queue.name == "kpr.test.tls"
        without_certificate = TlsSettings(ca_file=tls_files / "ca.pem")
        assert broker.amqps_port is not None
        assert not _amqp_handshake_refused(broker.amqps_port, settings.context())
        assert _amqp_handshake_refused(broker.amqps_port, without_certificate.context())
        assert listing.split() in (
            [TLS_CLIENT_USER, "EXTERNAL", "tlsv1.3"],
            [TLS_CLIENT_USER, "EXTERNAL", "tlsv1.2"],
        )
