"""Three local RabbitMQ nodes join into one cluster that replicates quorum queues."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import pytest

from kpr.localservices import LocalRabbitCluster


@pytest.mark.slow
async def test_three_node_cluster_replicates_a_quorum_queue_on_every_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every node sees all three as members, and a new quorum queue has a replica on each."""
    state_dir: Path = tmp_path_factory.mktemp("cluster")
    async with LocalRabbitCluster(state_dir, size=3) as cluster:
        assert len(set(cluster.node_names)) == 3
        assert len(set(cluster.amqp_urls)) == 3
        async with await aio_pika.connect(cluster.amqp_urls[0]) as connection:
            channel = await connection.channel()
            await channel.declare_queue(
                "kpr.test.replicated", durable=True, arguments={"x-queue-type": "quorum"}
            )
        listing = cluster.nodes[2].ctl("list_queues", "name", "members", "--no-table-headers")

    name, members = listing.strip().split("\t")
    assert name == "kpr.test.replicated"
    assert sorted(members.strip("[]").split(", ")) == sorted(cluster.node_names)
