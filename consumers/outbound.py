"""Messages from the register to a communication party: receipts on ``{herId}_error`` and
AppRecs on ``{herId}_async``. Shared by :mod:`consumers.receipts` and
:mod:`consumers.apprecs`.

* :func:`national_message` shapes one message as Helsenorge.Messaging reads it: the
  national properties as 0-9-1 headers (strings) and, for an AMQP 1.0 receiver on
  RabbitMQ 3.x, packed as the 1.0 application-properties and properties sections
  (:mod:`contracts.wire`): that broker shows a 1.0 receiver no 0-9-1 header.
* :class:`PartyChannel` is a channel of its own, with confirms, that makes sure each
  party's queue exists before the first message to it. *Passive first*: where the broker
  definitions pre-declare a party's queue (``infra/broker/definitions.json``) the
  consumer's broker user may publish to it but not configure it, and a plain declare of
  an existing queue still needs configure permission. A channel error (a 404, a refused
  declare) closes only this channel, never the consumer's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Self

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, FieldValue

from contracts.resources import AsyncResource
from contracts.wire import (
    APP_PROPERTIES_HEADER,
    PROPERTIES_HEADER,
    pack_application_properties,
    pack_properties,
)

__all__ = ["PartyChannel", "national_message"]

#: Declares a party's queue and its binding on a channel; returns the queue's name.
DeclareQueue = Callable[[AbstractChannel, int], Awaitable[str]]


def national_message(
    body: bytes,
    *,
    properties: Mapping[str, str],
    message_id: str,
    subject: str,
    content_type: str,
    message_type: str,
    timestamp: datetime,
    correlation_id: str | None = None,
    reply_to: str | None = None,
) -> aio_pika.Message:
    """A persistent message with ``properties`` as headers and as packed 1.0 sections."""
    packed: dict[str, FieldValue] = {
        APP_PROPERTIES_HEADER: bytearray(pack_application_properties(properties)),
        PROPERTIES_HEADER: bytearray(
            pack_properties(
                message_id=message_id,
                subject=subject,
                correlation_id=correlation_id,
                reply_to=reply_to,
                content_type=content_type,
            )
        ),
    }
    return aio_pika.Message(
        body,
        content_type=content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        type=message_type,
        timestamp=timestamp,
        headers={**properties, **packed},
    )


class PartyChannel(AsyncResource):
    """The exchange to publish to a party on, once that party's queue is known to exist."""

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        exchange: str,
        queue_of: Callable[[int], str],
        declare: DeclareQueue,
        on_return_raises: bool = False,
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._queue_of = queue_of
        self._declare = declare
        self._on_return_raises = on_return_raises
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._ready: set[int] = set()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Close the channel; harmless twice."""
        channel, self._channel = self._channel, None
        self._exchange = None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def exchange_for(self, her_id: int) -> AbstractExchange:
        async with self._lock:
            channel = await self._open()
            if her_id not in self._ready:
                try:
                    await channel.declare_queue(self._queue_of(her_id), passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    channel = await self._open()  # the 404 closed the channel
                    await self._declare(channel, her_id)
                self._ready.add(her_id)
            if self._exchange is None:
                self._exchange = await channel.get_exchange(self._exchange_name, ensure=False)
            return self._exchange

    async def _open(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=self._on_return_raises
            )
            self._exchange = None
            self._ready.clear()
        return self._channel
