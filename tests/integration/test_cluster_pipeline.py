"""The pipeline on a three-node cluster (``infra/cluster.sh``) survives losing a replica."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from faults_support import History, confirmed_at_least, publish_in_thread
from support import pipeline_settings

from contracts import PkiDir, ensure_dev_pki
from contracts.synth import generate_events
from kpr.localbroker import LocalRabbitMQ
from kpr.localprocess import free_port
from kpr.runtime import consume, publish_events, store_summary
from producers.publisher import PublishOutcome

CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "cluster.sh"


def _cluster(state_dir: Path, ports: list[int], *args: str) -> str:
    environment = {
        **os.environ,
        "KPR_CLUSTER_DIR": str(state_dir),
        "KPR_CLUSTER_PORTS": " ".join(map(str, ports)),
    }
    result = subprocess.run(
        [str(CLUSTER_SCRIPT), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _work_queue_depth(node: LocalRabbitMQ, queue: str) -> int:
    listing = node.ctl("list_queues", "name", "messages", "--no-table-headers")
    for line in listing.strip().splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count.strip())
    raise AssertionError(f"{queue} is not listed: {listing}")


@pytest.mark.slow
async def test_pipeline_keeps_running_without_loss_when_a_replica_node_stops(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Producer and consumer on node 1; node 3 stops mid-stream. The quorum queues, with a
    replica on each of the three nodes, keep a majority: every event commits exactly once."""
    state_dir = tmp_path_factory.mktemp("cluster")
    work_dir = tmp_path_factory.mktemp("cluster-pipeline")
    pki: PkiDir = ensure_dev_pki(work_dir / "pki")
    ports = [free_port() for _ in range(3)]
    events = generate_events(300, seed=41)
    await asyncio.to_thread(_cluster, state_dir, ports, "start")
    try:
        node1 = LocalRabbitMQ(state_dir / "node1", amqp_port=ports[0])
        settings = pipeline_settings(node1.amqp_url, pki, work_dir)
        topology = settings.topology()
        assert (await publish_events(settings, events[:150])).all_confirmed
        stop = asyncio.Event()
        consumer = asyncio.create_task(consume(settings, stop=stop))

        deadline = time.monotonic() + 60
        while (before := (await store_summary(settings)).events_committed) < 50:
            assert time.monotonic() < deadline, "the consumer did not start committing"
            await asyncio.sleep(0.2)
        # Mid-stream: the second half is paced in a thread, and node 3 goes down once it
        # confirms, so the stop lands while the producer publishes, not while it opens
        # (15 s of publishing: longer than cluster.sh takes to stop a node).
        history = History.for_events(events[150:])
        second_half = publish_in_thread(settings, events[150:], 0.1, history=history)
        await confirmed_at_least(history, 10)
        await asyncio.to_thread(_cluster, state_dir, ports, "stop-node", "3")
        confirmed_at_stop = len(history.with_outcome(PublishOutcome.CONFIRMED))
        assert (await second_half).all_confirmed

        while (committed := (await store_summary(settings)).events_committed) < len(events):
            assert time.monotonic() < deadline + 60, f"stuck at {committed}"
            await asyncio.sleep(0.2)
        status = await asyncio.to_thread(_cluster, state_dir, ports, "status")
        # A confirm lost in the node stop makes the producer publish that event again: a
        # duplicate may still be on its way once every event is committed. Let the
        # consumer take it (as a duplicate) before it stops, so "0 left" below is exact.
        while await asyncio.to_thread(_work_queue_depth, node1, topology.work_queue) != 0:
            assert time.monotonic() < deadline + 120, "the work queue never emptied"
            await asyncio.sleep(0.5)
        stop.set()
        counts = await asyncio.wait_for(consumer, timeout=60)
        # Listed after the drain: a commit precedes its ack, so a listing taken at the
        # last commit can still count that one message as unacknowledged.
        listing = await asyncio.to_thread(
            node1.ctl,
            "list_queues",
            "name",
            "members",
            "online",
            "messages",
            "--no-table-headers",
        )
    finally:
        await asyncio.to_thread(_cluster, state_dir, ports, "stop")

    assert before < len(events)  # the node went down with work outstanding
    assert confirmed_at_stop < len(events) - 150  # and while the producer published
    assert counts["committed"] == len(events)
    assert (await store_summary(settings)).events_committed == len(events)
    assert f"kpr-{ports[2]}@localhost  amqp {ports[2]}  down" in status
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in listing.strip().splitlines()}
    members, online, messages = rows[topology.work_queue]
    assert len(members.strip("[]").split(", ")) == 3  # replicated on every node
    assert len(online.strip("[]").split(", ")) == 2  # and running on the two left
    assert messages == "0"
