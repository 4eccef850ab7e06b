"""The HTTP endpoint of a running producer or consumer: ``/metrics``, ``/healthz``, ``/readyz``.

A deliberately small HTTP/1.1 server on the process's own asyncio loop (one request per
connection, ``GET`` only), so ``/healthz`` answering at all proves the loop still turns:

* ``/metrics``: the Prometheus text format of the injected registry;
* ``/healthz``: 200 ``{"status": "alive"}`` while the loop runs;
* ``/readyz``: 200 ``{"status": "ready"}`` when the readiness check reports no problem,
  else 503 ``{"status": "not-ready", "problems": [...]}`` (a check that raises or takes
  longer than ``readiness_timeout_s`` is a problem too).

It listens on loopback by default; pass ``host="0.0.0.0"`` (or ``::``) to let a
scraper in a container network reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Self

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from contracts.errors import SettingsError
from contracts.resources import AsyncResource

__all__ = ["ObservabilityServer", "ReadinessCheck"]

log = logging.getLogger("kpr.observability")

ReadinessCheck = Callable[[], Awaitable[Sequence[str]]]
"""Returns the reasons the process is not ready; empty when it is."""

_MAX_REQUEST_HEAD = 8192
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class ObservabilityServer(AsyncResource):
    """``async with ObservabilityServer(registry, readiness, port=...) as server:``.

    ``port`` 0 picks a free port (read it back from :attr:`port`). Closing twice is harmless.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: ReadinessCheck,
        *,
        port: int,
        host: str = "127.0.0.1",
        readiness_timeout_s: float = 2.0,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._requested_port = port
        self._readiness_timeout_s = readiness_timeout_s
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)
        except OSError as error:
            raise SettingsError(
                f"cannot serve metrics on {self._host}:{self._requested_port}: "
                f"{error.strerror or error}",
                "set KPR_METRICS_PORT / --metrics-port to a free port (0: any) and "
                "KPR_METRICS_HOST to an address of this host",
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("observability endpoint listening", extra={"port": self.port})
        return self

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await asyncio.shield(server.wait_closed())

    async def readiness_problems(self) -> list[str]:
        """Run the readiness check with its timeout; failures of the check are problems."""
        try:
            async with asyncio.timeout(self._readiness_timeout_s):
                return list(await self._readiness())
        except TimeoutError:
            return ["readiness check timed out"]
        except Exception as error:  # a broken check means not ready, not a crashed endpoint
            return [f"readiness check failed: {type(error).__name__}"]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            status, content_type, body = await self._respond(head[:_MAX_REQUEST_HEAD])
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode("ascii")
                + body
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a client that leaves or dawdles gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return _json(405, {"error": "bad request line"})
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if method != "GET":
            return _json(405, {"error": "GET only"})
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            return _json(200, {"status": "alive"})
        if path == "/readyz":
            problems = await self.readiness_problems()
            if problems:
                return _json(503, {"status": "not-ready", "problems": problems})
            return _json(200, {"status": "ready"})
        return _json(404, {"error": "not found"})


def _json(status: int, payload: object) -> tuple[int, str, bytes]:
    return status, "application/json", orjson.dumps(payload)
