"""Publishing sealed events: persistent, confirmed, mandatory.

Every publish ends in exactly one of three outcomes, which the caller logs:

* **confirmed**: the broker took responsibility (positive publisher confirm);
* **failed**: the broker said no (:class:`~contracts.errors.Unroutable` when returned
  under ``mandatory``, :class:`~contracts.errors.PublishNacked` on a nack);
* **unknown**: no answer in time or the connection broke under it
  (:class:`~contracts.errors.ConfirmTimeout`). The message may or may not be on the
  broker; resending is safe because the message id is stable and the consumer
  deduplicates on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum, unique
from typing import Self

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError

from contracts.connection import TlsSettings, masked_url, open_with_failover
from contracts.envelope import CONTENT_TYPE
from contracts.errors import (
    BrokerUnreachable,
    ConfirmTimeout,
    PublishFailed,
    PublishNacked,
    Unroutable,
)
from contracts.resources import AsyncResource
from contracts.topology import Topology
from producers.metrics import ProducerMetrics
from producers.sealer import SealedMessage

__all__ = ["PublishOutcome", "PublishReport", "Publisher"]


@unique
class PublishOutcome(StrEnum):
    CONFIRMED = "confirmed"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass
class PublishReport:
    confirmed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def record(self, message_id: str, outcome: PublishOutcome) -> None:
        {
            PublishOutcome.CONFIRMED: self.confirmed,
            PublishOutcome.FAILED: self.failed,
            PublishOutcome.UNKNOWN: self.unknown,
        }[outcome].append(message_id)

    @property
    def all_confirmed(self) -> bool:
        return not self.failed and not self.unknown


OutcomeCallback = Callable[[SealedMessage, PublishOutcome, PublishFailed | None], Awaitable[None]]


def outcome_of(error: PublishFailed | None) -> PublishOutcome:
    if error is None:
        return PublishOutcome.CONFIRMED
    if isinstance(error, ConfirmTimeout):
        return PublishOutcome.UNKNOWN
    return PublishOutcome.FAILED


class Publisher(AsyncResource):
    """An async context manager around one connection and one confirming channel."""

    def __init__(
        self,
        url: str,
        *,
        topology: Topology,
        tls: TlsSettings | None = None,
        confirm_timeout_s: float = 30.0,
        declare: bool = True,
        exchange: str | None = None,
        metrics: ProducerMetrics | None = None,
        connect_timeout_s: float = 60.0,
    ) -> None:
        """``exchange`` overrides the work exchange, e.g. the sender's inbound exchange
        when broker permissions allow it to write nowhere else (then ``declare=False``).

        Opening raises ``TimeoutError`` if the connection and topology are not set up
        within ``connect_timeout_s``: a connect into a silent partition never returns."""
        self._connect_timeout_s = connect_timeout_s
        self._url = url
        self._topology = topology
        self._tls = tls
        self._confirm_timeout_s = confirm_timeout_s
        self._declare = declare
        self._exchange_name = exchange or topology.work_exchange
        self._metrics = metrics
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await self._open()
        except TimeoutError:
            raise BrokerUnreachable(
                f"no answer from the broker at {masked_url(self._url)} within "
                f"{self._connect_timeout_s:g} s",
                "is the host reachable and the port right? (KPR_CONNECT_TIMEOUT sets the wait)",
            ) from None

    async def _open(self) -> Self:
        async def setup(connection: AbstractRobustConnection) -> AbstractChannel:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if self._declare:
                await self._topology.declare(channel)
            self._exchange = await channel.get_exchange(self._exchange_name, ensure=False)
            return channel

        # A node lost while we declare is failed over like one lost later.
        self._connection, self._channel = await open_with_failover(
            self._url, setup, tls=self._tls, name="kpr-producer",
            timeout_s=self._connect_timeout_s,
        )  # fmt: skip
        return self

    async def aclose(self) -> None:
        """Close the connection; closing twice is harmless."""
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            await asyncio.shield(connection.close())

    async def readiness_problems(self) -> list[str]:
        """Why this publisher cannot publish now (empty: it can); for ``/readyz``."""
        if self._connection is None or self._connection.is_closed:
            return ["broker: not connected"]
        if self._channel is None or self._channel.is_closed:
            return ["broker: channel closed (reconnecting)"]
        return []

    async def publish(self, sealed: SealedMessage) -> None:
        """Publish one message and wait for its confirm.

        Raises :class:`Unroutable`, :class:`PublishNacked` or :class:`ConfirmTimeout`.
        With ``metrics``, counts it as published and in flight until it ends.
        """
        if self._metrics is None:
            await self._publish(sealed)
            return
        self._metrics.observe_sent()
        # A cancelled publish ended without an answer: unknown, like a lost confirm.
        error: PublishFailed | None = ConfirmTimeout("cancelled before the confirm")
        try:
            await self._publish(sealed)
            error = None
        except PublishFailed as failure:
            error = failure
            raise
        finally:
            self._metrics.observe_finished(error)

    async def _publish(self, sealed: SealedMessage) -> None:
        if self._exchange is None:
            raise RuntimeError("Publisher is not open")
        message = aio_pika.Message(
            sealed.body,
            message_id=sealed.message_id,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=sealed.created_at,
            type=sealed.event_type,
            headers=sealed.headers(),
        )
        try:
            await self._exchange.publish(
                message,
                routing_key=self._topology.routing_key,
                mandatory=True,
                timeout=self._confirm_timeout_s,
            )
        except PublishError:
            raise Unroutable("the broker could not route the message") from None
        except DeliveryError:
            raise PublishNacked("the broker refused the message") from None
        except TimeoutError:
            raise ConfirmTimeout("no publisher confirm in time") from None
        except (AMQPError, ChannelInvalidStateError, ConnectionError):
            raise ConfirmTimeout("the connection broke before the confirm") from None
        except asyncio.CancelledError:
            # aio-pika cancels in-flight confirms when the connection drops; that is an
            # unknown outcome. A cancellation of *our* task must propagate.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ConfirmTimeout("the confirm was lost with the connection") from None

    async def publish_all(
        self,
        messages: Iterable[SealedMessage] | AsyncIterable[SealedMessage],
        *,
        max_in_flight: int = 256,
        on_outcome: OutcomeCallback | None = None,
    ) -> PublishReport:
        """Publish many with up to ``max_in_flight`` unconfirmed at once.

        Confirms arrive in batches on the one channel, so throughput is bounded by the
        broker, not by a round trip per message.
        """
        report = PublishReport()
        slots = asyncio.Semaphore(max_in_flight)

        async def one(sealed: SealedMessage) -> None:
            try:
                error: PublishFailed | None = None
                try:
                    await self.publish(sealed)
                except PublishFailed as failure:
                    error = failure
                outcome = outcome_of(error)
                report.record(sealed.message_id, outcome)
                if on_outcome is not None:
                    await on_outcome(sealed, outcome, error)
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            if isinstance(messages, AsyncIterable):
                async for sealed in messages:
                    await slots.acquire()
                    group.create_task(one(sealed))
            else:
                for sealed in messages:
                    await slots.acquire()
                    group.create_task(one(sealed))
                    # A free slot does not yield: without this, a slow synchronous source
                    # (sealing) would be drained before the first publish left.
                    await asyncio.sleep(0)
        return report
