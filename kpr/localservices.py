"""Finding or starting the broker and the database the demo and the tests run against.

``ensure_broker`` and ``ensure_postgres`` prefer what the environment names
(``KPR_AMQP_URL``, ``KPR_TEST_POSTGRES_URL``); otherwise the broker comes from a Docker
container when a Docker engine answers, and else from a local process
(:class:`~kpr.localbroker.LocalRabbitMQ`, :class:`~kpr.localpostgres.LocalPostgres`).
Whatever they start is returned *started*: the caller stops it (``service.stop()``).

``start_kept_broker`` / ``kept_broker`` / ``stop_kept_broker`` are ``kpr broker``'s: a local
node that outlives the command, found again through a small record in its state directory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kpr.localbroker import LocalRabbitCluster, LocalRabbitMQ, TlsListener, stop_node_group
from kpr.localpostgres import LocalPostgres
from kpr.localprocess import (
    BlockingService,
    LocalServiceError,
    docker_engine_available,
    free_port,
)

__all__ = [
    "AMQP_URL_VARIABLE",
    "POSTGRES_URL_VARIABLE",
    "ContainerRabbitMQ",
    "KeptBroker",
    "LocalPostgres",
    "LocalRabbitCluster",
    "LocalRabbitMQ",
    "LocalServiceError",
    "ManagedBroker",
    "TlsListener",
    "docker_engine_available",
    "ensure_broker",
    "ensure_postgres",
    "free_port",
    "kept_broker",
    "start_kept_broker",
    "stop_kept_broker",
]

AMQP_URL_VARIABLE = "KPR_AMQP_URL"
POSTGRES_URL_VARIABLE = "KPR_TEST_POSTGRES_URL"


class ManagedBroker(Protocol):
    """A broker this process started and must stop: local node or container."""

    @property
    def amqp_url(self) -> str: ...

    def ctl(self, *args: str, timeout: float = 60.0) -> str: ...

    def stop(self) -> None: ...


class ContainerRabbitMQ(BlockingService):
    """RabbitMQ in a Docker container (testcontainers), for machines with a Docker engine.

    ``ctl`` runs ``rabbitmqctl`` inside the container. There is no ``restart``: a
    restarted container gets new host ports; tests that restart the broker need
    :class:`LocalRabbitMQ`.
    """

    IMAGE = "rabbitmq:3.13"
    _AMQP_PORT = 5672

    def __init__(
        self, image: str = IMAGE, plugins: tuple[str, ...] = ("rabbitmq_consistent_hash_exchange",)
    ) -> None:
        self.image = image
        self.plugins = plugins
        self._container: Any = None
        self.last_start_seconds: float | None = None

    @property
    def amqp_url(self) -> str:
        if self._container is None:
            raise LocalServiceError("the RabbitMQ container is not running")
        host = self._container.get_container_host_ip()
        port = self._container.get_exposed_port(self._AMQP_PORT)
        return f"amqp://guest:guest@{host}:{port}/"

    def start(self) -> None:
        """Start the container and wait for the broker; raises LocalServiceError on failure."""
        if self._container is not None:
            return
        # Imported here: only machines with a Docker engine need the Docker SDK to load.
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        started = time.monotonic()
        container = (
            DockerContainer(self.image)
            .with_exposed_ports(self._AMQP_PORT)
            .waiting_for(LogMessageWaitStrategy(re.compile(r"Server startup complete")))
        )
        try:
            container.start()
        except Exception as error:
            raise LocalServiceError(
                f"RabbitMQ container {self.image} did not start: {error}"
            ) from error
        self._container = container
        if self.plugins:
            self._exec(["rabbitmq-plugins", "enable", "--online", *self.plugins])
        self.last_start_seconds = time.monotonic() - started

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -q *args`` in the container (``timeout`` is not enforced)."""
        return self._exec(["rabbitmqctl", "-q", *args])

    def stop(self) -> None:
        """Remove the container; harmless if it is not running."""
        container, self._container = self._container, None
        if container is not None:
            container.stop()

    def _exec(self, command: list[str]) -> str:
        if self._container is None:
            raise LocalServiceError("the RabbitMQ container is not running")
        result = self._container.exec(command)
        output = bytes(result.output).decode("utf-8", errors="replace")
        if result.exit_code != 0:
            raise LocalServiceError(f"{command[0]} {command[1]} in the container failed: {output}")
        return output


