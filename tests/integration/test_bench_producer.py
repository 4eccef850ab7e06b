"""The benchmark's producer process is never waited for in vain: a producer that dies
is reported at once, and a cancelled wait (Ctrl-C) stops the producer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kpr.benchmarks.load import Load, start_producer
from kpr.config import Settings
from kpr.localprocess import free_port


async def test_a_producer_that_dies_is_reported_not_waited_for(tmp_path: Path) -> None:
    nobody_listens = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    settings = Settings().with_overrides(amqp_url=nobody_listens, state_dir=tmp_path)
    producer = start_producer(settings, Load(10, 8, raw_size=100))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        await producer.result()
    assert time.monotonic() - started < 60
    assert not producer.process.is_alive()


async def test_a_cancelled_wait_stops_the_producer(amqp_vhost_url: str, tmp_path: Path) -> None:
    settings = Settings().with_overrides(
        amqp_url=amqp_vhost_url, state_dir=tmp_path, queue_prefix="bench-cancel."
    )
    producer = start_producer(settings, Load(10_000_000, 64, raw_size=100))
    waiting = asyncio.create_task(producer.result())
    await asyncio.sleep(1.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    producer.process.join(10)
    assert not producer.process.is_alive()
