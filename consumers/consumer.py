"""The consumer: deliveries in, one explicit decision each, acks only after durability.

Per delivery (see :mod:`consumers.processing` for the decision table):

* committed / duplicate -> ack (the store committed before ``process`` returned);
* dead-letter -> publish the original bytes with reason headers to the dead-letter
  exchange, wait for the broker's confirm, *then* ack;
* retry -> publish to the delay queue for this attempt (confirm), then ack; after the
  last attempt, dead-letter with the retry history;
* our own bug -> nack with requeue; the quorum queue's delivery limit dead-letters a
  message that keeps failing.

Acks go out in batches (:mod:`consumers.acks`): one ``basic.ack(multiple=True)`` covers
the run of settled deliveries, never one that has not settled; a nack is sent on its own.

Shutdown is graceful: stop taking deliveries, let in-flight ones finish within a
timeout, and close; whatever is still unacked goes back to the queue.

A delivery still undecided after ``stall_after_s`` is a stall (a lost future, a store that
never answers): it would hold back every ack behind it and, silently, the idle-out. The
watchdog logs it once, by message id, and readiness reports it until it settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Self

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from consumers.acks import AckBatcher
from consumers.apprecs import AppRecDecision, AppRecSender
from consumers.deadletter import (
    attempt_of,
    dead_letter_message,
    publish_confirmed,
    retry_message,
)
from consumers.metrics import ConsumerMetrics, QueueRole
from consumers.processing import Disposition, Outcome, Processor
from consumers.receipts import ReceiptSender, ReceiptSigner, send_rejection_receipt
from contracts.addressregister import AddressRegister
from contracts.apprec import AppRecMode, AppRecStatus
from contracts.connection import TlsSettings, open_with_failover
from contracts.envelope import SigningIdentity
from contracts.errors import Reason
from contracts.resources import AsyncResource
from contracts.topology import Topology
from contracts.wire import BusProperties, bus_properties

__all__ = ["Consumer"]

log = logging.getLogger("kpr.consumer")

OutcomeListener = Callable[[Outcome, float], None]


class Consumer(AsyncResource):
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
        connect_timeout_s: float = 60.0,
        on_outcome: OutcomeListener | None = None,
        receipt_signer: ReceiptSigner | None = None,
        metrics: ConsumerMetrics | None = None,
        store_ping: Callable[[], Awaitable[None]] | None = None,
        watch_interval_s: float = 5.0,
        queue: str | None = None,
        stall_after_s: float = 120.0,
        apprec_signer: SigningIdentity | None = None,
        address_register: AddressRegister | None = None,
        apprec_mode: AppRecMode = AppRecMode.OFF,
    ) -> None:
        """With ``receipt_signer``, each dead letter also sends a signed rejection receipt
        to the sender's error queue (see :mod:`consumers.receipts`). With ``apprec_signer``
        and ``address_register``, each decision ``apprec_mode`` covers also sends an AppRec
        to the sender's ``_async`` queue once it is durable (:mod:`consumers.apprecs`).
        ``queue`` is the queue to consume (default the work queue; a partition queue when
        partitioned)."""
        self._url = url
        self._topology = topology
        self._processor = processor
        self._prefetch = prefetch
        self._max_attempts = max_attempts
        self._tls = tls
        self._connect_timeout_s = connect_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._on_outcome = on_outcome
        self._receipt_signer = receipt_signer
        self._receipts: ReceiptSender | None = None
        self._apprec_signer = apprec_signer
        self._address_register = address_register
        self._apprec_mode = apprec_mode
        self._apprecs: AppRecSender | None = None
        self._metrics = metrics
        self._store_ping = store_ping
        self._watch_interval_s = watch_interval_s
        self._queue_name = queue or topology.work_queue
        self._monitor: AbstractChannel | None = None
        self._subscription_problem: str | None = None
        self.resubscriptions = 0
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dead_letters: AbstractExchange | None = None
        self._retries: AbstractExchange | None = None
        self._consumer_tag: str | None = None
        self._acks = AckBatcher()
        self._stop = asyncio.Event()
        # The deliveries in flight: id(message) -> (monotonic start, message id).
        self._deliveries: dict[int, tuple[float, str | None]] = {}
        self._stall_after_s = stall_after_s
        self._stall_reported = False
        self._idle = asyncio.Event()
        self._last_activity = time.monotonic()
        self.counts: Counter[str] = Counter()

    async def __aenter__(self) -> Self:
        async def setup(connection: AbstractRobustConnection) -> AbstractChannel:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self._prefetch)
            await self._topology.declare(channel)
            self._queue = await channel.get_queue(self._queue_name, ensure=False)
            self._dead_letters = await channel.get_exchange(
                self._topology.dead_letter_exchange, ensure=False
            )
            self._retries = await channel.get_exchange(self._topology.retry_exchange, ensure=False)
            return channel

        # A node lost while we declare is failed over like one lost later.
        self._connection, self._channel = await open_with_failover(
            self._url, setup, tls=self._tls, name="kpr-consumer",
            timeout_s=self._connect_timeout_s,
        )  # fmt: skip
        if self._receipt_signer is not None:
            self._receipts = ReceiptSender(
                self._connection, topology=self._topology, signer=self._receipt_signer
            )
        if (
            self._apprec_signer is not None
            and self._address_register is not None
            and self._apprec_mode is not AppRecMode.OFF
        ):
            self._apprecs = AppRecSender(
                self._connection,
                topology=self._topology,
                signer=self._apprec_signer,
                address_register=self._address_register,
                mode=self._apprec_mode,
                observe=self._metrics.observe_apprec if self._metrics is not None else None,
            )
        return self

    @property
    def _in_flight(self) -> int:
        return len(self._deliveries)

    @property
    def consuming(self) -> bool:
        return self._consumer_tag is not None and not self._stop.is_set()

    @property
    def ack_frames(self) -> int:
        """``basic.ack`` frames sent so far (each may cover many deliveries)."""
        return self._acks.frames

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
        watchdog = asyncio.create_task(self._watch(), name="kpr-consumer-watchdog")
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=0.2)
                if (
                    until_idle_s is not None
                    and self._in_flight == 0
                    and time.monotonic() - self._last_activity >= until_idle_s
                ):
                    break
        finally:
            watchdog.cancel()
            # gather, not a suppressed await: a cancellation of *this* task still propagates.
            await asyncio.gather(watchdog, return_exceptions=True)
            await self._stop_consuming()
            if self._metrics is not None:
                self._metrics.set_ready(False)
        return self.counts

    async def readiness_problems(self) -> list[str]:
        """Why this consumer is not ready (empty: it is); for ``/readyz`` and the gauge.

        Ready means: the broker connection and channel are open, our ``basic.consume``
        is registered on the *current* channel (after a reconnect it may not be, see
        :meth:`_watch`), we are not stopping, and the store answers a ping.
        """
        problems: list[str] = []
        if self._connection is None or self._connection.is_closed:
            problems.append("broker: not connected")
        elif self._channel is None or self._channel.is_closed:
            problems.append("broker: channel closed (reconnecting)")
        elif self._stop.is_set():
            problems.append("consumer: stopping")
        elif self._consumer_tag is None:
            problems.append("consumer: not consuming")
        elif not await self._subscribed():
            problems.append("consumer: not subscribed on the current channel")
        elif self._subscription_problem is not None:
            problems.append(self._subscription_problem)
        if (stalled := self.oldest_delivery_s()) >= self._stall_after_s:
            problems.append(f"consumer: a delivery undecided for {stalled:.0f} s")
        if self._store_ping is not None:
            try:
                await self._store_ping()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                problems.append(f"store: {type(error).__name__}")
        return problems

    async def _subscribed(self) -> bool:
        """Whether our consumer tag is registered on the channel as it is now.

        aio-pika's robust channel reopens after a reconnect, but it re-issues
        ``basic.consume`` only for queues it declared itself; ours comes from
        ``get_queue(ensure=False)``, so after a reconnect we may hold a tag the new
        channel never heard of.
        """
        if self._channel is None or self._channel.is_closed or self._consumer_tag is None:
            return False
        try:
            underlay = await self._channel.get_underlay_channel()
        except Exception:
            return False
        if not isinstance(underlay, aiormq.Channel) or underlay.is_closed:
            return False
        return self._consumer_tag in underlay.consumers

    async def _watch(self) -> None:
        """Every ``watch_interval_s``: re-subscribe if the consumer was lost, sample
        queue depths, and set the readiness gauge. Failures are logged and retried."""
        failing = False
        while not self._stop.is_set():
            await asyncio.sleep(self._watch_interval_s)
            try:
                self._check_stalls()
                await self._check_subscription()
                await self._sample_queues()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Once per streak: while the broker is away this fails every interval.
                if not failing:
                    log.warning("watchdog check failed: %s", type(error).__name__)
                failing = True
            if self._metrics is not None:
                self._metrics.set_ready(not await self.readiness_problems())

    def oldest_delivery_s(self) -> float:
        """How long the oldest delivery in flight has been undecided (0 with none)."""
        if not self._deliveries:
            return 0.0
        return time.monotonic() - min(started for started, _ in self._deliveries.values())

    def _check_stalls(self) -> None:
        """Log a stall once, by the oldest delivery; the ones waiting behind it are the
        same stall. Armed again once nothing is past the threshold."""
        now = time.monotonic()
        stalled = [(started, key) for key, (started, _) in self._deliveries.items()
                   if now - started >= self._stall_after_s]  # fmt: skip
        if not stalled:
            self._stall_reported = False
            return
        if self._stall_reported:
            return
        self._stall_reported = True
        started, key = min(stalled)
        log.warning(
            "a delivery has been undecided for %.0f s; its ack, and those behind it, wait "
            "(it returns to the queue at shutdown)",
            now - started,
            extra={"message_id": self._deliveries[key][1], "count": len(stalled),
                   "in_flight": self._in_flight, "queue": self._queue_name},
        )  # fmt: skip

    async def _check_subscription(self) -> None:
        if self._stop.is_set() or self._queue is None or self._channel is None:
            return
        if self._channel.is_closed or await self._subscribed():
            self._subscription_problem = None
            return
        self._subscription_problem = "consumer: lost after reconnect, re-subscribing"
        log.warning(
            "the channel came back without our consumer; consuming again",
            extra={"consumer_tag": self._consumer_tag},
        )
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)
        self.resubscriptions += 1
        self._subscription_problem = None

    async def _sample_queues(self) -> None:
        """Passive declares on a channel of their own (a 404 closes the channel it ran on)."""
        if self._connection is None or self._connection.is_closed:
            return
        if self._monitor is None or self._monitor.is_closed:
            self._monitor = await self._connection.channel(publisher_confirms=False)
        underlay = await self._monitor.get_underlay_channel()
        work = await underlay.queue_declare(self._queue_name, passive=True, timeout=5)
        dead = await underlay.queue_declare(
            self._topology.dead_letter_queue, passive=True, timeout=5
        )
        if work.consumer_count == 0 and self.consuming and self._subscription_problem is None:
            # Seen by the broker, not only by our bookkeeping: no consumer at all.
            self._subscription_problem = "consumer: the broker sees no consumer on the queue"
        if self._metrics is not None:
            self._metrics.set_queue_depth(QueueRole.WORK, work.message_count or 0)
            self._metrics.set_queue_depth(QueueRole.DEAD_LETTER, dead.message_count or 0)

    async def _stop_consuming(self) -> None:
        """basic.cancel, then wait up to ``drain_timeout_s`` for in-flight deliveries.

        Deliveries the broker pushed before the cancel but we had not started stay
        unacked and return to the queue when the connection closes.
        """
        tag, self._consumer_tag = self._consumer_tag, None
        channel_open = self._channel is not None and not self._channel.is_closed
        if tag is not None and self._queue is not None and channel_open:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(self._queue.cancel(tag), timeout=5.0))
        started = time.monotonic()
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout_s)
        if self._in_flight:
            log.warning(
                "shutdown: deliveries still in flight are left to requeue",
                extra={"in_flight": self._in_flight},
            )
        else:
            log.info("shutdown: drained", extra={"seconds": round(time.monotonic() - started, 3)})

    async def aclose(self) -> None:
        """Close; closing twice is harmless. Unacked deliveries return to the queue."""
        apprecs, self._apprecs = self._apprecs, None
        if apprecs is not None:
            # Before the connection goes: what is pending still has a few seconds to go out.
            await apprecs.aclose()
        await self._acks.aclose()
        connection, self._connection = self._connection, None
        self._channel = None
        self._queue = None
        if connection is not None and not connection.is_closed:
            await asyncio.shield(connection.close())

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._idle.clear()
        self._last_activity = time.monotonic()
        self._deliveries[id(message)] = (self._last_activity, message.message_id)
        try:
            await self._handle(message)
        finally:
            del self._deliveries[id(message)]
            if not self._deliveries:
                self._idle.set()
            self._last_activity = time.monotonic()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started = time.monotonic()
        wire = bus_properties(message.headers)
        from_her_id = wire.from_her_id
        if self._metrics is not None:
            self._metrics.observe_wire(wire.wire)
        try:
            outcome = await self._processor.process(
                message.body, message_id=message.message_id, from_her_id=from_her_id
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Our bug, not the sender's: requeue; the delivery limit catches poison.
            log.exception(
                "processing failed unexpectedly", extra={"message_id": message.message_id}
            )
            self.counts["requeued"] += 1
            if self._metrics is not None:
                self._metrics.observe_requeued()
            await self._acks.nack(message, requeue=True)
            return

        try:
            if outcome.acks_after_commit:
                await self._acks.ack(message)
            elif outcome.disposition is Disposition.RETRY:
                outcome = await self._retry(message, outcome)
            else:
                await self._dead_letter(message, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The dead letter or retry copy was not confirmed (or the channel broke): the
            # original must not be acked. Requeue it, so it is decided again; the delivery
            # limit ends a loop. A broken channel requeues it by itself.
            log.warning(
                "could not settle a delivery: %s; requeueing",
                type(error).__name__,
                extra={"message_id": message.message_id},
            )
            self.counts["requeued"] += 1
            with contextlib.suppress(Exception):
                await self._acks.nack(message, requeue=True)
            return
        self._submit_apprec(message, outcome, wire)
        self.counts[outcome.disposition.value] += 1
        if outcome.reason is not None:
            self.counts[f"reason:{outcome.reason.value}"] += 1
        # Committed and duplicate deliveries are the happy path, one per message: DEBUG
        # (a JSON line costs ~30 µs). Dead letters and retries are what operators read.
        log.log(
            logging.DEBUG if outcome.acks_after_commit else logging.INFO,
            "delivery %s",
            outcome.disposition.value,
            extra={
                "message_id": message.message_id,
                "event_id": outcome.event_id,
                "reason": outcome.reason.value if outcome.reason else None,
                "signature": outcome.signature_form.value if outcome.signature_form else None,
            },
        )
        if self._metrics is not None:
            self._metrics.observe_outcome(outcome, time.monotonic() - started)
        if self._on_outcome is not None:
            self._on_outcome(outcome, time.monotonic() - started)

    def _submit_apprec(
        self, message: AbstractIncomingMessage, outcome: Outcome, wire: BusProperties
    ) -> None:
        """Hand the durable decision to the AppRec sender (it never waits): OK for a
        commit or a duplicate (a resend whose first AppRec may have been lost), rejected
        for a dead letter; a retry is not decided yet."""
        if self._apprecs is None or outcome.disposition is Disposition.RETRY:
            return
        self._apprecs.submit(
            AppRecDecision(
                status=AppRecStatus.OK if outcome.acks_after_commit else AppRecStatus.REJECTED,
                sender_her_id=outcome.sender_her_id,
                original_message_id=message.message_id,
                original_issued_at=wire.application_timestamp or datetime.now(UTC),
                reason=outcome.reason,
                description=outcome.description,
            )
        )

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
        # An unconfirmed dead letter raises here and the original stays unacked.
        await publish_confirmed(
            self._dead_letters, dead, routing_key=self._topology.dead_letter_queue
        )
        # The receipt never blocks the ack: it logs its own failures and returns.
        await send_rejection_receipt(
            self._receipts,
            message_id=message.message_id,
            reason=reason,
            description=outcome.description,
            sender_her_id=outcome.sender_her_id,
            event_id=outcome.event_id,
            event_type=outcome.event_type,
        )
        await self._acks.ack(message)

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
        await publish_confirmed(
            self._retries, copy, routing_key=self._topology.retry_queue(attempt)
        )
        await self._acks.ack(message)
        return outcome
