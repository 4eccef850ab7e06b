"""Every resource closes cleanly, and closing it again is harmless (trio's rule).

One test per kind of resource, each opened for real (the session's broker, a SQLite
store, worker processes), closed by ``async with``, then closed again by hand.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from support import pipeline_settings

from consumers.consumer import Consumer
from consumers.pool import OpenerPool
from consumers.processing import Processor
from consumers.pseudonym import Pseudonymiser
from consumers.replay import DeadLetterQueue
from consumers.store import open_store
from contracts.pki import PkiDir
from kpr.runtime import build_opener
from producers.publisher import Publisher

KEY = bytes(range(32))


async def test_publisher_consumer_and_dead_letter_queue_close_twice(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    settings = pipeline_settings(amqp_vhost_url, dev_pki, tmp_path)
    topology = settings.topology()
    async with Publisher(settings.amqp_url, topology=topology) as publisher:
        assert await publisher.readiness_problems() == []
    await publisher.aclose()
    assert await publisher.readiness_problems() == ["broker: not connected"]

    async with open_store(settings.store_url) as store:
        processor = Processor(build_opener(settings), Pseudonymiser(KEY), store)
        async with Consumer(settings.amqp_url, topology=topology, processor=processor) as consumer:
            pass
        await consumer.aclose()
        assert "broker: not connected" in await consumer.readiness_problems()
    await store.aclose()

    async with DeadLetterQueue(settings.amqp_url, topology=topology) as dlq:
        assert await dlq.depth() == 0
    await dlq.aclose()


async def test_an_opener_pool_closes_twice_and_refuses_work_after(
    dev_pki: PkiDir, tmp_path: Path
) -> None:
    settings = pipeline_settings("amqp://unused/", dev_pki, tmp_path)
    async with OpenerPool(functools.partial(build_opener, settings), workers=1) as pool:
        assert pool.worker_pids
    await pool.aclose()
    pool.close()
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.open(b"x")
