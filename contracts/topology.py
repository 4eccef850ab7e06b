"""Broker topology: every exchange, queue and argument, declared from this one place.

Names follow the national service bus: queues are per party and named by HER-id
(``{herId}_async`` incoming, ``{herId}_dl`` dead letters, ``{herId}_error`` error
messages back to a sender). ::

    producer --(routing key "event")--> kpr.in.{sender} --> kpr.events (direct)
        --> {register}_async    quorum; delivery limit; DLX kpr.dlx, at-least-once
    consumer, permanent failure --> kpr.dlx --> {register}_dl            (quorum)
    consumer, transient failure --> kpr.retry --> kpr.retry.{n}  (quorum, per-message TTL)
        --(TTL expires, at-least-once dead-lettering)--> kpr.events --> {register}_async
    consumer, rejection receipt --> kpr.receipts --(sender HER-id)--> {sender}_error
    consumer, AppRec --> {bus_namespace} --("{sender}_async")--> {sender}_async   (quorum)
    broker, delivery limit reached --> kpr.dlx --> {register}_dl

``prefix`` isolates several topologies on one broker (tests, benchmarks).

The national bus's own entry (Helsenorge.Messaging over AMQP 1.0, see
:mod:`contracts.wire`): a sender attaches to ``/exchange/{namespace}/{toHerId}_async``,
i.e. publishes to the exchange named by its connection string's path with the queue's
name as routing key. Our broker mirrors that::

    AMQP 1.0 sender --("{register}_async")--> {bus_namespace} (direct) --> {register}_async

With partitions the bus exchange is bound to ``kpr.partitions`` instead. A 1.0 sender sets
no partition key, and the consistent-hash exchange hashes a missing header as one value,
so every national message goes to the same partition, in arrival order: national traffic
is not spread over the partitions, but none is lost or sent twice (docs/OPERATIONS.md,
"National bus").

Partitioned (``partitions=N > 0``), for per-person order across several consumers::

    kpr.events --("event")--> kpr.partitions (x-consistent-hash on header kprPartitionKey)
        --(weight "1" each)--> {register}_async.p0 ... {register}_async.p{N-1}
           quorum, same arguments as {register}_async, plus x-single-active-consumer

The entry points do not change: senders still publish to ``kpr.in.{sender}`` with routing
key ``event``, and the delay queues still dead-letter into ``kpr.events``; a retry keeps
its headers, so it re-enters the partition of its person. ``{register}_async`` is still
declared (so a backlog from before partitioning can drain) but is *unbound* from
``kpr.events``: every message lands in exactly one queue. The partition key is
:func:`contracts.partitioning.partition_token` (keyed, truncated: see that module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contracts.partitioning import PARTITION_HEADER

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractExchange

__all__ = ["KPR_HER_IDS", "Topology"]

KPR_HER_IDS = {"production": 122612, "qa": 171479, "test": 8133973}
EVENT_ROUTING_KEY = "event"


@dataclass(frozen=True)
class Topology:
    register_her_id: int = KPR_HER_IDS["test"]
    delivery_limit: int = 5
    retry_delays_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    prefix: str = ""
    dead_letter_strategy: str = "at-least-once"
    work_queue_extra_arguments: dict[str, Any] = field(default_factory=dict)
    partitions: int = 0
    bus_namespace: str = "kpr.bus"

    def __post_init__(self) -> None:
        if self.partitions < 0:
            raise ValueError("partitions must be 0 (one work queue) or a positive count")

    @property
    def work_exchange(self) -> str:
        return f"{self.prefix}kpr.events"

    @property
    def routing_key(self) -> str:
        return EVENT_ROUTING_KEY

    @property
    def work_queue(self) -> str:
        return f"{self.prefix}{self.register_her_id}_async"

    @property
    def bus_exchange(self) -> str:
        """Where AMQP 1.0 senders publish (``/exchange/{bus_exchange}/{bus_routing_key}``)."""
        return f"{self.prefix}{self.bus_namespace}"

    @property
    def bus_routing_key(self) -> str:
        """The queue name a national sender addresses: the register's HER-id, unprefixed."""
        return f"{self.register_her_id}_async"

    @property
    def partition_exchange(self) -> str:
        """The consistent-hash exchange between ``kpr.events`` and the partition queues."""
        return f"{self.prefix}kpr.partitions"

    def partition_queue(self, index: int) -> str:
        if not 0 <= index < self.partitions:
            raise ValueError(f"partition {index} is outside 0..{self.partitions - 1}")
        return f"{self.work_queue}.p{index}"

    @property
    def partition_queues(self) -> tuple[str, ...]:
        return tuple(self.partition_queue(index) for index in range(self.partitions))

    @property
    def consume_queues(self) -> tuple[str, ...]:
        """The queues consumers take events from: the partitions, or the one work queue."""
        return self.partition_queues if self.partitions else (self.work_queue,)

    def partition_exchange_arguments(self) -> dict[str, Any]:
        return {"hash-header": PARTITION_HEADER}

    def partition_queue_arguments(self) -> dict[str, Any]:
        # One active consumer per partition keeps one person's events on one consumer;
        # the others wait as standbys and take over when it goes away.
        return {**self.work_queue_arguments(), "x-single-active-consumer": True}

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}kpr.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}{self.register_her_id}_dl"

    @property
    def retry_exchange(self) -> str:
        return f"{self.prefix}kpr.retry"

    def retry_queue(self, attempt: int) -> str:
        """The delay queue for retry number ``attempt`` (0-based), capped at the last tier."""
        tier = min(attempt, len(self.retry_delays_s) - 1)
        return f"{self.prefix}kpr.retry.{tier}"

    def inbound_exchange(self, sender_her_id: int) -> str:
        """A sender's own entry point, bound to the work exchange.

        With broker definitions that let a sender's user write only here, one sender
        cannot publish as another (see ``infra/broker/definitions.json``).
        """
        return f"{self.prefix}kpr.in.{sender_her_id}"

    @property
    def receipt_exchange(self) -> str:
        return f"{self.prefix}kpr.receipts"

    def receipt_queue(self, sender_her_id: int) -> str:
        return f"{self.prefix}{sender_her_id}_error"

    def party_queue(self, her_id: int) -> str:
        """A communication party's incoming queue, where its business messages (our
        AppRecs) go: ``{herId}_async``, as the national bus names it."""
        return f"{self.prefix}{her_id}_async"

    def party_routing_key(self, her_id: int) -> str:
        """The key that routes to :meth:`party_queue` on :attr:`bus_exchange`: the queue's
        unprefixed name, as a national sender addresses ``/exchange/{namespace}/{herId}_async``."""
        return f"{her_id}_async"

    def work_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": self.dead_letter_queue,
            "x-dead-letter-strategy": self.dead_letter_strategy,
            # at-least-once dead-lettering requires reject-publish overflow
            "x-overflow": "reject-publish",
            **self.work_queue_extra_arguments,
        }

    def retry_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.work_exchange,
            "x-dead-letter-routing-key": self.routing_key,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare everything; idempotent, and safe from producer and consumer alike."""
        from aio_pika import ExchangeType

        work = await channel.declare_exchange(self.work_exchange, ExchangeType.DIRECT, durable=True)
        queue = await channel.declare_queue(
            self.work_queue, durable=True, arguments=self.work_queue_arguments()
        )
        bus = await channel.declare_exchange(self.bus_exchange, ExchangeType.DIRECT, durable=True)
        if self.partitions:
            # Unbinding an absent binding is a no-op; after a switch to partitions it
            # stops the old queue from receiving a second copy of each message.
            await queue.unbind(work, routing_key=self.routing_key)
            await queue.unbind(bus, routing_key=self.bus_routing_key)
            partitions = await self._declare_partitions(channel, work)
            await partitions.bind(bus, routing_key=self.bus_routing_key)
        else:
            await queue.bind(work, routing_key=self.routing_key)
            await queue.bind(bus, routing_key=self.bus_routing_key)

        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, ExchangeType.DIRECT, durable=True
        )
        dlq = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key=self.dead_letter_queue)

        retry = await channel.declare_exchange(
            self.retry_exchange, ExchangeType.DIRECT, durable=True
        )
        for tier in range(len(self.retry_delays_s)):
            name = self.retry_queue(tier)
            delay_queue = await channel.declare_queue(
                name, durable=True, arguments=self.retry_queue_arguments()
            )
            await delay_queue.bind(retry, routing_key=name)

        await channel.declare_exchange(self.receipt_exchange, ExchangeType.DIRECT, durable=True)

    async def _declare_partitions(
        self, channel: AbstractChannel, work: AbstractExchange
    ) -> AbstractExchange:
        partitions = await channel.declare_exchange(
            self.partition_exchange,
            "x-consistent-hash",
            durable=True,
            arguments=self.partition_exchange_arguments(),
        )
        await partitions.bind(work, routing_key=self.routing_key)
        for name in self.partition_queues:
            queue = await channel.declare_queue(
                name, durable=True, arguments=self.partition_queue_arguments()
            )
            # The binding key is the queue's weight on the hash ring: all equal.
            await queue.bind(partitions, routing_key="1")
        return partitions

    async def declare_inbound(self, channel: AbstractChannel, sender_her_id: int) -> str:
        """Declare a sender's inbound exchange and bind it to the work exchange."""
        from aio_pika import ExchangeType

        work = await channel.declare_exchange(self.work_exchange, ExchangeType.DIRECT, durable=True)
        inbound = await channel.declare_exchange(
            self.inbound_exchange(sender_her_id), ExchangeType.DIRECT, durable=True
        )
        await work.bind(inbound, routing_key=self.routing_key)
        return inbound.name

    async def declare_party_queue(self, channel: AbstractChannel, her_id: int) -> str:
        """Declare a party's ``_async`` queue (quorum) on the bus exchange; idempotent."""
        exchange = await channel.declare_exchange(self.bus_exchange, "direct", durable=True)
        name = self.party_queue(her_id)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=self.party_routing_key(her_id))
        return name

    async def declare_receipt_queue(self, channel: AbstractChannel, sender_her_id: int) -> str:
        exchange = await channel.declare_exchange(self.receipt_exchange, "direct", durable=True)
        name = self.receipt_queue(sender_her_id)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=str(sender_her_id))
        return name
