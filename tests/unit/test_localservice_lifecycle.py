"""Choosing the broker and database, and the start / stop contract of local services."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from kpr.localprocess import BlockingService, docker_engine_available, free_port
from kpr.localservices import ensure_broker, ensure_postgres


def test_ensure_broker_uses_the_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With KPR_AMQP_URL set nothing is started and that URL is used."""
    monkeypatch.setenv("KPR_AMQP_URL", "amqp://someone:secret@broker.example:5671/")

    assert ensure_broker(tmp_path) == ("amqp://someone:secret@broker.example:5671/", None)
    assert list(tmp_path.iterdir()) == []


def test_ensure_postgres_uses_the_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With KPR_TEST_POSTGRES_URL set nothing is started and that URL is used."""
    monkeypatch.setenv("KPR_TEST_POSTGRES_URL", "postgresql://kpr@db.example/kpr")

    assert ensure_postgres(tmp_path) == ("postgresql://kpr@db.example/kpr", None)
    assert list(tmp_path.iterdir()) == []


def test_free_port_can_be_bound_on_loopback() -> None:
    """The port free_port returns is a real, currently unused loopback port."""
    port = free_port()

    assert 1024 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))


def test_free_ports_lie_below_the_ephemeral_range_and_never_repeat() -> None:
    """No outgoing connection's source port can take one before its server binds it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
        ephemeral_start = int(handle.read().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if ephemeral_start > 11000:  # room below it, as on Linux's default 32768-60999
        assert all(port < ephemeral_start for port in ports)


def test_no_docker_client_means_no_docker_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a docker binary on PATH the engine counts as unavailable (no exception)."""
    monkeypatch.setenv("PATH", str(tmp_path))

    assert docker_engine_available() is False


class _SlowService(BlockingService):
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.stops = 0
        self.running = False

    def start(self) -> None:
        self.started.set()
        self.release.wait(timeout=10)
        self.running = True

    def stop(self) -> None:
        self.stops += 1
        self.running = False


async def test_cancelled_async_start_stops_the_service_and_reraises() -> None:
    """Cancelling ``async with`` during start lets start finish, stops it, and re-raises."""
    service = _SlowService()

    async def use() -> None:
        async with service:
            raise AssertionError("the body must not run")

    task = asyncio.create_task(use())
    await asyncio.to_thread(service.started.wait, 10)
    task.cancel()
    service.release.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.stops == 1
    assert not service.running


async def test_async_with_stops_the_service_when_the_body_fails() -> None:
    """An exception in the body stops the service and propagates unchanged."""
    service = _SlowService()
    service.release.set()

    running_inside: list[bool] = []

    async def use() -> None:
        async with service:
            running_inside.append(service.running)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await use()
    assert running_inside == [True]
    assert service.stops == 1
    assert not service.running
