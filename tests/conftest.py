"""Session-wide services for the tests: one RabbitMQ and one PostgreSQL per test session.

Where they come from, in order: ``KPR_AMQP_URL`` / ``KPR_TEST_POSTGRES_URL`` if set; for
RabbitMQ a Docker container if a Docker engine answers; else a broker / database this
session starts itself on free ports (``kpr.localbroker`` / ``kpr.localpostgres``), so
several sessions can run side by side on one machine. Nothing is skipped for want of a
broker: if none can be had, the tests that need one fail with the reason.

Isolation between tests on the shared broker: ``amqp_vhost_url`` gives each test its own
virtual host, so tests may declare the production exchange and queue names freely.
Vhosts are created in batches with one ``rabbitmqctl import_definitions`` call (about
0.7 s per 16 vhosts, so about 45 ms per test; one ``add_vhost`` + ``set_permissions``
per test would cost about 0.9 s). On an external broker (``KPR_AMQP_URL``) there is no
control channel and ``amqp_vhost_url`` is the shared URL: use unique names there.

Tests under ``tests/integration`` are marked ``integration`` automatically, and tests
using a PostgreSQL fixture ``postgres``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.pki import PkiDir, ensure_dev_pki
from kpr.localservices import (
    AMQP_URL_VARIABLE,
    POSTGRES_URL_VARIABLE,
    ContainerRabbitMQ,
    LocalPostgres,
    LocalRabbitMQ,
    ManagedBroker,
    docker_engine_available,
)

INTEGRATION_DIR = Path(__file__).parent / "integration"
POSTGRES_FIXTURES = frozenset({"postgres_url", "local_postgres", "postgres_state_dir"})
VHOST_BATCH = 16


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """The development PKI (register, sender, CA), made once per test session."""
    return ensure_dev_pki(tmp_path_factory.mktemp("dev-pki"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests under tests/integration ``integration``, and users of PostgreSQL ``postgres``."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


# -- RabbitMQ -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedBroker | None]:
    """The broker this session started (``None`` when ``KPR_AMQP_URL`` names one)."""
    if os.environ.get(AMQP_URL_VARIABLE):
        yield None
        return
    service: LocalRabbitMQ | ContainerRabbitMQ
    if docker_engine_available():
        service = ContainerRabbitMQ()
    else:
        service = LocalRabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    with service:
        yield service


@pytest.fixture(scope="session")
def amqp_url(broker_service: ManagedBroker | None) -> str:
    """The AMQP URL of the session's broker (default vhost ``/``, shared by all tests)."""
    if broker_service is None:
        return os.environ[AMQP_URL_VARIABLE]
    return broker_service.amqp_url


@pytest.fixture(scope="session")
def local_broker(broker_service: ManagedBroker | None) -> LocalRabbitMQ:
    """The session's :class:`LocalRabbitMQ`, for tests that restart it or run rabbitmqctl.

    Skips only when the broker is external or a container (then it cannot be restarted).
    """
    if not isinstance(broker_service, LocalRabbitMQ):
        pytest.skip("needs the local broker (KPR_AMQP_URL or Docker supplies another)")
    return broker_service


class VhostPool:
    """Fresh virtual hosts on one broker, created in batches, each handed out once."""

    def __init__(self, broker: ManagedBroker, work_dir: Path) -> None:
        self._broker = broker
        self._work_dir = work_dir
        self._numbers = itertools.count(1)
        self._ready: list[str] = []

    def take(self) -> str:
        if not self._ready:
            self._ready = self._create([f"t{next(self._numbers)}" for _ in range(VHOST_BATCH)])
        return self._ready.pop(0)

    def _create(self, names: list[str]) -> list[str]:
        if isinstance(self._broker, LocalRabbitMQ):
            definitions = {
                "vhosts": [{"name": name} for name in names],
                "permissions": [
                    {"user": "guest", "vhost": name, "configure": ".*", "write": ".*", "read": ".*"}
                    for name in names
                ],
            }
            path = self._work_dir / f"vhosts-{names[0]}.json"
            path.write_text(json.dumps(definitions), encoding="utf-8")
            self._broker.ctl("import_definitions", str(path))
            return names
        # A container cannot read our files: one vhost at a time.
        name = names[0]
        self._broker.ctl("add_vhost", name)
        self._broker.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return [name]


@pytest.fixture(scope="session")
def _vhost_pool(
    broker_service: ManagedBroker | None, tmp_path_factory: pytest.TempPathFactory
) -> VhostPool | None:
    if broker_service is None:
        return None
    return VhostPool(broker_service, tmp_path_factory.mktemp("vhosts"))


@pytest.fixture
def amqp_vhost_url(amqp_url: str, _vhost_pool: VhostPool | None) -> str:
    """An AMQP URL on a virtual host no other test uses (the shared URL on external brokers)."""
    if _vhost_pool is None:
        return amqp_url
    return f"{amqp_url.rstrip('/')}/{_vhost_pool.take()}"


# -- PostgreSQL ---------------------------------------------------------------------------


@contextlib.contextmanager
def _postgres_reachable_dir() -> Iterator[Path]:
    """A fresh state directory the ``postgres`` user can reach, removed afterwards.

    Under the system temp dir, not pytest's ``tmp_path``: run as root, pytest's base
    directory is private to root, and the server runs as ``postgres``.
    """
    base = Path(tempfile.mkdtemp(prefix="kpr-postgres-"))
    try:
        base.chmod(0o711)
        yield base / "pg"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[LocalPostgres | None]:
    """The PostgreSQL this session started (``None`` when ``KPR_TEST_POSTGRES_URL`` names one)."""
    if os.environ.get(POSTGRES_URL_VARIABLE):
        yield None
        return
    with _postgres_reachable_dir() as state_dir, LocalPostgres(state_dir, fsync=False) as server:
        yield server


@pytest.fixture
def postgres_state_dir() -> Iterator[Path]:
    """A fresh state directory for a test's own :class:`LocalPostgres`."""
    with _postgres_reachable_dir() as state_dir:
        yield state_dir


@pytest.fixture(scope="session")
def postgres_url(postgres_service: LocalPostgres | None) -> str:
    """A URL of database ``kpr`` on the session's PostgreSQL."""
    if postgres_service is None:
        return os.environ[POSTGRES_URL_VARIABLE]
    return postgres_service.url


@pytest.fixture(scope="session")
def local_postgres(postgres_service: LocalPostgres | None) -> LocalPostgres:
    """The session's :class:`LocalPostgres`, for tests that stop and start it."""
    if postgres_service is None:
        pytest.skip("needs the local PostgreSQL (KPR_TEST_POSTGRES_URL supplies another)")
    return postgres_service
