"""Opening the AMQP connection, the same way on both sides.

One persistent, robust connection per process (the national bus asks for that).
TLS settings live here so producer, consumer and tools cannot drift apart.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

__all__ = ["FailoverConnection", "TlsSettings", "broker_urls", "connect"]


@dataclass(frozen=True)
class TlsSettings:
    """TLS to the broker: TLS 1.2 or 1.3 only, the broker verified against ``ca_file``.

    With ``client_cert`` / ``client_key`` the client authenticates with its certificate
    (SASL EXTERNAL), as the national bus does.
    """

    ca_file: Path
    client_cert: Path | None = None
    client_key: Path | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key or self.client_cert))
        return context


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection over several broker nodes (a cluster): each connection
    attempt, the first and every reconnect, goes to the next node in turn.

    aio-pika reads ``self.url`` once per attempt (``Connection.connect``), so rotating it
    there is enough; the string form names the current node without rotating.
    """

    def __init__(self, urls: Sequence[URL], start: int = 0, **kwargs: Any) -> None:
        self._urls = list(urls)
        self._next = start
        self._current = self._urls[start % len(self._urls)]
        super().__init__(self._current, **kwargs)
        self._next = start  # __init__ read the URL once: the first attempt is ``start``

    @property
    def url(self) -> URL:
        self._current = self._urls[self._next % len(self._urls)]
        self._next += 1
        return self._current

    @url.setter
    def url(self, value: URL) -> None:
        # aio-pika assigns it in __init__ (the URL given, nothing to do) and in
        # update_secret (a new password, which holds for every node).
        if value.password != self._current.password:
            self._urls = [u.with_password(value.password) for u in self._urls]
            self._current = self._current.with_password(value.password)

    def __str__(self) -> str:
        current = self._current
        return str(current.with_password("******") if current.password else current)


def broker_urls(url: str) -> list[str]:
    """``KPR_AMQP_URL`` may list several nodes of one cluster, separated by commas."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError("no broker URL given")
    return urls


async def connect(
    url: str,
    *,
    tls: TlsSettings | None = None,
    name: str = "kpr-stream",
    timeout_s: float = 60.0,
) -> AbstractRobustConnection:
    """Connect robustly; with ``tls`` every URL must be ``amqps://``.

    ``url`` may name several nodes of one cluster (comma-separated): the first that
    answers is used, and a lost connection is re-established to the next node in turn.
    Each node gets ``timeout_s`` to answer (a silent partition must not hang a start).
    A connection that fails to open is closed before the error propagates (aio-pika's
    ``connect_robust`` leaves it to ``__del__``, which cannot close it outside a loop).
    """
    urls = broker_urls(url)
    ssl_context = None
    if tls is not None:
        if not all(u.startswith("amqps://") for u in urls):
            raise ValueError("TLS settings need amqps:// URLs")
        if tls.client_cert is not None:
            urls = [f"{u}{'&' if '?' in u else '?'}auth=external" for u in urls]
        ssl_context = tls.context()
    parsed = [make_url(u) for u in urls]
    failure: BaseException | None = None
    for start in range(len(parsed)):
        connection = FailoverConnection(
            parsed, start, ssl_context=ssl_context, client_properties={"connection_name": name}
        )
        try:
            await connection.connect(timeout=timeout_s)
        except (ConnectionError, OSError, AMQPConnectionError, TimeoutError) as error:
            await asyncio.shield(connection.close())
            failure = error
            continue  # that node is down: try the next
        except BaseException:
            await asyncio.shield(connection.close())
            raise
        return connection
    assert failure is not None
    raise failure
