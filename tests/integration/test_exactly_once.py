"""Exactly-once effect from an at-least-once broker: crashes and concurrent consumers."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from support import environment_of, pipeline_settings

from consumers.store import open_store
from contracts import PkiDir, ensure_dev_pki
from contracts.synth import generate_events
from kpr.runtime import consume, publish_events, store_summary

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


async def test_a_crash_between_commit_and_ack_becomes_a_suppressed_duplicate(
    amqp_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """The consumer dies right after a commit: the redelivery is a duplicate, no second effect."""
    settings = pipeline_settings(amqp_url, pki, tmp_path)
    events = generate_events(30, seed=21)
    assert (await publish_events(settings, events)).all_confirmed

    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(PROGRAMS / "crash_after_commit.py")],
        env=environment_of(settings),
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == 137, crashed.stderr.decode()[-2000:]
    committed_before_restart = (await store_summary(settings)).events_committed
    assert committed_before_restart >= 1

    counts = await consume(settings, until_idle_s=1.5)

    assert counts["duplicate"] >= 1  # the message committed but never acked came back
    assert counts["committed"] == len(events) - committed_before_restart
    assert (await store_summary(settings)).events_committed == len(events)


@pytest.mark.postgres
async def test_concurrent_consumers_on_postgresql_give_the_same_pathways(
    amqp_url: str, postgres_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """Three consumers on one queue and one PostgreSQL: no lost update, no double effect.

    Every event is published twice, so the consumers race on duplicates as well as on the
    two halves of each stay. The result equals a single sequential consumer's.
    """
    database = f"c_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    shared = postgres_url.rsplit("/", 1)[0] + "/" + database
    settings = pipeline_settings(amqp_url, pki, tmp_path, store_url=shared)
    events = generate_events(240, seed=22, corrections=0.1)
    assert (await publish_events(settings, events)).all_confirmed
    assert (await publish_events(settings, events)).all_confirmed

    results = await asyncio.gather(*(consume(settings, until_idle_s=2.0) for _ in range(3)))

    assert sum(r["committed"] for r in results) == len(events)
    assert sum(r["duplicate"] for r in results) == len(events)
    assert sum(1 for r in results if r["committed"] > 0) >= 2  # they really shared the work
    reference = settings.with_overrides(
        store_url=str(tmp_path / "reference.sqlite3"), queue_prefix=f"r{secrets.token_hex(4)}."
    )
    await publish_events(reference, events)
    await consume(reference, until_idle_s=1.0)
    async with open_store(shared) as concurrent, open_store(reference.store_url) as sequential:
        assert await concurrent.all_pathways() == await sequential.all_pathways()
        assert (await concurrent.summary()).events_committed == len(events)
