"""TLS to the broker: amqps, TLS 1.2+ only, CA-verified both ways, SASL EXTERNAL.

A second local RabbitMQ node with a TLS listener made from the development PKI
(client certificates required); producer and consumer log in with their certificates.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aio_pika
import pytest
from aio_pika.connection import make_url
from aiormq.exceptions import AMQPConnectionError
from support import pipeline_settings

from contracts.connection import TlsSettings, connect
from contracts.pki import PkiDir, ensure_dev_pki, generate_dev_pki
from contracts.synth import generate_events
from kpr.config import Settings
from kpr.localbroker import LocalRabbitMQ, TlsListener
from kpr.runtime import consume, publish_events, store_summary
from producers.publisher import Publisher

# What a refused TLS / AMQP handshake surfaces as, depending on who hangs up first.
REFUSED = (OSError, AMQPConnectionError, asyncio.IncompleteReadError)
PROTOCOL_VERSION_ALERT = "SERVER ALERT: Fatal - Protocol Version"


def ca_bundle(pki: PkiDir, path: Path) -> Path:
    """Root and issuing CA in one file: the broker sends no chain, nor do our clients."""
    path.write_bytes(pki.root_path.read_bytes() + pki.intermediate_path.read_bytes())
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("tls-pki"))


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """Another development PKI: same names, keys and CAs the broker does not trust."""
    return generate_dev_pki(tmp_path_factory.mktemp("foreign-pki"))


@pytest.fixture(scope="module")
def bundle(pki: PkiDir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ca_bundle(pki, tmp_path_factory.mktemp("ca") / "ca-bundle.pem")


@pytest.fixture(scope="module")
def tls_broker(
    pki: PkiDir, bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRabbitMQ]:
    broker = LocalRabbitMQ(
        tmp_path_factory.mktemp("tls-rabbitmq"),
        tls=TlsListener(
            cacertfile=bundle,
            certfile=pki.directory / "broker.pem",
            keyfile=pki.directory / "broker.key",
        ),
    )
    with broker:
        # EXTERNAL maps the client certificate's CN to a user, which must exist.
        for user in ("sender", "register"):
            # hex: a urlsafe token may start with "-", which rabbitmqctl reads as an option
            broker.ctl("add_user", user, secrets.token_hex(24))
            broker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield broker


def client_tls(pki: PkiDir, bundle: Path, party: str | None) -> TlsSettings:
    if party is None:
        return TlsSettings(ca_file=bundle)
    return TlsSettings(
        ca_file=bundle,
        client_cert=pki.directory / f"client-{party}.pem",
        client_key=pki.directory / f"client-{party}.key",
    )


@pytest.fixture
def settings(tls_broker: LocalRabbitMQ, pki: PkiDir, bundle: Path, tmp_path: Path) -> Settings:
    return pipeline_settings(tls_broker.amqps_url, pki, tmp_path).with_overrides(
        amqp_ca_file=bundle
    )


def as_party(settings: Settings, party: str) -> Settings:
    directory = settings.pki_dir
    return replace(
        settings,
        amqp_client_cert=directory / f"client-{party}.pem",
        amqp_client_key=directory / f"client-{party}.key",
    )


async def test_producer_and_consumer_commit_events_over_tls_with_certificate_login(
    settings: Settings, tls_broker: LocalRabbitMQ
) -> None:
    """Over amqps with client certificates, the broker sees TLS and the CN as the user,
    and the pipeline commits every event."""
    events = generate_events(10, seed=41)
    producer = as_party(settings, "sender")
    tls = producer.tls_settings()
    assert tls is not None
    async with Publisher(producer.amqp_url, topology=producer.topology(), tls=tls):
        listing = tls_broker.ctl(
            "list_connections", "user", "ssl", "ssl_protocol", "auth_mechanism"
        )
    assert "sender\ttrue\ttlsv1.3\tEXTERNAL" in listing or "sender\ttrue\ttlsv1.2\tEXTERNAL" in (
        listing
    )

    report = await publish_events(producer, events)
    counts = await consume(as_party(settings, "register"), until_idle_s=1.5)

    assert report.all_confirmed
    assert counts["committed"] == len(events)
    assert (await store_summary(settings)).events_committed == len(events)


async def test_a_client_certificate_from_a_foreign_ca_is_refused(
    tls_broker: LocalRabbitMQ, foreign_pki: PkiDir, bundle: Path
) -> None:
    """Same CN, issued by a CA the broker does not trust: the handshake fails."""
    with pytest.raises(REFUSED):
        await asyncio.wait_for(
            connect(tls_broker.amqps_url, tls=client_tls(foreign_pki, bundle, "sender")), 30
        )


async def test_a_client_without_a_certificate_is_refused(
    tls_broker: LocalRabbitMQ, pki: PkiDir, bundle: Path
) -> None:
    """The listener requires a peer certificate (fail_if_no_peer_cert)."""
    with pytest.raises(REFUSED):
        await asyncio.wait_for(
            connect(
                tls_broker.amqps_url.replace("amqps://", "amqps://guest:guest@"),
                tls=client_tls(pki, bundle, None),
            ),
            30,
        )


async def test_a_broker_certificate_from_a_foreign_ca_is_not_trusted(
    tls_broker: LocalRabbitMQ, pki: PkiDir, foreign_pki: PkiDir, tmp_path: Path
) -> None:
    """Our client verifies the broker: a CA file that did not issue it fails verification."""
    foreign_bundle = ca_bundle(foreign_pki, tmp_path / "foreign-ca.pem")
    tls = TlsSettings(
        ca_file=foreign_bundle,
        client_cert=pki.directory / "client-sender.pem",
        client_key=pki.directory / "client-sender.key",
    )
    with pytest.raises(REFUSED) as refused:
        await asyncio.wait_for(connect(tls_broker.amqps_url, tls=tls), 30)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value) or isinstance(
        refused.value, AMQPConnectionError
    )


async def test_a_client_that_only_speaks_tls_1_1_is_refused(
    tls_broker: LocalRabbitMQ, pki: PkiDir, bundle: Path
) -> None:
    """The listener offers TLS 1.3 and 1.2 only; a valid client capped at 1.1 gets no session."""
    context = client_tls(pki, bundle, "sender").context()
    with warnings.catch_warnings():  # an obsolete client, made on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let our side offer 1.1 at all
    alerts_before = tls_broker.log_file.read_text().count(PROTOCOL_VERSION_ALERT)
    refused = aio_pika.Connection(
        make_url(f"{tls_broker.amqps_url}?auth=external"), ssl_context=context
    )
    try:
        with pytest.raises(REFUSED):
            await asyncio.wait_for(refused.connect(), 30)
    finally:
        await refused.close()  # a failed connect leaves an object to close, not to collect
    # The broker, not our own TLS library, said no: it logged the protocol-version alert.
    for _ in range(50):
        if tls_broker.log_file.read_text().count(PROTOCOL_VERSION_ALERT) > alerts_before:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the broker logged no protocol-version alert for the TLS 1.1 client")


async def test_the_same_client_with_tls_1_2_as_its_maximum_is_accepted(
    tls_broker: LocalRabbitMQ, pki: PkiDir, bundle: Path
) -> None:
    """Control for the test above: only the version differs, and 1.2 is let in."""
    context = client_tls(pki, bundle, "sender").context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    connection = await asyncio.wait_for(
        aio_pika.connect(f"{tls_broker.amqps_url}?auth=external", ssl_context=context), 30
    )
    async with connection:
        assert not connection.is_closed


def test_tls_settings_refuse_a_plain_url_and_a_key_without_certificate(tmp_path: Path) -> None:
    """A CA file with amqp:// would silently not encrypt; a lone key is a typo. Both refused."""
    ca = tmp_path / "ca.pem"
    with pytest.raises(ValueError, match="not amqps"):
        Settings(amqp_url="amqp://h/", amqp_ca_file=ca).tls_settings()
    with pytest.raises(ValueError, match="without KPR_AMQP_CLIENT_CERT"):
        Settings(amqp_url="amqps://h/", amqp_ca_file=ca, amqp_client_key=ca).tls_settings()
    assert Settings().tls_settings() is None
    from_env = Settings.from_env(
        {
            "KPR_AMQP_URL": "amqps://h/",
            "KPR_AMQP_CA_FILE": str(ca),
            "KPR_AMQP_CLIENT_CERT": "c.pem",
            "KPR_AMQP_CLIENT_KEY": "c.key",
        }
    ).tls_settings()
    assert from_env == TlsSettings(ca_file=ca, client_cert=Path("c.pem"), client_key=Path("c.key"))
