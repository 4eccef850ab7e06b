"""The consumer side of ``kpr bench``: draining a queue with our consumer, or raw.

:func:`consume` runs the real :class:`~consumers.consumer.Consumer` until a number of
deliveries are settled; :func:`raw_consume` is the baseline, aio-pika consume-with-ack of
the same bytes and nothing else. :func:`snapshot` and :func:`republish` let several
consumers drain the same messages one after another.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aio_pika

from consumers.consumer import Consumer
from consumers.processing import Outcome, Processor
from kpr.config import Settings

__all__ = ["Tally", "consume", "raw_consume", "republish", "snapshot"]


@dataclass
class Tally:
    """Deliveries settled, and when the first and the last were (``perf_counter``)."""

    target: int
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    committed_at: dict[str, float] | None = None
    ack_frames: int = 0

    def settled(self) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now


async def consume(
    settings: Settings, processor: Processor, target: int, *, prefetch: int,
    committed_at: dict[str, float] | None = None,
) -> Tally:  # fmt: skip
    """Run our Consumer until ``target`` deliveries are settled; with ``committed_at``,
    note when each event was committed (epoch s, for the latency figures)."""
    tally = Tally(target, committed_at=committed_at)
    running: list[Consumer] = []

    def on_outcome(outcome: Outcome, _seconds: float) -> None:
        tally.settled()
        if tally.committed_at is not None and outcome.event_id is not None:
            tally.committed_at[outcome.event_id] = time.time()
        if tally.count >= target:
            running[0].request_stop()

    async with Consumer(
        settings.amqp_url,
        topology=settings.topology(),
        processor=processor,
        prefetch=prefetch,
        watch_interval_s=3600,
        on_outcome=on_outcome,
    ) as consumer:
        running.append(consumer)
        await consumer.run()
        tally.ack_frames = consumer.ack_frames
    return tally


async def raw_consume(url: str, queue_name: str, target: int, prefetch: int) -> float:
    """Consume-with-ack of ``target`` messages; seconds from first to last ack."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=False)
        done = asyncio.Event()
        tally = Tally(target)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            tally.settled()
            if tally.count >= target:
                done.set()

        tag = await queue.consume(on_message)
        await done.wait()
        await queue.cancel(tag)
    return tally.last - tally.first


async def snapshot(settings: Settings, count: int) -> list[aio_pika.Message]:
    """Browse the queue's messages without consuming them (get, then nack with requeue)."""
    connection = await aio_pika.connect(settings.amqp_url)
    messages: list[aio_pika.Message] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.topology().work_queue, ensure=False)
        held = []
        while len(messages) < count:
            incoming = await queue.get(fail=False, no_ack=False)
            if incoming is None:
                break
            held.append(incoming)
            messages.append(
                aio_pika.Message(
                    incoming.body,
                    message_id=incoming.message_id,
                    content_type=incoming.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type=incoming.type,
                    headers=dict(incoming.headers or {}),
                )
            )
        for incoming in held:
            await incoming.nack(requeue=True)
    return messages


async def republish(settings: Settings, messages: list[aio_pika.Message]) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(settings.topology().work_exchange, ensure=False)
        topology = settings.topology()
        window = asyncio.Semaphore(256)

        async def one(message: aio_pika.Message) -> None:
            async with window:
                await exchange.publish(message, routing_key=topology.routing_key)

        await asyncio.gather(*(one(m) for m in messages))
