"""Acknowledging deliveries in batches: one ``basic.ack(multiple=True)`` for many.

Each ``basic.ack`` is a frame of its own on the socket, about an eighth of the
consumer's CPU when sent one per message. Deliveries settle out of order (the store
commits in groups, the opener pool returns in batches), so a multiple ack may only cover
a run of *settled* tags: :class:`DeliveryTracker` keeps the settled tags above the last
one acked and says how far the contiguous run reaches. A gap (a delivery still being
decided) holds back the acks above it; nothing is ever acked before it settled.

A delivery is settled when it may be acked (committed, duplicate, or its dead-letter or
retry copy confirmed) or once its individual ``basic.nack`` was sent. A multiple ack
passes over nacked tags but never names one: the broker no longer holds it, and an ack
naming a tag it does not hold closes the channel.

Delivery tags count from 1 on each channel. A channel that reopens after a reconnect
starts again, and what the old one held unacked is back on the queue, so
:class:`AckBatcher` starts a fresh tracker for a new channel and fails the callers still
waiting on the old one (they saw their delivery requeued, as with a failed ack).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from dataclasses import dataclass, field

import aiormq
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelInvalidStateError

__all__ = ["AckBatcher", "DeliveryTracker"]


class DeliveryTracker:
    """Settled delivery tags of one channel; pure bookkeeping, no I/O.

    The tag a multiple ack names must itself be unacked on the broker (RabbitMQ closes
    the channel on an "unknown delivery tag"), so a nacked tag is passed over but never
    named: the run's ack names its highest *acked* tag.
    """

    def __init__(self) -> None:
        self.acked_through = 0
        self._settled: dict[int, bool] = {}  # tag -> settled by an ack (not a nack)
        self._next = 1

    def settle(self, tag: int, *, acked: bool = True) -> None:
        """Mark ``tag`` settled, by an ack to come or (``acked=False``) by a nack already
        sent. Raises ``ValueError`` if it was settled already."""
        if tag < self._next or tag in self._settled:
            raise ValueError(f"delivery tag {tag} settled twice")
        self._settled[tag] = acked

    def advance(self) -> int | None:
        """Pass the contiguous settled run above the last one; the highest tag in it to
        ack (``multiple=True``), or ``None`` if it holds none (a gap, or only nacks)."""
        through = None
        while (acked := self._settled.pop(self._next, None)) is not None:
            if acked:
                through = self._next
            self._next += 1
        if through is not None:
            self.acked_through = through
        return through

    @property
    def held_back(self) -> int:
        """Settled tags waiting behind a gap."""
        return len(self._settled)


@dataclass(eq=False)
class _ChannelAcks:
    channel: aiormq.abc.AbstractChannel
    tracker: DeliveryTracker = field(default_factory=DeliveryTracker)
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None

    def release(self, through: int) -> None:
        while self.waiters and self.waiters[0][0] <= through:
            _, future = heapq.heappop(self.waiters)
            if not future.done():
                future.set_result(None)

    def fail(self, error: BaseException) -> None:
        waiters, self.waiters = self.waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)


class AckBatcher:
    """``await acks.ack(message)`` returns once an ack covering it was written.

    Acks settled in the same loop iteration (and while the previous ack frame was being
    written) go out as one ``basic.ack(multiple=True)``. Raises
    ``ChannelInvalidStateError`` if the delivery's channel closed before its ack left.
    """

    def __init__(self) -> None:
        self._current: _ChannelAcks | None = None
        #: ``basic.ack`` frames written (for tests and the benchmark).
        self.frames = 0

    async def ack(self, message: AbstractIncomingMessage) -> None:
        acks = self._adopt(message.channel)  # raises if the channel is closed
        tag = _tag_of(message)
        acks.tracker.settle(tag)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(acks.waiters, (tag, waiter))
        self._schedule(acks)
        await waiter

    async def nack(self, message: AbstractIncomingMessage, *, requeue: bool = True) -> None:
        """``basic.nack`` this delivery alone, then count it settled for the batches."""
        acks = self._adopt(message.channel)
        await message.nack(requeue=requeue)
        acks.tracker.settle(_tag_of(message), acked=False)
        self._schedule(acks)

    def _adopt(self, channel: aiormq.abc.AbstractChannel) -> _ChannelAcks:
        current = self._current
        if current is not None and current.channel is channel:
            return current
        if current is not None:
            current.fail(ChannelInvalidStateError("the channel was replaced"))
        current = self._current = _ChannelAcks(channel)
        closing = channel.closing
        closing.add_done_callback(lambda _: self._on_closed(current))
        return current

    def _on_closed(self, acks: _ChannelAcks) -> None:
        acks.fail(ChannelInvalidStateError("the channel closed before the ack"))
        if self._current is acks:
            self._current = None

    def _schedule(self, acks: _ChannelAcks) -> None:
        if acks.flusher is None:
            acks.flusher = asyncio.get_running_loop().create_task(self._flush(acks))

    async def _flush(self, acks: _ChannelAcks) -> None:
        try:
            await asyncio.sleep(0)  # let this iteration's settlements join
            while (through := acks.tracker.advance()) is not None:
                try:
                    await acks.channel.basic_ack(through, multiple=True)
                except asyncio.CancelledError:
                    acks.fail(ChannelInvalidStateError("the ack was cancelled"))
                    raise
                except Exception as error:
                    acks.fail(error)
                    return
                self.frames += 1
                acks.release(through)
        finally:
            acks.flusher = None

    async def aclose(self) -> None:
        """Wait for an ack being written; callers still behind a gap are failed."""
        current, self._current = self._current, None
        if current is None:
            return
        if current.flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(current.flusher)
        current.fail(ChannelInvalidStateError("the consumer closed"))


def _tag_of(message: AbstractIncomingMessage) -> int:
    tag = message.delivery_tag
    if tag is None:
        raise ValueError("a delivery without a delivery tag cannot be acked")
    return tag
