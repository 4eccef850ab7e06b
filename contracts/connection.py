"""Opening the AMQP connection, the same way on both sides.

One persistent, robust connection per process (the national bus asks for that).
TLS settings live here so producer, consumer and tools cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    AuthenticationError,
    ChannelInvalidStateError,
    ConnectionNotAllowed,
    IncompatibleProtocolError,
    ProbableAuthenticationError,
    ProtocolSyntaxError,
)
from yarl import URL

from contracts.errors import BrokerRefused, BrokerUnreachable, SettingsError

__all__ = [
    "FailoverConnection",
    "TlsSettings",
    "broker_urls",
    "connect",
    "masked_url",
    "open_with_failover",
]

URL_HINT = "set KPR_AMQP_URL (or --amqp-url) to amqp[s]://user:password@host:port/vhost"

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        """The client's TLS context; an unreadable CA, certificate or key file is a
        :class:`SettingsError` naming it."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as error:
            raise SettingsError(
                f"KPR_AMQP_CA_FILE {self.ca_file} cannot be used: {_reason(error)}",
                "it names a PEM bundle of the CA that issued the broker's certificate",
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert is not None:
            try:
                context.load_cert_chain(
                    str(self.client_cert), str(self.client_key or self.client_cert)
                )
            except (OSError, ssl.SSLError) as error:
                raise SettingsError(
                    f"KPR_AMQP_CLIENT_CERT {self.client_cert} / KPR_AMQP_CLIENT_KEY "
                    f"cannot be used: {_reason(error)}",
                    "they name the client's PEM certificate and its unencrypted key",
                ) from None
        return context


def _reason(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error)
    return error.strerror or str(error)


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
        self.node = start % len(self._urls)  # index of the node of the last attempt
        super().__init__(self._current, **kwargs)
        self._next = start  # __init__ read the URL once: the first attempt is ``start``

    @property
    def url(self) -> URL:
        self._current = self._urls[self._next % len(self._urls)]
        self.node = self._next % len(self._urls)
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


def masked_url(url: str | URL) -> str:
    """The URL as it may be shown: the password replaced by ``******``."""
    try:
        parsed = URL(url) if isinstance(url, str) else url
        return str(parsed.with_password("******") if parsed.password else parsed)
    except ValueError:
        # Not a URL yarl can build (e.g. port 99999): mask what looks like a password.
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1******@", str(url))


def _check_url(url: str) -> None:
    """Refuse, before any connection attempt, a URL aio-pika would retry forever or
    fail on with a raw error: wrong scheme, no host, a port out of range, a nested path."""
    shown = masked_url(url)
    try:
        parsed = URL(url)
        port = parsed.explicit_port
    except ValueError as error:
        raise SettingsError(f"broker URL {shown} is not a URL: {error}", URL_HINT) from None
    if parsed.scheme not in ("amqp", "amqps"):
        raise SettingsError(f"broker URL {shown} must start with amqp:// or amqps://", URL_HINT)
    if not parsed.host:
        raise SettingsError(f"broker URL {shown} names no host", URL_HINT)
    if port is not None and not 1 <= port <= 65535:
        raise SettingsError(f"broker URL {shown} has port {port}, outside 1-65535", URL_HINT)
    # One vhost, one path segment ("/" is the default vhost, "/%2F" it spelled out).
    if parsed.raw_path.count("/") > 1:
        raise SettingsError(
            f"broker URL {shown} has a path of several segments; the vhost is one segment "
            "(encode a '/' in it as %2F)",
            URL_HINT,
        )


def broker_urls(url: str) -> list[str]:
    """``KPR_AMQP_URL`` may list several nodes of one cluster, separated by commas.

    Each is checked (scheme, host, port range, vhost): raises :class:`SettingsError`.
    """
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise SettingsError("no broker URL given", URL_HINT)
    for part in urls:
        _check_url(part)
    return urls


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it was raised from (aiormq wraps socket errors in its own)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in list(chain):
        chain.extend(arg for arg in item.args if isinstance(arg, BaseException))
    return chain


def _named(error: BaseException, url: URL, timeout_s: float) -> BrokerUnreachable | BrokerRefused:
    """The failure of a first connection as one of ours, naming the URL (masked)."""
    shown = masked_url(url)
    causes = _causes(error)
    for cause in causes:
        if isinstance(cause, ProbableAuthenticationError | AuthenticationError):
            return BrokerRefused(
                f"the broker at {shown} refused the login",
                "check the user and password in KPR_AMQP_URL",
            )
        if isinstance(cause, ConnectionNotAllowed) or (
            # aiormq reports the broker's refusal of Connection.Open (the vhost) as an
            # unexpected frame: the Connection.Close that came instead of OpenOk.
            isinstance(cause, ProtocolSyntaxError) and "Connection.OpenOk" in str(cause)
        ):
            return BrokerRefused(
                f"the broker at {shown} refused access to vhost {url.path[1:] or '/'!r}",
                "check the vhost in KPR_AMQP_URL exists and the user may use it",
            )
        if isinstance(cause, socket.gaierror):
            return BrokerUnreachable(
                f"unknown broker host {url.host!r} in {shown}", "check the host name"
            )
        if isinstance(cause, ConnectionRefusedError):
            return BrokerUnreachable(
                f"nothing listens at {url.host}:{url.port} ({shown})",
                "is the broker running and the port right? (5672 amqp, 5671 amqps)",
            )
        if isinstance(cause, ssl.SSLError):
            return BrokerUnreachable(
                f"TLS with the broker at {shown} failed: {cause.reason or cause}",
                "amqps:// needs the broker's TLS port (5671) and KPR_AMQP_CA_FILE its CA",
            )
        if isinstance(cause, ConnectionResetError | asyncio.IncompleteReadError):
            return BrokerUnreachable(
                f"the server at {shown} closed the connection before speaking AMQP: it does "
                "not answer as an AMQP 0-9-1 broker",
                "is it the broker's AMQP port? a plain port needs amqp://, a TLS port amqps://",
            )
        if isinstance(cause, ProtocolSyntaxError | IncompatibleProtocolError):
            return BrokerUnreachable(
                f"{shown} does not answer as a plain AMQP 0-9-1 broker",
                "a TLS port needs amqps:// and KPR_AMQP_CA_FILE; a plain port amqp://",
            )
    if any(isinstance(cause, TimeoutError) for cause in causes):
        return BrokerUnreachable(
            f"no answer from the broker at {shown} within {timeout_s:g} s",
            "is the host reachable, the port right, and TLS (amqps://) used only on a TLS port?",
        )
    return BrokerUnreachable(
        f"cannot connect to the broker at {shown}: {_said(error)}",
        "is the broker running and KPR_AMQP_URL right?",
    )


def _said(error: BaseException) -> str:
    text = " ".join(str(arg) for arg in error.args if not isinstance(arg, BaseException))
    return text or type(error).__name__


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
    When no node can be reached, raises :class:`BrokerUnreachable` (unknown host, refused
    port, timeout, TLS mismatch) or :class:`BrokerRefused` (login, vhost), naming the URL
    with its password masked: robust reconnect is for a connection that once was up.
    """
    urls = broker_urls(url)
    ssl_context = None
    if tls is not None:
        if not all(u.startswith("amqps://") for u in urls):
            raise SettingsError(
                "KPR_AMQP_CA_FILE is set but KPR_AMQP_URL is not amqps://",
                "use amqps:// with the broker's TLS port, or unset KPR_AMQP_CA_FILE",
            )
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
        except (ConnectionError, OSError, AMQPError, AMQPConnectionError, TimeoutError) as error:
            await asyncio.shield(connection.close())
            failure = error
            continue  # that node is down: try the next
        except BaseException:
            await asyncio.shield(connection.close())
            raise
        return connection
    assert failure is not None
    raise _named(failure, parsed[-1], timeout_s) from failure


async def open_with_failover(
    url: str,
    setup: Callable[[AbstractRobustConnection], Awaitable[T]],
    *,
    tls: TlsSettings | None = None,
    name: str = "kpr-stream",
    timeout_s: float = 60.0,
    pause_s: float = 0.5,
) -> tuple[AbstractRobustConnection, T]:
    """Connect and run ``setup`` (channels, topology) on the new connection, failing over
    when the connection is lost *while opening*.

    :func:`connect` moves on when a node does not answer; a robust connection moves on
    when it drops later. Between the two, a node that accepts the connection and then goes
    away during ``setup`` (a cluster node shutting down sends CONNECTION_FORCED) would end
    the open. Here that closes the half-open connection and starts again on the *next*
    node, each node at most twice, ``pause_s`` apart; any other error of ``setup`` (a
    refused declare, a bug) closes the connection and propagates unchanged.
    """
    nodes = len(broker_urls(url))
    first = 0
    lost: BaseException | None = None
    for attempt in range(2 * nodes):
        connection = await connect(
            _starting_at(url, first), tls=tls, name=name, timeout_s=timeout_s
        )
        try:
            return connection, await setup(connection)
        except BaseException as error:
            await asyncio.shield(connection.close())
            if not _is_connection_loss(error):
                raise
            lost = error
        node = connection.node if isinstance(connection, FailoverConnection) else 0
        log.warning(
            "connection to broker node %d lost while opening (%s); trying the next node",
            (first + node) % nodes + 1,
            type(lost).__name__,
        )
        first = (first + node + 1) % nodes
        await asyncio.sleep(pause_s * (attempt + 1))
    assert lost is not None
    raise lost


def _starting_at(url: str, first: int) -> str:
    """``url``'s node list rotated to begin at node ``first`` (the rest in order after)."""
    urls = broker_urls(url)
    return ",".join(urls[first:] + urls[:first])


def _is_connection_loss(error: BaseException) -> bool:
    """Whether ``error`` out of a channel operation means the connection went away."""
    if isinstance(error, asyncio.CancelledError):
        # aiormq cancels pending calls when the connection closes under them; a
        # cancellation of *our* task is not a connection loss and must propagate.
        task = asyncio.current_task()
        return task is not None and not task.cancelling()
    return isinstance(error, (ConnectionError, OSError, ChannelInvalidStateError))
