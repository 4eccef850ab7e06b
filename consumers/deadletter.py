"""What a dead letter carries, and what a retry carries.

A dead letter is the original bytes, unchanged, with headers that say why. The header
vocabulary is fixed (operators and ``kpr dlq`` filter on it) and never holds personal
data: reasons, descriptions written by us, ids, HER-ids, times, host and version.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from pamqp.commands import Basic

from contracts.errors import PublishNacked, Reason, Unroutable

__all__ = [
    "FAILURE_HEADERS",
    "HEADER_ATTEMPT",
    "HEADER_REASON",
    "HEADER_REPLAY_COUNT",
    "dead_letter_message",
    "publish_confirmed",
    "republishable",
    "retry_message",
]

CONSUMER_VERSION = "0.1.0"
HEADER_REASON = "x-kpr-reason"
HEADER_DESCRIPTION = "x-kpr-description"
HEADER_DEAD_LETTERED_AT = "x-kpr-dead-lettered-at"
HEADER_HOST = "x-kpr-consumer-host"
HEADER_VERSION = "x-kpr-consumer-version"
HEADER_ORIGINAL_EXCHANGE = "x-kpr-original-exchange"
HEADER_ORIGINAL_ROUTING_KEY = "x-kpr-original-routing-key"
HEADER_ORIGINAL_MESSAGE_ID = "x-kpr-original-message-id"
HEADER_SENDER_HER_ID = "x-kpr-sender-her-id"
HEADER_ATTEMPT = "x-kpr-attempt"
HEADER_RETRY_HISTORY = "x-kpr-retry-history"
HEADER_REPLAY_COUNT = "x-kpr-replay-count"

# Headers the broker or earlier hops set, which must not travel into a new hop: RabbitMQ
# 4.x ignores client-set x-death and a message republished with it can be dropped.
_BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)


# What one failure wrote: a replay drops these (and the broker headers) so that the next
# failure describes itself; the replay count alone travels on.
FAILURE_HEADERS = frozenset(
    {
        HEADER_REASON,
        HEADER_DESCRIPTION,
        HEADER_DEAD_LETTERED_AT,
        HEADER_HOST,
        HEADER_VERSION,
        HEADER_ORIGINAL_EXCHANGE,
        HEADER_ORIGINAL_ROUTING_KEY,
        HEADER_ORIGINAL_MESSAGE_ID,
        HEADER_SENDER_HER_ID,
        HEADER_ATTEMPT,
        HEADER_RETRY_HISTORY,
    }
)
BROKER_HEADERS = _BROKER_HEADERS


async def publish_confirmed(
    exchange: AbstractExchange, message: aio_pika.Message, *, routing_key: str
) -> None:
    """Publish with ``mandatory`` and return only on a positive broker confirm.

    On a channel without ``on_return_raises`` aio-pika reports a returned (unroutable)
    message as a normal result, so the confirm frame is checked here: anything but
    ``Basic.Ack`` raises :class:`Unroutable` / :class:`PublishNacked`, and the caller
    must not ack the original.
    """
    result: object = await exchange.publish(message, routing_key=routing_key, mandatory=True)
    if isinstance(result, Basic.Ack):
        return
    if isinstance(result, Basic.Nack | Basic.Reject):
        raise PublishNacked("the broker refused the message")
    raise Unroutable(f"the broker could not route the message to {routing_key}")


def _carried_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        k: republishable(v) for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS
    }


def republishable(value: Any) -> Any:
    """A header value as pamqp can write it again: it reads a byte array as ``bytes``
    (e.g. the packed AMQP 1.0 sections of :mod:`contracts.wire`) but writes only
    ``bytearray``; without this a 1.0 sender's message could never be dead-lettered."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: republishable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [republishable(v) for v in value]
    return value


def _copy(
    message: AbstractIncomingMessage, headers: Mapping[str, Any], **overrides: Any
) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        headers=dict(headers),
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        **overrides,
    )


def dead_letter_message(
    message: AbstractIncomingMessage,
    *,
    reason: Reason,
    description: str,
    sender_her_id: int | None,
) -> aio_pika.Message:
    headers = _carried_headers(message)
    headers.update(
        {
            HEADER_REASON: reason.value,
            HEADER_DESCRIPTION: description,
            HEADER_DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
            HEADER_HOST: socket.gethostname(),
            HEADER_VERSION: CONSUMER_VERSION,
            HEADER_ORIGINAL_EXCHANGE: headers.get(HEADER_ORIGINAL_EXCHANGE, message.exchange or ""),
            HEADER_ORIGINAL_ROUTING_KEY: headers.get(
                HEADER_ORIGINAL_ROUTING_KEY, message.routing_key or ""
            ),
            HEADER_ORIGINAL_MESSAGE_ID: message.message_id or "",
            HEADER_SENDER_HER_ID: sender_her_id if sender_her_id is not None else "",
        }
    )
    return _copy(message, headers)


def retry_message(
    message: AbstractIncomingMessage, *, attempt: int, delay_s: float, description: str
) -> aio_pika.Message:
    """A copy for the delay queue; it comes back to the work queue when ``delay_s`` passes."""
    headers = _carried_headers(message)
    history = list(headers.get(HEADER_RETRY_HISTORY) or [])
    history.append(f"{datetime.now(UTC).isoformat()} attempt {attempt}: {description}")
    headers[HEADER_ATTEMPT] = attempt
    headers[HEADER_RETRY_HISTORY] = history
    headers.setdefault(HEADER_ORIGINAL_EXCHANGE, message.exchange or "")
    headers.setdefault(HEADER_ORIGINAL_ROUTING_KEY, message.routing_key or "")
    return _copy(message, headers, expiration=delay_s)


def attempt_of(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(HEADER_ATTEMPT, 0)
    return value if isinstance(value, int) else 0
