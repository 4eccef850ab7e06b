"""The comparison consumer: the same processing, written with FastStream.

Same queue, same prefetch, same :class:`~consumers.processing.Processor` (decrypt,
verify, validate, dedup, commit), acked by FastStream after the handler returns. Only
the messaging layer differs, so the two rates side by side compare our consumer loop
with the framework's.
"""

from __future__ import annotations

import asyncio
import time

from faststream.rabbit import Channel, RabbitBroker, RabbitMessage, RabbitQueue

from consumers.processing import Processor

__all__ = ["consume_with_faststream"]


async def consume_with_faststream(
    url: str, queue_name: str, processor: Processor, *, prefetch: int, target: int
) -> float:
    """Seconds from the first delivery to the ``target``-th processed message."""
    broker = RabbitBroker(url, logger=None)
    done = asyncio.Event()
    state = {"count": 0, "first": 0.0, "last": 0.0}

    @broker.subscriber(
        RabbitQueue(queue_name, declare=False),
        channel=Channel(prefetch_count=prefetch),
    )
    async def handle(message: RabbitMessage) -> None:
        if state["count"] == 0:
            state["first"] = time.perf_counter()
        raw = message.raw_message
        from_her_id = (raw.headers or {}).get("fromHerId")
        await processor.process(
            raw.body,
            message_id=raw.message_id,
            from_her_id=from_her_id if isinstance(from_her_id, int) else None,
        )
        state["count"] += 1
        if state["count"] >= target:
            state["last"] = time.perf_counter()
            done.set()

    await broker.start()
    try:
        await done.wait()
    finally:
        await broker.stop()
    return state["last"] - state["first"]
