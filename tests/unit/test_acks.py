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


def test_a_nacked_tag_is_passed_over_but_never_named() -> None:
    """1 acked, 2 nacked, 3 acked: the run reaches 3; with 3 nacked instead it names 1."""
    tracker = DeliveryTracker()
    tracker.settle(1)
    tracker.settle(2, acked=False)
    tracker.settle(3)
    assert tracker.advance() == 3
    tracker.settle(4)
    tracker.settle(5, acked=False)
    assert tracker.advance() == 4
    tracker.settle(6, acked=False)
    assert tracker.advance() is None
    tracker.settle(7)
    assert tracker.advance() == 7


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
    """Records the ack and nack frames an aiormq channel would write, and refuses an ack
    the way RabbitMQ does: the tag it names must be delivered and still unacked."""

    delivered: int = 0
    frames: list[tuple[str, int, bool]] = field(default_factory=list)
    outstanding: set[int] = field(default_factory=set)
    is_closed: bool = False
    _closing: asyncio.Future[None] = field(default_factory=asyncio.Future)

    @property
    def closing(self) -> asyncio.Future[None]:
        return self._closing

    def deliver(self, count: int) -> list[FakeMessage]:
        tags = range(self.delivered + 1, self.delivered + count + 1)
        self.delivered += count
        self.outstanding.update(tags)
        return [FakeMessage(self, tag) for tag in tags]

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        if delivery_tag not in self.outstanding:
            raise AssertionError(f"PRECONDITION_FAILED - unknown delivery tag {delivery_tag}")
        covered = {t for t in self.outstanding if t <= delivery_tag} if multiple else {delivery_tag}
        self.outstanding -= covered
        self.frames.append(("ack", delivery_tag, multiple))

    def nack(self, delivery_tag: int) -> None:
        self.outstanding.remove(delivery_tag)
        self.frames.append(("nack", delivery_tag, False))

    def close(self) -> None:
        self.is_closed = True
        self._closing.set_result(None)


@dataclass(eq=False)
class FakeMessage:
    channel: Any
    delivery_tag: int

    async def nack(self, requeue: bool = True) -> None:
        self.channel.nack(self.delivery_tag)


async def test_acks_settled_together_go_out_as_one_multiple_ack() -> None:
    """Five deliveries settled out of order in one iteration: one ack frame, through 5."""
    channel = FakeChannel()
    messages = channel.deliver(5)
    acks = AckBatcher()
    await asyncio.gather(*(acks.ack(messages[i]) for i in (2, 0, 4, 1, 3)))  # type: ignore[arg-type]
    assert channel.frames == [("ack", 5, True)]
    assert channel.outstanding == set()
    assert acks.frames == 1


async def test_a_waiting_ack_returns_only_once_the_gap_before_it_settles() -> None:
    """Tag 2 settles before 1: its ack waits; a nack of 1 is sent alone, then 2 is acked."""
    channel = FakeChannel()
    first, second = channel.deliver(2)
    acks = AckBatcher()
    waiting = asyncio.create_task(acks.ack(second))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert channel.frames == []
    await acks.nack(first)  # type: ignore[arg-type]
    await asyncio.wait_for(waiting, timeout=1)
    assert channel.frames == [("nack", 1, False), ("ack", 2, True)]
    assert channel.outstanding == set()


async def test_a_run_ending_in_a_nack_is_acked_through_its_last_acked_tag() -> None:
    """1 and 2 acked, 3 nacked: the multiple ack names 2 (naming 3, which the broker no
    longer holds, would close the channel); a later run continues from 4."""
    channel = FakeChannel()
    one, two, three, four = channel.deliver(4)
    acks = AckBatcher()
    await acks.nack(three)  # type: ignore[arg-type]
    await asyncio.gather(acks.ack(one), acks.ack(two))  # type: ignore[arg-type]
    await acks.ack(four)  # type: ignore[arg-type]
    assert channel.frames == [("nack", 3, False), ("ack", 2, True), ("ack", 4, True)]
    assert channel.outstanding == set()


async def test_a_run_of_nacks_only_sends_no_ack() -> None:
    """Two deliveries nacked and none acked: nothing but the two nacks is sent."""
    channel = FakeChannel()
    one, two = channel.deliver(2)
    acks = AckBatcher()
    await acks.nack(one)  # type: ignore[arg-type]
    await acks.nack(two)  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert channel.frames == [("nack", 1, False), ("nack", 2, False)]


async def test_a_new_channel_starts_a_new_tracker_and_fails_the_old_waiters() -> None:
    """After a reconnect tags restart at 1: the new channel is acked from 1, and an ack
    still waiting behind a gap on the old channel fails (its delivery was requeued)."""
    old, new = FakeChannel(), FakeChannel()
    stale = old.deliver(7)[-1]
    [fresh] = new.deliver(1)
    acks = AckBatcher()
    stranded = asyncio.create_task(acks.ack(stale))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await acks.ack(fresh)  # type: ignore[arg-type]
    with pytest.raises(ChannelInvalidStateError):
        await stranded
    assert old.frames == []
    assert new.frames == [("ack", 1, True)]


async def test_a_channel_that_closes_fails_the_acks_waiting_on_it() -> None:
    """The channel closes with tag 2 waiting behind 1: that ack raises, nothing is sent."""
    channel = FakeChannel()
    _, second = channel.deliver(2)
    acks = AckBatcher()
    waiting = asyncio.create_task(acks.ack(second))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    channel.close()
    with pytest.raises(ChannelInvalidStateError):
        await asyncio.wait_for(waiting, timeout=1)
    assert channel.frames == []
