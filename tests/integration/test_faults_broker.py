"""Broker and network faults while producer and consumer run: nothing confirmed is lost,
nothing is committed twice, and neither side hangs.

Destructive tests run against a broker of this module's own (never the session's), and
every run is judged by the Jepsen-style checker in :mod:`faults_support`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from contracts.events import Environment, Event
from contracts.pki import PkiDir, ensure_dev_pki
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS, generate_events
from kpr.config import Settings
from kpr.localbroker import LocalRabbitMQ
from kpr.runtime import consume, publish_events
from producers.publisher import PublishOutcome
from producers.sealer import SealedMessage
from faults_support import (
    History,
    TcpProxy,
    Verdict,
    check,
    dead_lettered_ids,
    eventually,
    read_store,
)

FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRabbitMQ]:
    """A broker only this module uses: its tests restart it."""
    with LocalRabbitMQ(tmp_path_factory.mktemp("fault-broker")) as broker:
        yield broker


def fault_settings(amqp_url: str, pki: PkiDir, state_dir: Path) -> Settings:
    authorisation = state_dir / "authorisation.json"
    authorisation.write_bytes(
        orjson.dumps({pki.sender.info.org_number: list(DEFAULT_UNIT_ORG_NUMBERS)})
    )
    return Settings().with_overrides(
        amqp_url=amqp_url,
        pki_dir=pki.directory,
        state_dir=state_dir,
        store_url=str(state_dir / "pathways.sqlite3"),
        environment=Environment.TEST,
        authorisation_file=authorisation,
        queue_prefix=f"f{secrets.token_hex(4)}.",
        drain_timeout_s=10.0,
    )


def work_queue_consumers(broker: LocalRabbitMQ, queue: str) -> int:
    """How many consumers the broker itself counts on ``queue`` (not our bookkeeping)."""
    rows = json.loads(broker.ctl("list_queues", "name", "consumers", "--formatter", "json"))
    return sum(int(row["consumers"]) for row in rows if row["name"] == queue)


class Scenario:
    """A producer and a consumer running concurrently, a fault fired mid-stream."""

    def __init__(self, producer: Settings, consumer: Settings, events: list[Event]) -> None:
        self.producer = producer
        self.consumer = consumer
        self.events = events
        self.history = History.for_events(events)
        self.stop_consumer = asyncio.Event()
        self.fault_due = asyncio.Event()
        self._threshold = len(events) // 3

    async def on_outcome(
        self, sealed: SealedMessage, outcome: PublishOutcome, error: object
    ) -> None:
        await self.history.record(sealed, outcome, None)
        if len(self.history.with_outcome(PublishOutcome.CONFIRMED)) >= self._threshold:
            self.fault_due.set()

    async def committed(self) -> int:
        with contextlib.suppress(Exception):
            return len((await read_store(self.consumer.store_url)).event_keys)
        return 0

    async def run(
        self, fault: Callable[[], object], *, publish_timeout_s: float = 120.0,
        **publish_options: float,
    ) -> tuple[Verdict, Counter[str]]:
        consumer = asyncio.create_task(
            consume(self.consumer, stop=self.stop_consumer, watch_interval_s=0.3)
        )
        try:
            producer = asyncio.create_task(
                publish_events(self.producer, self.events, on_outcome=self.on_outcome,
                               **publish_options)  # type: ignore[arg-type]
            )
            await asyncio.wait_for(self.fault_due.wait(), timeout=60)
            result = fault()
            if asyncio.iscoroutine(result):
                await result
            await asyncio.wait_for(producer, timeout=publish_timeout_s)
            confirmed = self.history.with_outcome(PublishOutcome.CONFIRMED)

            async def all_confirmed_committed() -> bool:
                return await self.committed() >= len(confirmed)

            await eventually(all_confirmed_committed, timeout_s=90, what="confirmed committed",
                             interval_s=0.3)
        finally:
            self.stop_consumer.set()
            counts = await asyncio.wait_for(consumer, timeout=60)
        dead = await dead_lettered_ids(
            self.consumer.amqp_url, self.consumer.topology().dead_letter_queue
        )
        return check(self.history, await read_store(self.consumer.store_url), dead), counts


async def test_a_broker_restart_mid_stream_loses_nothing_and_the_consumer_resumes(
    own_broker: LocalRabbitMQ, pki: PkiDir, tmp_path: Path
) -> None:
    """The broker restarts while 300 events flow: the producer resends what it did not
    get confirmed, the broker lists a consumer on the work queue again, every confirmed
    event is committed exactly once."""
    settings = fault_settings(own_broker.amqp_url, pki, tmp_path)
    events = generate_events(300, seed=901)
    scenario = Scenario(settings, settings, events)
    restarted_at: list[float] = []

    async def restart() -> None:
        await asyncio.to_thread(own_broker.restart)
        restarted_at.append(time.monotonic())

    verdict, counts = await scenario.run(restart, reconnect_timeout_s=90.0)

    verdict.assert_valid()
    assert verdict.confirmed == len(events)  # the resends got every one confirmed
    assert verdict.committed == len(events)
    assert counts["committed"] == len(events)  # this consumer, after its reconnect
    assert restarted_at
    FIGURES["broker restart"] = verdict.summary()
    print(verdict.summary())


async def test_after_a_broker_restart_the_broker_lists_our_consumer_again(
    own_broker: LocalRabbitMQ, pki: PkiDir, tmp_path: Path
) -> None:
    """A robust reconnect that comes back with zero consumers is a known failure mode:
    after a restart the broker counts one consumer on the work queue within seconds, and
    an event published afterwards is committed."""
    settings = fault_settings(own_broker.amqp_url, pki, tmp_path)
    queue = settings.topology().work_queue
    stop = asyncio.Event()
    consumer = asyncio.create_task(consume(settings, stop=stop, watch_interval_s=0.3))
    try:
        await _await_consumers(own_broker, queue, 1, timeout_s=30)
        await asyncio.to_thread(own_broker.restart)
        restarted = time.monotonic()
        back_after = await _await_consumers(own_broker, queue, 1, timeout_s=60)
        [event] = generate_events(1, seed=902)
        report = await publish_events(settings, [event])
        assert report.all_confirmed

        async def committed() -> bool:
            with contextlib.suppress(Exception):
                return len((await read_store(settings.store_url)).event_keys) == 1
            return False

        await eventually(committed, timeout_s=30, what="the event after the restart committed")
        FIGURES["consumer back after broker restart (s)"] = f"{back_after:.1f}"
        print(f"consumer listed again {back_after:.1f} s after the restart "
              f"({time.monotonic() - restarted:.1f} s to a commit)")
    finally:
        stop.set()
        counts = await asyncio.wait_for(consumer, timeout=60)
    assert counts["committed"] == 1


async def _await_consumers(
    broker: LocalRabbitMQ, queue: str, wanted: int, *, timeout_s: float
) -> float:
    async def listed() -> bool:
        try:
            return await asyncio.to_thread(work_queue_consumers, broker, queue) == wanted
        except Exception:
            return False

    return await eventually(listed, timeout_s=timeout_s, what=f"{wanted} consumer(s) on {queue}",
                            interval_s=0.5)
