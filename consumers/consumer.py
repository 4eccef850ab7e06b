"""The consumer: deliveries in, one explicit decision each, acks only after durability.

Per delivery (see :mod:`consumers.processing` for the decision table):

* committed / duplicate -> ack (the store committed before ``process`` returned);
* dead-letter -> publish the original bytes with reason headers to the dead-letter
  exchange, wait for the broker's confirm, *then* ack;
* retry -> publish to the delay queue for this attempt (confirm), then ack; after the
  last attempt, dead-letter with the retry history;
* our own bug -> nack with requeue; the quorum queue's delivery limit dead-letters a
  message that keeps failing.

Shutdown is graceful: stop taking deliveries, let in-flight ones finish within a
timeout, and close; whatever is still unacked goes back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from consumers.deadletter import (
    attempt_of,
    dead_letter_message,
    retry_message,
    sender_her_id_of,
)
from consumers.processing import Disposition, Outcome, Processor
from contracts.connection import TlsSettings, connect
from contracts.errors import Reason
from contracts.topology import Topology

__all__ = ["Consumer"]

log = logging.getLogger("kpr.consumer")

OutcomeListener = Callable[[Outcome, float], None]


class Consumer:
    """An async context manager: ``async with Consumer(...) as c: await c.run()``."""

    def __init__(
        self,
        url: str,
        *,
        topology: Topology,
        processor: Processor,
        prefetch: int = 64,
        max_attempts: int = 5,
        tls: TlsSettings | None = None,
        drain_timeout_s: float = 30.0,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self._url = url
        self._topology = topology
        self._processor = processor
        self._prefetch = prefetch
        self._max_attempts = max_attempts
        self._tls = tls
        self._drain_timeout_s = drain_timeout_s
        self._on_outcome = on_outcome
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dead_letters: AbstractExchange | None = None
        self._retries: AbstractExchange | None = None
        self._consumer_tag: str | None = None
        self._stop = asyncio.Event()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._last_activity = time.monotonic()
        self.counts: Counter[str] = Counter()

    async def __aenter__(self) -> Self:
        self._connection = await connect(self._url, tls=self._tls, name="kpr-consumer")
        try:
            self._channel = await self._connection.channel(publisher_confirms=True)
            await self._channel.set_qos(prefetch_count=self._prefetch)
            await self._topology.declare(self._channel)
            self._queue = await self._channel.get_queue(self._topology.work_queue, ensure=False)
            self._dead_letters = await self._channel.get_exchange(
                self._topology.dead_letter_exchange, ensure=False
            )
            self._retries = await self._channel.get_exchange(
                self._topology.retry_exchange, ensure=False
            )
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def consuming(self) -> bool:
        return self._consumer_tag is not None and not self._stop.is_set()

    def request_stop(self) -> None:
        """Stop taking deliveries; ``run`` drains what is in flight and returns."""
        self._stop.set()

    async def run(self, *, until_idle_s: float | None = None) -> Counter[str]:
        """Consume until :meth:`request_stop`, or until idle for ``until_idle_s``."""
        if self._queue is None:
            raise RuntimeError("Consumer is not open")
        self._stop.clear()
        self._last_activity = time.monotonic()
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=0.2)
                if until_idle_s is not None and self._in_flight == 0:
                    if time.monotonic() - self._last_activity >= until_idle_s:
                        break
        finally:
            await self._stop_consuming()
        return self.counts

    async def _stop_consuming(self) -> None:
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is not None and self._queue is not None and self._channel is not None:
            if not self._channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._queue.cancel(tag))
        deadline = time.monotonic() + self._drain_timeout_s
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._in_flight:
            log.warning("shutdown: %d deliveries still in flight are left to requeue", self._in_flight)

    async def aclose(self) -> None:
        """Close; closing twice is harmless. Unacked deliveries return to the queue."""
        connection, self._connection = self._connection, None
        self._channel = None
        self._queue = None
        if connection is not None and not connection.is_closed:
            await asyncio.shield(connection.close())

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._last_activity = time.monotonic()
        try:
            await self._handle(message)
        finally:
            self._in_flight -= 1
            self._last_activity = time.monotonic()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started = time.monotonic()
        from_her_id = sender_her_id_of(message)
        try:
            outcome = await self._processor.process(
                message.body, message_id=message.message_id, from_her_id=from_her_id
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Our bug, not the sender's: requeue; the delivery limit catches poison.
            log.exception("processing failed unexpectedly", extra={"message_id": message.message_id})
            self.counts["requeued"] += 1
            await message.nack(requeue=True)
            return

        if outcome.acks_after_commit:
            await message.ack()
        elif outcome.disposition is Disposition.RETRY:
            outcome = await self._retry(message, outcome)
        else:
            await self._dead_letter(message, outcome)
        self.counts[outcome.disposition.value] += 1
        if outcome.reason is not None:
            self.counts[f"reason:{outcome.reason.value}"] += 1
        log.info(
            "delivery %s",
            outcome.disposition.value,
            extra={
                "message_id": message.message_id,
                "event_id": outcome.event_id,
                "reason": outcome.reason.value if outcome.reason else None,
            },
        )
        if self._on_outcome is not None:
            self._on_outcome(outcome, time.monotonic() - started)

    async def _dead_letter(self, message: AbstractIncomingMessage, outcome: Outcome) -> None:
        assert self._dead_letters is not None
        reason = outcome.reason or Reason.MALFORMED
        dead = dead_letter_message(
            message,
            reason=reason,
            description=outcome.description,
            sender_her_id=outcome.sender_her_id,
        )
        # Confirm first, then ack: a crash in between leaves a redelivery, never a loss.
        await self._dead_letters.publish(
            dead, routing_key=self._topology.dead_letter_queue, mandatory=True
        )
        await message.ack()

    async def _retry(self, message: AbstractIncomingMessage, outcome: Outcome) -> Outcome:
        assert self._retries is not None
        attempt = attempt_of(message)
        if attempt + 1 >= self._max_attempts:
            exhausted = Outcome(
                Disposition.DEAD_LETTER,
                Reason.RETRIES_EXHAUSTED,
                f"still failing after {attempt + 1} attempts: {outcome.description}",
                event_id=outcome.event_id,
                event_type=outcome.event_type,
                sender_her_id=outcome.sender_her_id,
            )
            await self._dead_letter(message, exhausted)
            return exhausted
        delays = self._topology.retry_delays_s
        base = delays[min(attempt, len(delays) - 1)]
        delay = base * (1 + random.uniform(0, 0.25))  # noqa: S311 - jitter, not security
        copy = retry_message(
            message, attempt=attempt + 1, delay_s=delay, description=outcome.description
        )
        await self._retries.publish(
            copy, routing_key=self._topology.retry_queue(attempt), mandatory=True
        )
        await message.ack()
        return outcome
