"""Batched acks on a real RabbitMQ: fewer ack frames than messages, each acked once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from support import pipeline_settings

from contracts.pki import PkiDir
from contracts.synth import generate_events
from kpr.config import Settings
from kpr.runtime import consume, publish_events, store_summary


@pytest.fixture
def settings(amqp_url: str, dev_pki: PkiDir, tmp_path: Path) -> Settings:
    return pipeline_settings(amqp_url, dev_pki, tmp_path)


async def _queue_depth(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count or 0


async def test_a_run_of_messages_is_acked_in_fewer_frames_each_exactly_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 events: every one commits, the ack frames are fewer than the messages, each is a
    multiple ack beyond the previous one and the last reaches the last delivery tag, so
    every delivery is covered by exactly one ack; the queue ends empty, nothing redelivered."""
    count = 300
    sent: list[tuple[int, int, bool]] = []
    original = aiormq.Channel.basic_ack

    async def counting_ack(
        self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> Any:
        sent.append((id(self), delivery_tag, multiple))
        return await original(self, delivery_tag, multiple=multiple, wait=wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", counting_ack)
    report = await publish_events(settings, generate_events(count, seed=41))
    assert report.all_confirmed

    counts = await consume(settings, until_idle_s=1.5)

    assert counts["committed"] == count
    assert counts["duplicate"] == 0
    assert counts["requeued"] == 0
    assert 0 < len(sent) < count
    assert len({channel for channel, _, _ in sent}) == 1
    tags = [tag for _, tag, _ in sent]
    assert all(multiple for _, _, multiple in sent)
    assert tags == sorted(set(tags))  # strictly increasing: no tag is acked twice
    assert tags[-1] == count  # ... and every delivery up to the last is covered
    assert await _queue_depth(settings.amqp_url, settings.topology().work_queue) == 0
    assert (await store_summary(settings)).events_committed == count
