"""One consumer process over several partition queues (``Topology(partitions=N)``).

Each partition queue has ``x-single-active-consumer``: the broker delivers to one consumer
at a time and keeps the others waiting as standbys, promoting one when the active consumer
goes (connection lost, process killed). This RabbitMQ (3.10) never moves an active
consumer to balance load, so *who subscribes first* decides who works. Hence two phases:

1. **claim**: in random order, subscribe to partitions that nobody consumes yet (the
   broker's consumer count is 0), at most ``share`` of them, where
   ``share = ceil(partitions / expected consumer processes)``;
2. **standby**: after ``standby_delay_s`` (time for the other processes to claim theirs),
   subscribe to every remaining partition too, so this process takes over any partition
   whose active consumer dies, and serves unclaimed ones if fewer processes came.

A process that starts after the others have claimed everything is standby only until a
failure: adding a process adds failover capacity, not throughput, until restarts re-spread
the partitions (see docs/OPERATIONS.md, "Scaling out").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Self

from consumers.consumer import Consumer
from contracts.connection import TlsSettings, open_with_failover
from contracts.resources import AsyncResource
from contracts.topology import Topology

__all__ = ["PartitionedConsumers", "claim_share"]

log = logging.getLogger("kpr.partitions")

ConsumerFactory = Callable[[str], Consumer]

_CLAIM_PAUSE_S = (0.02, 0.1)


def claim_share(partitions: int, consumer_processes: int) -> int:
    """How many partitions one of ``consumer_processes`` processes claims in phase 1."""
    if partitions < 1:
        raise ValueError("claiming needs at least one partition")
    return math.ceil(partitions / max(1, consumer_processes))


class PartitionedConsumers(AsyncResource):
    """An async context manager with :class:`Consumer`'s interface, over every partition.

    ``factory(queue_name)`` builds the consumer of one queue (one connection each).
    """

    def __init__(
        self,
        factory: ConsumerFactory,
        topology: Topology,
        *,
        url: str,
        tls: TlsSettings | None = None,
        consumer_processes: int = 1,
        standby_delay_s: float = 10.0,
    ) -> None:
        if topology.partitions < 1:
            raise ValueError("PartitionedConsumers needs a partitioned topology")
        self._factory = factory
        self._topology = topology
        self._url = url
        self._tls = tls
        self._share = claim_share(topology.partitions, consumer_processes)
        self._standby_delay_s = standby_delay_s
        self._consumers: dict[str, Consumer] = {}
        self._started: set[str] = set()
        self._stack = contextlib.AsyncExitStack()
        self._stop = asyncio.Event()
        self.claimed: tuple[str, ...] = ()

    async def __aenter__(self) -> Self:
        try:
            for name in self._topology.partition_queues:
                consumer = self._factory(name)
                self._consumers[name] = await self._stack.enter_async_context(consumer)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close every partition consumer; harmless twice."""
        await self._stack.aclose()

    def request_stop(self) -> None:
        """Stop every partition consumer; standbys not yet subscribed never subscribe."""
        self._stop.set()
        for consumer in self._consumers.values():
            consumer.request_stop()

    async def readiness_problems(self) -> list[str]:
        """The problems of every subscribed partition consumer, named by queue."""
        if not self._started:
            return ["consumer: no partition subscribed yet"]
        problems: list[str] = []
        for name in sorted(self._started):
            problems += [f"{name}: {p}" for p in await self._consumers[name].readiness_problems()]
        return problems

    async def run(self, *, until_idle_s: float | None = None) -> Counter[str]:
        """Claim, then stand by on the rest; return the summed counts once all have ended
        (on :meth:`request_stop`, or each after ``until_idle_s`` without deliveries)."""
        self._stop.clear()
        runs: list[asyncio.Task[Counter[str]]] = []
        try:
            claimed = await self._claim(until_idle_s, runs)
            self.claimed = tuple(claimed)
            log.info("partitions claimed", extra={"claimed": list(claimed)})
            for name in self._consumers:
                if name not in claimed:
                    delay = self._standby_delay_s
                    runs.append(asyncio.create_task(self._run_one(name, until_idle_s, delay)))
            results = await asyncio.gather(*runs)
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
        total: Counter[str] = Counter()
        for counts in results:
            total.update(counts)
        return total

    async def _run_one(self, name: str, until_idle_s: float | None, delay_s: float) -> Counter[str]:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay_s)
        if self._stop.is_set():
            return Counter()
        # No await between the check and run(): a stop cannot slip in and be cleared.
        self._started.add(name)
        role = "standby" if delay_s > 0 else "claimed"
        log.info("partition subscribing", extra={"queue": name, "role": role})
        counts = await self._consumers[name].run(until_idle_s=until_idle_s)
        log.info(
            "partition stopped",
            extra={"queue": name, "role": role, "count": sum(counts.values())},
        )
        return counts

    async def _claim(
        self, until_idle_s: float | None, runs: list[asyncio.Task[Counter[str]]]
    ) -> list[str]:
        """Start consuming partitions without any consumer, in random order, up to the
        share; their run tasks go into ``runs``.

        Re-checked one by one with a short random pause, so processes starting together
        interleave their claims instead of all seeing every partition free.
        """
        connection, channel = await open_with_failover(
            self._url,
            lambda opened: opened.channel(publisher_confirms=False),
            tls=self._tls,
            name="kpr-partition-census",
        )
        claimed: list[str] = []
        try:
            underlay = await channel.get_underlay_channel()
            order = list(self._consumers)
            random.shuffle(order)
            for name in order:
                if len(claimed) >= self._share or self._stop.is_set():
                    break
                declared = await underlay.queue_declare(name, passive=True, timeout=5)
                if (declared.consumer_count or 0) == 0:
                    claimed.append(name)
                    run = asyncio.create_task(self._run_one(name, until_idle_s, 0.0))
                    runs.append(run)
                    # Subscribed before the next census, so other processes see it taken.
                    consumer = self._consumers[name]
                    for _ in range(500):  # at most ~5 s; a slow broker only weakens the spread
                        if consumer.consuming or run.done() or self._stop.is_set():
                            break
                        await asyncio.sleep(0.01)
                await asyncio.sleep(random.uniform(*_CLAIM_PAUSE_S))  # noqa: S311 - jitter
        finally:
            await connection.close()
        return claimed
