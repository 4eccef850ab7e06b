"""Partitioned consumption: a consistent-hash exchange over single-active-consumer queues.

Real broker, real PostgreSQL, ``kpr consume --partitions 4`` as separate processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aio_pika
import psycopg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from support import pipeline_settings

from consumers.store import open_store
from contracts import PkiDir, ensure_dev_pki
from contracts.partitioning import PARTITION_HEADER
from contracts.synth import generate_events
from kpr.config import Settings
from kpr.localservices import LocalRabbitMQ
from kpr.runtime import consume, publish_events, store_summary
from producers.sealer import message_id_for

PARTITIONS = 4


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


def _database(postgres_url: str) -> str:
    database = f"p_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    return postgres_url.rsplit("/", 1)[0] + "/" + database


def _settings(amqp_url: str, pki: PkiDir, tmp_path: Path, store_url: str) -> Settings:
    return pipeline_settings(amqp_url, pki, tmp_path, store_url=store_url).with_overrides(
        partitions=PARTITIONS
    )


#: Consumers idle out after this long: longer than the census below may take on a loaded
#: machine, so that both processes are still subscribed when it looks.
UNTIL_IDLE_S = 40


# Each consumer process's stderr goes to a file (a full pipe would stall it), by pid.
_LOGS: dict[int, Path] = {}


def _log_of(process: subprocess.Popen[bytes]) -> str:
    return _LOGS[process.pid].read_text(errors="replace")[-20000:]


def _consumer_process(settings: Settings, *, until_idle_s: float) -> subprocess.Popen[bytes]:
    assert settings.authorisation_file is not None
    environment = {
        **os.environ,
        "KPR_AMQP_URL": settings.amqp_url,
        "KPR_STORE_URL": settings.store_url,
        "KPR_PKI_DIR": str(settings.pki_dir),
        "KPR_STATE_DIR": str(settings.state_dir),
        "KPR_ENVIRONMENT": "test",
        "KPR_AUTHORISATION_FILE": str(settings.authorisation_file),
        "KPR_QUEUE_PREFIX": settings.queue_prefix,
        "KPR_PARTITION_CONSUMERS": "2",
        # Long enough for both processes to claim their share before either stands by.
        "KPR_PARTITION_STANDBY_DELAY": "5",
        # A delivery undecided this long is logged by message id (a CI hang's suspect).
        "KPR_STALL_AFTER": "20",
    }
    descriptor, name = tempfile.mkstemp(prefix="consumer-", suffix=".log", dir=settings.state_dir)
    os.close(descriptor)
    log = Path(name)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kpr",
                "consume",
                "--partitions",
                str(PARTITIONS),
                "--until-idle",
                str(until_idle_s),
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    _LOGS[process.pid] = log
    return process


def _consumers(broker: LocalRabbitMQ, prefix: str) -> dict[str, list[bool]]:
    """The ``active`` flag of every consumer, per partition queue of ``prefix``."""
    listing = broker.ctl("list_consumers", "queue_name", "active", "--no-table-headers")
    flags: dict[str, list[bool]] = defaultdict(list)
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].startswith(prefix) and ".p" in parts[0]:
            flags[parts[0]].append(parts[1].strip() == "true")
    return dict(flags)


async def _await_consumers(
    broker: LocalRabbitMQ, prefix: str, per_queue: int
) -> dict[str, list[bool]]:
    """Poll until each partition queue has ``per_queue`` consumers; their active flags."""
    deadline = time.monotonic() + 45
    while True:
        flags = await asyncio.to_thread(_consumers, broker, prefix)
        if len(flags) == PARTITIONS and all(len(f) == per_queue for f in flags.values()):
            return flags
        if time.monotonic() > deadline:
            raise AssertionError(f"consumers never settled: {flags}")
        await asyncio.sleep(0.5)


def _finish(process: subprocess.Popen[bytes], timeout: float = UNTIL_IDLE_S + 50) -> str:
    """The process's stdout once it has idled out; on a timeout, its log in the failure."""
    try:
        stdout, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # What each task waits for (kpr.eventloop's SIGUSR1 dump), then the kill.
        process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        process.kill()
        process.communicate()
        raise AssertionError(
            f"consumer {process.pid} still running {timeout:.0f} s after its last event "
            f"was committed:\n{_log_of(process)}"
        ) from None
    assert process.returncode == 0, _log_of(process)
    return stdout.decode()


