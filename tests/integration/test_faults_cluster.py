"""Losing the quorum leader of the work queue mid-stream, on a local three-node cluster.

Producer and consumer are given all three nodes (``KPR_AMQP_URL=node1,node2,node3``) and
start on node 1, where the queues are declared and so lead. Node 1 is stopped while both
run: the queues elect new leaders on the two nodes left, the clients reconnect to the
next node in their list, and the checker finds nothing lost and nothing doubled.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from faults_support import (
    History,
    check,
    confirmed_at_least,
    dead_lettered_ids,
    publish_in_thread,
    read_store,
)
from support import pipeline_settings

from contracts import ensure_dev_pki
from contracts.synth import generate_events
from kpr.localbroker import LocalRabbitCluster
from kpr.runtime import consume, publish_events, store_summary
from producers.publisher import PublishOutcome


def _leaders(cluster: LocalRabbitCluster, node: int) -> dict[str, str]:
    listing = cluster.nodes[node].ctl("list_queues", "name", "leader", "--no-table-headers")
    return dict(line.split("\t")[:2] for line in listing.strip().splitlines() if "\t" in line)


@pytest.mark.slow
async def test_stopping_the_leader_node_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """0 lost, 0 duplicates, and the work queue has a new leader on a surviving node."""
    pki = ensure_dev_pki(tmp_path / "pki")
    events = generate_events(300, seed=51)
    history = History.for_events(events)
    cluster = LocalRabbitCluster(tmp_path / "cluster", size=3)
    await asyncio.to_thread(cluster.start)
    try:
        settings = pipeline_settings(",".join(cluster.amqp_urls), pki, tmp_path)
        topology = settings.topology()
        first = await publish_events(settings, events[:100], on_outcome=history.record)
        assert first.all_confirmed
        leader_before = (await asyncio.to_thread(_leaders, cluster, 0))[topology.work_queue]
        assert leader_before == cluster.nodes[0].node_name

        stop = asyncio.Event()
        consumer = asyncio.create_task(consume(settings, stop=stop, watch_interval_s=1.0))
        deadline = time.monotonic() + 90
        while (await store_summary(settings)).events_committed < 30:
            assert time.monotonic() < deadline, "the consumer did not start committing"
            await asyncio.sleep(0.2)
        # The second half is paced in a thread of its own, and the leader is stopped once
        # it confirms: mid-stream for certain, never inside the producer's open (that
        # moment has a test of its own, test_faults_broker's node-lost-while-opening).
        rest = publish_in_thread(settings, events[100:], 0.02, history=history)
        await confirmed_at_least(history, 110)
        await asyncio.to_thread(cluster.nodes[0].stop)  # the leader goes away mid-stream
        confirmed_at_stop = len(history.with_outcome(PublishOutcome.CONFIRMED))
        await rest

        while (await store_summary(settings)).events_committed < len(events):
            if time.monotonic() > deadline + 90:
                break
            await asyncio.sleep(0.5)
        leader_after = (await asyncio.to_thread(_leaders, cluster, 1))[topology.work_queue]
        stop.set()
        await asyncio.wait_for(consumer, timeout=60)
        dead = await dead_lettered_ids(cluster.amqp_urls[1], topology.dead_letter_queue)
    finally:
        await asyncio.to_thread(cluster.stop)

    verdict = check(history, await read_store(settings.store_url), dead)
    verdict.assert_valid()
    assert confirmed_at_stop < len(events)  # the producer was still publishing
    assert verdict.confirmed == len(events)  # resends after the failover all confirmed
    assert verdict.committed == len(events)
    assert leader_after in {cluster.nodes[1].node_name, cluster.nodes[2].node_name}
