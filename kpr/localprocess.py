"""What the local RabbitMQ and PostgreSQL launchers share.

Free ports, a log tail for error messages, and :class:`BlockingService`: the base that
turns a blocking ``start()`` / ``stop()`` pair into a sync *and* async context manager.

These launchers are development and test tooling: they start real servers as child
processes, never as system services, each on its own free ports and in its own state
directory, so several test sessions can run side by side on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Self

from contracts.resources import AsyncResource

__all__ = [
    "BlockingService",
    "LocalServiceError",
    "docker_engine_available",
    "first_lines_containing",
    "free_port",
    "log_tail",
    "port_accepts",
]


class LocalServiceError(RuntimeError):
    """A local development service (broker, database) could not be started or controlled.

    Tooling failure, not a message-handling outcome: it stays outside the
    ``contracts.errors`` tree on purpose. The text names the service and carries the
    tail of its log where one exists.
    """


#: Where ephemeral source ports start when the kernel does not say (Linux's default).
_EPHEMERAL_START_DEFAULT = 32768
#: The lowest port :func:`free_port` picks (above the registered services people run).
_LOWEST_PICK = 10000
#: Ports this process handed out already: never handed out twice.
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_START_DEFAULT


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago, never one this process gave before.

    Picked below the kernel's ephemeral range, so that the source port of some outgoing
    connection cannot take it between the pick and the server's bind (a three-node
    broker cluster opens many connections while its later nodes start). Another process
    may still bind it first; the launchers then fail loudly with the server's log.
    """
    ceiling = _ephemeral_start()
    if ceiling - _LOWEST_PICK >= 1000:
        for _ in range(100):
            port = secrets.randbelow(ceiling - _LOWEST_PICK) + _LOWEST_PICK
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    for _ in range(100):  # no room below the ephemeral range: let the kernel pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            picked: int = probe.getsockname()[1]
        if picked not in _handed_out:
            _handed_out.add(picked)
            return picked
    raise LocalServiceError(f"no free TCP port found on {host}")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40, width: int = 400) -> str:
    """The last ``lines`` lines of a log (each cut to ``width``), or a note that it is missing."""
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            return "".join(line.rstrip("\n")[:width] + "\n" for line in deque(log, maxlen=lines))
    except OSError:
        return f"(no log at {path})"


def first_lines_containing(path: Path, needle: str, limit: int = 6, width: int = 300) -> str:
    """The first ``limit`` lines of a log holding ``needle``, each cut to ``width`` characters.

    The first errors of a failed boot name the cause; the tail mostly shows the shutdown.
    """
    found: list[str] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if needle in line:
                    found.append(line.rstrip("\n")[:width] + "\n")
                    if len(found) >= limit:
                        break
    except OSError:
        return ""
    return "".join(found)


def docker_engine_available(timeout: float = 5.0) -> bool:
    """Whether a Docker engine answers ``docker info`` within ``timeout`` seconds.

    A Docker client without an engine (common on CI runners and in containers) is
    ``False``, as is no client at all.
    """
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        answer = subprocess.run(
            [docker, "info"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return answer.returncode == 0


def wait_until(condition_name: str, deadline: float, probe_interval: float = 0.2) -> None:
    """Sleep one probe interval, or raise if ``deadline`` (monotonic) has passed."""
    if time.monotonic() > deadline:
        raise LocalServiceError(f"timed out waiting for {condition_name}")
    time.sleep(probe_interval)


class BlockingService(AsyncResource, ABC):
    """A local server with blocking ``start()`` / ``stop()``, for ``with`` and ``async with``.

    The async forms run the blocking parts in a worker thread. If the task is cancelled
    while the server starts, the start is allowed to finish, the server is stopped, and
    the cancellation is re-raised: no server is left behind and no cancellation swallowed.
    ``stop()`` must be harmless when the server is not running.
    """

    @abstractmethod
    def start(self) -> None:
        """Start the server and return once it serves; raise LocalServiceError if it cannot."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server; harmless if it is not running."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            await asyncio.shield(starting)
        except BaseException:
            # The thread cannot be interrupted: let it finish, then undo what it did.
            with contextlib.suppress(BaseException):
                await starting
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """:meth:`stop` in a worker thread, shielded: a cancelled close still stops."""
        await asyncio.shield(asyncio.to_thread(self.stop))