async def _await_committed(
    settings: Settings, expected: int, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Wait (generously: a loaded machine is slow) until ``expected`` events are in the
    store, so that the idle-out timeout of :func:`_finish` measures only the shutdown."""
    deadline = time.monotonic() + 240
    while (committed := (await store_summary(settings)).events_committed) < expected:
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.pid}:\n{_log_of(p)}" for p in processes)
            raise AssertionError(f"only {committed} of {expected} committed:\n{logs}")
        await asyncio.sleep(0.5)


def _count(output: str, key: str) -> int:
    match = re.search(rf"\b{key}=(\d+)", output)
    return int(match.group(1)) if match else 0


async def test_one_person_lands_in_one_partition_and_each_message_in_one_queue(
    amqp_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """With 4 partitions, every message is in exactly one partition queue (none in the old
    work queue), all four get some, and all events of one person share a queue."""
    settings = _settings(amqp_url, pki, tmp_path, str(tmp_path / "unused.sqlite3"))
    topology = settings.topology()
    events = generate_events(160, seed=31)
    assert (await publish_events(settings, events)).all_confirmed

    queue_of: dict[str, str] = {}
    token_queues: dict[str, set[str]] = defaultdict(set)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        work = await channel.get_queue(topology.work_queue, ensure=False)
        assert (await work.declare()).message_count == 0
        everything = asyncio.Event()
        for name in topology.partition_queues:
            # basic.get is refused on single-active-consumer queues: subscribe instead.
            async def take(message: AbstractIncomingMessage, name: str = name) -> None:
                assert message.message_id not in queue_of
                queue_of[str(message.message_id)] = name
                token_queues[str((message.headers or {})[PARTITION_HEADER])].add(name)
                if len(queue_of) == len(events):
                    everything.set()

            queue = await channel.get_queue(name, ensure=False)
            await queue.consume(take, no_ack=True)
        await asyncio.wait_for(everything.wait(), timeout=30)
        await asyncio.sleep(0.5)  # time for a stray extra copy to show up

    assert len(queue_of) == len(events)
    assert set(queue_of.values()) == set(topology.partition_queues)
    assert all(len(queues) == 1 for queues in token_queues.values())
    by_person: dict[str, set[str]] = defaultdict(set)
    for event in events:
        by_person[event.person.national_id].add(queue_of[message_id_for(event)])
    assert all(len(queues) == 1 for queues in by_person.values())
    assert any(len([e for e in events if e.person.national_id == p]) > 1 for p in by_person)


@pytest.mark.postgres
async def test_two_consumer_processes_share_four_partitions_exactly_once(
    amqp_url: str, local_broker: LocalRabbitMQ, postgres_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """Two ``kpr consume --partitions 4`` processes on one PostgreSQL: one active consumer
    per partition, both processes work, every event commits once (duplicates suppressed),
    and the pathways equal a single sequential consumer's."""
    settings = _settings(amqp_url, pki, tmp_path, _database(postgres_url))
    events = generate_events(300, seed=32, corrections=0.1)
    # Declare the topology (and nothing else) before the consumers' census.
    assert (await publish_events(settings, [])).all_confirmed
    # Idle long enough that both processes are still subscribed (claimed share + standby
    # after KPR_PARTITION_STANDBY_DELAY) when the census polls them on a loaded machine.
    first = _consumer_process(settings, until_idle_s=UNTIL_IDLE_S)
    second = _consumer_process(settings, until_idle_s=UNTIL_IDLE_S)
    try:
        flags = await _await_consumers(local_broker, settings.queue_prefix, per_queue=2)
        assert all(sorted(f) == [False, True] for f in flags.values()), flags
        assert (await publish_events(settings, events)).all_confirmed
        assert (await publish_events(settings, events[:60])).all_confirmed  # duplicates
        await _await_committed(settings, len(events), [first, second])
        outputs = [await asyncio.to_thread(_finish, p) for p in (first, second)]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
            process.communicate()

    assert sum(_count(out, "committed") for out in outputs) == len(events)
    assert sum(_count(out, "duplicate") for out in outputs) == 60
    assert all(_count(out, "committed") > 0 for out in outputs), outputs
    reference = settings.with_overrides(
        store_url=str(tmp_path / "reference.sqlite3"),
        queue_prefix=f"r{secrets.token_hex(4)}.",
        partitions=0,
    )
    assert (await publish_events(reference, events)).all_confirmed
    await consume(reference, until_idle_s=1.0)
    async with open_store(settings.store_url) as shared, open_store(reference.store_url) as alone:
        assert await shared.all_pathways() == await alone.all_pathways()
        assert (await shared.summary()).events_committed == len(events)


@pytest.mark.postgres
async def test_killing_the_active_consumer_hands_its_partitions_to_the_standby(
    amqp_url: str, local_broker: LocalRabbitMQ, postgres_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """SIGKILL one of two consumer processes mid-stream: the other, standing by on its
    partitions, takes them over; every event is in the store once, none lost."""
    settings = _settings(amqp_url, pki, tmp_path, _database(postgres_url))
    events = generate_events(300, seed=33)
    assert (await publish_events(settings, [])).all_confirmed
    victim = _consumer_process(settings, until_idle_s=UNTIL_IDLE_S)
    survivor = _consumer_process(settings, until_idle_s=UNTIL_IDLE_S)
    try:
        await _await_consumers(local_broker, settings.queue_prefix, per_queue=2)
        assert (await publish_events(settings, events)).all_confirmed
        deadline = time.monotonic() + 60
        while (committed := (await store_summary(settings)).events_committed) < 40:
            assert time.monotonic() < deadline, "nothing was committed"
            await asyncio.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=10)
        assert committed < len(events), "the stream was over before the kill"
        flags = await _await_consumers(local_broker, settings.queue_prefix, per_queue=1)
        assert all(f == [True] for f in flags.values()), flags
        await _await_committed(settings, len(events), [survivor])
        output = await asyncio.to_thread(_finish, survivor)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
            process.communicate()

    assert victim.returncode == -signal.SIGKILL
    summary = await store_summary(settings)
    assert summary.events_committed == len(events)
    assert _count(output, "committed") < len(events)  # the victim had committed some
    with psycopg.connect(settings.store_url) as connection:
        row = connection.execute(
            "SELECT COUNT(*), COUNT(DISTINCT (event_id, revision)) FROM events"
        ).fetchone()
    assert row is not None
    assert row[0] == row[1] == len(events)
