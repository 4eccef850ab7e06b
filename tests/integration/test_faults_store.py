"""Consumer-side faults: the consumer killed mid-batch, the store gone mid-stream.

Judged by the Jepsen-style checker in :mod:`faults_support`: every confirmed event is
committed (or dead-lettered), nothing unpublished appears, nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from faults_support import History, check, dead_lettered_ids, eventually, paced, read_store
from support import environment_of, pipeline_settings

from consumers.consumer import Consumer
from consumers.processing import Processor
from consumers.store import PostgresStore
from contracts.pki import PkiDir, ensure_dev_pki
from contracts.synth import generate_events
from contracts.topology import Topology
from kpr.config import Settings
from kpr.localpostgres import LocalPostgres
from kpr.runtime import build_opener, consume, pseudonymiser, publish_events
from producers.publisher import PublishOutcome, PublishReport


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


def store_fault_settings(amqp_url: str, pki: PkiDir, state_dir: Path, store_url: str) -> Settings:
    return pipeline_settings(amqp_url, pki, state_dir, store_url=store_url).with_overrides(
        drain_timeout_s=10.0
    )


def consumer_environment(settings: Settings) -> dict[str, str]:
    return environment_of(settings)


async def committed_count(store_url: str) -> int:
    with contextlib.suppress(Exception):
        return len((await read_store(store_url)).event_keys)
    return 0


async def test_a_consumer_killed_mid_batch_three_times_commits_every_event_once(
    amqp_vhost_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """``kpr consume`` is killed with SIGKILL three times while it works through 400
    events (prefetch 64: a batch of unacked deliveries in flight each time); after a
    last clean run every event is committed exactly once and nothing is dead-lettered."""
    settings = store_fault_settings(
        amqp_vhost_url, pki, tmp_path, str(tmp_path / "pathways.sqlite3")
    )
    events = generate_events(400, seed=911)
    history = History.for_events(events)
    report = await publish_events(settings, events, on_outcome=history.record)
    assert report.all_confirmed
    kills = 0
    for target in (60, 160, 260):
        process = subprocess.Popen(  # noqa: ASYNC220 - killed below, never waited on blocking
            [sys.executable, "-m", "kpr", "consume"],
            env=consumer_environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def reached(target: int = target) -> bool:
                return await committed_count(settings.store_url) >= target

            await eventually(reached, timeout_s=90, what=f"{target} commits", interval_s=0.05)
        finally:
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 30)
        assert process.returncode == -signal.SIGKILL
        kills += 1
    before_last_run = await committed_count(settings.store_url)
    assert before_last_run < len(events)  # the kills really landed mid-stream

    counts = await consume(settings, until_idle_s=2.0)

    dead = await dead_lettered_ids(settings.amqp_url, settings.topology().dead_letter_queue)
    verdict = check(history, await read_store(settings.store_url), dead)
    print(f"{kills} kills: {verdict.summary()}; last run {dict(counts)}")
    verdict.assert_valid()
    assert verdict.committed == len(events)
    assert verdict.dead_lettered == 0
    assert counts["committed"] == len(events) - before_last_run


@pytest.fixture
def own_postgres(postgres_state_dir: Path) -> LocalPostgres:
    server = LocalPostgres(postgres_state_dir, fsync=False)
    server.start()
    return server


async def test_a_store_outage_mid_stream_is_retried_not_dead_lettered(
    amqp_vhost_url: str, pki: PkiDir, tmp_path: Path, own_postgres: LocalPostgres
) -> None:
    """PostgreSQL stops for ~6 s while 150 events flow: deliveries that cannot commit go to
    the delay queues (StoreUnavailable is transient), none is dead-lettered, and once the
    store is back every event commits exactly once."""
    settings = store_fault_settings(amqp_vhost_url, pki, tmp_path, own_postgres.url)
    topology = Topology(
        register_her_id=settings.register_her_id,
        prefix=settings.queue_prefix,
        retry_delays_s=(0.5, 1.0, 2.0),
    )
    events = generate_events(150, seed=912)
    history = History.for_events(events)
    third_confirmed = threading.Event()

    async def on_outcome(sealed, outcome, error):  # type: ignore[no-untyped-def]
        await history.record(sealed, outcome, error)
        if len(history.with_outcome(PublishOutcome.CONFIRMED)) >= len(events) // 3:
            third_confirmed.set()

    def produce() -> PublishReport:
        return asyncio.run(publish_events(settings, paced(events, 0.03), on_outcome=on_outcome))

    store = PostgresStore(own_postgres.url)
    try:
        async with store:
            processor = Processor(build_opener(settings), pseudonymiser(settings), store)
            async with Consumer(
                settings.amqp_url,
                topology=topology,
                processor=processor,
                max_attempts=40,
                watch_interval_s=0.3,
            ) as consumer:
                running = asyncio.create_task(consumer.run())
                producer = asyncio.create_task(asyncio.to_thread(produce))
                assert await asyncio.to_thread(third_confirmed.wait, 60)
                await asyncio.to_thread(own_postgres.stop)
                await asyncio.sleep(6.0)
                await asyncio.to_thread(own_postgres.start)
                report = await asyncio.wait_for(producer, timeout=120)
                assert report.all_confirmed

                async def all_committed() -> bool:
                    return await committed_count(own_postgres.url) >= len(events)

                with contextlib.suppress(AssertionError):
                    await eventually(
                        all_committed, timeout_s=90, what="all committed", interval_s=0.3
                    )
                consumer.request_stop()
                counts = await asyncio.wait_for(running, timeout=60)
        dead = await dead_lettered_ids(settings.amqp_url, topology.dead_letter_queue)
        verdict = check(history, await read_store(own_postgres.url), dead)
    finally:
        await asyncio.to_thread(own_postgres.stop)
    print(f"store outage: {verdict.summary()}; consumer {dict(counts)}")
    verdict.assert_valid()
    assert verdict.dead_lettered == 0
    assert verdict.committed == len(events)
    assert counts["retried"] >= 1  # the outage really hit deliveries
    assert counts["committed"] == len(events)