def ensure_broker(state_dir: Path) -> tuple[str, ManagedBroker | None]:
    """An AMQP URL to use, and the broker started for it (``None`` if it was given).

    In order: ``KPR_AMQP_URL``; a RabbitMQ container if a Docker engine answers;
    a :class:`LocalRabbitMQ` under ``state_dir / "rabbitmq"``. The caller stops the
    returned broker. Raises :class:`LocalServiceError` if none can be had.
    """
    given = os.environ.get(AMQP_URL_VARIABLE)
    if given:
        return given, None
    if docker_engine_available():
        container = ContainerRabbitMQ()
        container.start()
        return container.amqp_url, container
    broker = LocalRabbitMQ(state_dir / "rabbitmq")
    broker.start()
    return broker.amqp_url, broker


def ensure_postgres(state_dir: Path) -> tuple[str, LocalPostgres | None]:
    """A PostgreSQL URL to use, and the server started for it (``None`` if it was given).

    ``KPR_TEST_POSTGRES_URL`` if set, else a :class:`LocalPostgres` under
    ``state_dir / "postgres"`` (its parents must be searchable by the ``postgres``
    user when run as root). The caller stops the returned server.
    """
    given = os.environ.get(POSTGRES_URL_VARIABLE)
    if given:
        return given, None
    server = LocalPostgres(state_dir / "postgres")
    server.start()
    return server.url, server


# -- a broker kept running between commands (``kpr broker``) --------------------------

_KEPT_RECORD = "kept-broker.json"
DEFAULT_AMQP_PORT = 5672


@dataclass(frozen=True)
class KeptBroker:
    """What ``kpr broker start`` left running, as recorded in ``directory``."""

    directory: Path
    node_name: str
    amqp_port: int
    pid: int

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def node(self) -> LocalRabbitMQ:
        return LocalRabbitMQ(self.directory, amqp_port=self.amqp_port, node_name=self.node_name)

    def answers(self) -> bool:
        try:
            self.node().ctl("ping", timeout=15)
        except LocalServiceError:
            return False
        return True


def kept_broker(directory: Path) -> KeptBroker | None:
    """The broker ``kpr broker start`` recorded in ``directory``, if there is a record."""
    try:
        record = json.loads((directory / _KEPT_RECORD).read_text(encoding="utf-8"))
        return KeptBroker(
            directory, str(record["node_name"]), int(record["amqp_port"]), int(record["pid"])
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LocalServiceError(
            f"{directory / _KEPT_RECORD} is unreadable ({type(error).__name__}); "
            "stop the node by hand or delete the file"
        ) from error


def start_kept_broker(directory: Path, port: int | None = None) -> tuple[KeptBroker, bool]:
    """Start a local node in ``directory`` that outlives this process, or find the one
    already there; the flag says whether it was started now. ``port`` defaults to 5672
    when that is free (so the default ``KPR_AMQP_URL`` reaches it), else any free port."""
    existing = kept_broker(directory)
    if existing is not None and existing.answers():
        return existing, False
    if existing is not None:
        stop_node_group(existing.node(), existing.pid)  # a stale record: clean up after it
    if port is None:
        port = DEFAULT_AMQP_PORT if _bindable(DEFAULT_AMQP_PORT) else free_port()
    node = LocalRabbitMQ(directory, amqp_port=port)
    node.start()
    pid = node.pid
    assert pid is not None
    kept = KeptBroker(node.state_dir, node.node_name, node.amqp_port, pid)
    record = {"node_name": kept.node_name, "amqp_port": kept.amqp_port, "pid": kept.pid}
    (node.state_dir / _KEPT_RECORD).write_text(json.dumps(record), encoding="utf-8")
    node.leave_running()
    return kept, True


def stop_kept_broker(directory: Path) -> KeptBroker | None:
    """Stop what ``start_kept_broker`` left in ``directory``; ``None`` if nothing was."""
    kept = kept_broker(directory)
    if kept is None:
        return None
    stop_node_group(kept.node(), kept.pid)
    (directory / _KEPT_RECORD).unlink(missing_ok=True)
    return kept


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
