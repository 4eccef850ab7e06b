"""Opening the AMQP connection, the same way on both sides.

One persistent, robust connection per process (the national bus asks for that).
TLS settings live here so producer, consumer and tools cannot drift apart.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url

__all__ = ["TlsSettings", "connect"]


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


async def connect(
    url: str, *, tls: TlsSettings | None = None, name: str = "kpr-stream"
) -> AbstractRobustConnection:
    """Connect robustly; with ``tls`` the URL must be ``amqps://``.

    A connection that fails to open is closed before the error propagates (aio-pika's
    ``connect_robust`` leaves it to ``__del__``, which cannot close it outside a loop).
    """
    ssl_context = None
    if tls is not None:
        if not url.startswith("amqps://"):
            raise ValueError("TLS settings need an amqps:// URL")
        if tls.client_cert is not None:
            url = f"{url}{'&' if '?' in url else '?'}auth=external"
        ssl_context = tls.context()
    connection = aio_pika.RobustConnection(
        make_url(url), ssl_context=ssl_context, client_properties={"connection_name": name}
    )
    try:
        await connection.connect()
    except BaseException:
        await asyncio.shield(connection.close())
        raise
    return connection
