"""Batched acks: a multiple ack covers only settled deliveries, and a gap holds it back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError

from consumers.acks import AckBatcher, DeliveryTracker


def test_out_of_order_settlements_ack_only_the_contiguous_run() -> None:
    """Tags 2 and 3 settled before 1: nothing is ackable until 1 settles, then 1-3 at once."""
    tracker = DeliveryTracker()
    tracker.settle(3)
    tracker.settle(2)
    assert tracker.advance() is None
    assert tracker.held_back == 2
    tracker.settle(1)
    assert tracker.advance() == 3
    assert tracker.advance() is None
    assert tracker.held_back == 0


def test_a_gap_holds_back_every_ack_above_it() -> None:
    """With 4 unsettled, 5 and 6 wait; the ack reaches 6 only after 4 settles."""
    tracker = DeliveryTracker()
    for tag in (1, 2, 3):
        tracker.settle(tag)
    assert tracker.advance() == 3
    tracker.settle(5)
    tracker.settle(6)
    assert tracker.advance() is None
    tracker.settle(4)
    assert tracker.advance() == 6


def test_settling_a_tag_twice_is_refused() -> None:
    """A double settlement (which would be a double ack) raises instead of passing."""
    tracker = DeliveryTracker()
    tracker.settle(1)
    with pytest.raises(ValueError, match="twice"):
        tracker.settle(1)
    tracker.advance()
    with pytest.raises(ValueError, match="twice"):
        tracker.settle(1)


@dataclass(eq=False)
class FakeChannel:
    """Records the ack and nack frames an aiormq channel would write."""

    frames: list[tuple[str, int, bool]] = field(default_factory=list)
    is_closed: bool = False
    _closing: asyncio.Future[None] = field(default_factory=asyncio.Future)

    @property
    def closing(self) -> asyncio.Future[None]:
        return self._closing

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", delivery_tag, multiple))

    def close(self) -> None:
        self.is_closed = True
        self._closing.set_result(None)


@dataclass(eq=False)
class FakeMessage:
    channel: Any
    delivery_tag: int

    async def nack(self, requeue: bool = True) -> None:
        self.channel.frames.append(("nack", self.delivery_tag, False))


async def test_acks_settled_together_go_out_as_one_multiple_ack() -> None:
    """Five deliveries settled out of order in one iteration: one ack frame, through 5."""
    channel = FakeChannel()
    acks = AckBatcher()
    await asyncio.gather(*(acks.ack(FakeMessage(channel, tag)) for tag in (3, 1, 5, 2, 4)))  # type: ignore[arg-type]
    assert channel.frames == [("ack", 5, True)]
    assert acks.frames == 1


async def test_a_waiting_ack_returns_only_once_the_gap_before_it_settles() -> None:
    """Tag 2 settles before 1: its ack waits; a nack of 1 is sent alone, then 2 is acked."""
    channel = FakeChannel()
    acks = AckBatcher()
    second = asyncio.create_task(acks.ack(FakeMessage(channel, 2)))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert not second.done()
    assert channel.frames == []
    await acks.nack(FakeMessage(channel, 1))  # type: ignore[arg-type]
    await asyncio.wait_for(second, timeout=1)
    assert channel.frames == [("nack", 1, False), ("ack", 2, True)]


async def test_a_new_channel_starts_a_new_tracker_and_fails_the_old_waiters() -> None:
    """After a reconnect tags restart at 1: the new channel is acked from 1, and an ack
    still waiting behind a gap on the old channel fails (its delivery was requeued)."""
    old, new = FakeChannel(), FakeChannel()
    acks = AckBatcher()
    stranded = asyncio.create_task(acks.ack(FakeMessage(old, 7)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await acks.ack(FakeMessage(new, 1))  # type: ignore[arg-type]
    with pytest.raises(ChannelInvalidStateError):
        await stranded
    assert old.frames == []
    assert new.frames == [("ack", 1, True)]


async def test_a_channel_that_closes_fails_the_acks_waiting_on_it() -> None:
    """The channel closes with tag 2 waiting behind 1: that ack raises, nothing is sent."""
    channel = FakeChannel()
    acks = AckBatcher()
    waiting = asyncio.create_task(acks.ack(FakeMessage(channel, 2)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    channel.close()
    with pytest.raises(ChannelInvalidStateError):
        await asyncio.wait_for(waiting, timeout=1)
    assert channel.frames == []
