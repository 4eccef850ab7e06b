"""The broker topology is declared from one place with the arguments the guarantees rest on."""

from __future__ import annotations

from contracts.topology import Topology


def test_the_work_queue_is_a_quorum_queue_with_a_delivery_limit_and_safe_dead_lettering() -> None:
    """Poison messages are dead-lettered by the broker at least once, never dropped."""
    topology = Topology(delivery_limit=7)
    arguments = topology.work_queue_arguments()
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-delivery-limit"] == 7
    assert arguments["x-dead-letter-exchange"] == topology.dead_letter_exchange
    assert arguments["x-dead-letter-routing-key"] == topology.dead_letter_queue
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"


def test_queue_names_follow_the_national_bus_convention() -> None:
    """Queues are per party and named by HER-id."""
    topology = Topology(register_her_id=122612)
    assert topology.work_queue == "122612_async"
    assert topology.dead_letter_queue == "122612_dl"
    assert topology.receipt_queue(90001) == "90001_error"


def test_a_prefix_isolates_every_name() -> None:
    """Tests and benchmarks share a broker without sharing queues."""
    plain, prefixed = Topology(), Topology(prefix="t1.")
    for name in (
        "work_exchange",
        "work_queue",
        "dead_letter_exchange",
        "dead_letter_queue",
        "retry_exchange",
        "receipt_exchange",
    ):
        assert getattr(prefixed, name) == "t1." + getattr(plain, name)


def test_retries_past_the_last_tier_reuse_the_longest_delay() -> None:
    """Backoff grows per attempt and is capped, so the number of delay queues is fixed."""
    topology = Topology(retry_delays_s=(1.0, 5.0))
    assert topology.retry_queue(0) != topology.retry_queue(1)
    assert topology.retry_queue(1) == topology.retry_queue(9)
    retry_arguments = topology.retry_queue_arguments()
    assert retry_arguments["x-dead-letter-exchange"] == topology.work_exchange
    assert retry_arguments["x-dead-letter-strategy"] == "at-least-once"
