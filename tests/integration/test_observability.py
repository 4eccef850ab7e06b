"""The running consumer's /metrics, /healthz, /readyz and logs, on a real RabbitMQ."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from support import pipeline_settings

from consumers.consumer import Consumer
from consumers.processing import Outcome, Processor
from consumers.store import open_store
from contracts.pki import PkiDir
from contracts.synth import generate_events
from kpr.config import Settings
from kpr.localbroker import LocalRabbitMQ
from kpr.localprocess import free_port
from kpr.logs import JsonFormatter
from kpr.runtime import build_opener, consume, pseudonymiser, publish_events


def without_endpoint(settings: Settings) -> Settings:
    """The same settings for a second process-like user (a producer): no HTTP port."""
    return replace(settings, metrics_port=None)


@pytest.fixture
def settings(amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path) -> Settings:
    return pipeline_settings(amqp_vhost_url, dev_pki, tmp_path).with_overrides(
        metrics_port=free_port(), drain_timeout_s=10.0
    )


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str
) -> float:
    """Poll ``condition`` every 50 ms; return the seconds it took, fail after ``timeout_s``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


class RunningConsumer:
    """``consume()`` as a background task with a stop event, and its HTTP endpoint."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.stop = asyncio.Event()
        self.task: asyncio.Task[Counter[str]] = asyncio.create_task(
            consume(settings, registry=registry, stop=self.stop, watch_interval_s=0.3)
        )

    @property
    def port(self) -> int:
        assert self.settings.metrics_port is not None
        return self.settings.metrics_port

    def committed(self) -> float:
        return (
            self.registry.get_sample_value("kpr_consumer_messages_total", {"outcome": "committed"})
            or 0.0
        )

    async def ready(self) -> bool:
        try:
            return (await http_get(self.port, "/readyz"))[0] == 200
        except OSError:
            return False

    async def not_ready(self) -> bool:
        try:
            return (await http_get(self.port, "/readyz"))[0] == 503
        except OSError:
            return False

    async def finish(self) -> Counter[str]:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout=30)


async def test_metrics_count_the_consumed_events_and_readyz_is_green_while_consuming(
    settings: Settings,
) -> None:
    """20 events: /metrics says 20 committed with latencies; /healthz and /readyz are 200."""
    events = generate_events(20, seed=31)
    assert (await publish_events(without_endpoint(settings), events)).all_confirmed
    running = RunningConsumer(settings, CollectorRegistry())
    try:
        await eventually(running.ready, timeout_s=15, what="/readyz 200")
        await eventually(
            lambda: asyncio.sleep(0, running.committed() == 20), timeout_s=30, what="20 commits"
        )
        status, body = await http_get(running.port, "/metrics")
        assert status == 200
        text = body.decode()
        assert 'kpr_consumer_messages_total{outcome="committed"} 20.0' in text
        assert "kpr_consumer_processing_seconds_count 20.0" in text
        assert "kpr_end_to_end_seconds_count 20.0" in text
        # The producer's default letter is MsgHead; the metric says how far senders moved.
        assert 'kpr_consumer_letters_total{form="msghead"} 20.0' in text
        assert 'kpr_consumer_wire_deliveries_total{wire="amqp-0-9-1"} 20.0' in text
        assert 'kpr_consumer_signatures_total{form="signed-attributes"} 20.0' in text
        assert 'kpr_last_commit_timestamp_seconds{sender_her_id="90001"}' in text
        assert 'kpr_certificate_expiry_timestamp_seconds{certificate="decryption"}' in text
        assert (await http_get(running.port, "/healthz"))[0] == 200
        # The watchdog samples the queue depths with passive declares.
        await eventually(
            lambda: asyncio.sleep(
                0, running.registry.get_sample_value("kpr_consumer_ready") == 1.0
            ),
            timeout_s=5,
            what="kpr_consumer_ready 1",
        )
        assert running.registry.get_sample_value("kpr_queue_messages", {"queue": "work"}) == 0
    finally:
        counts = await running.finish()
    assert counts["committed"] == 20


async def test_after_the_broker_drops_the_connection_readyz_goes_red_then_green_and_consumes(
    settings: Settings, local_broker: LocalRabbitMQ
) -> None:
    """Connections closed broker-side: /readyz 503 while the consumer is gone, then 200
    again once it consumes again, and events published afterwards are committed."""
    first = generate_events(5, seed=32)
    assert (await publish_events(without_endpoint(settings), first)).all_confirmed
    running = RunningConsumer(settings, CollectorRegistry())
    try:
        await eventually(
            lambda: asyncio.sleep(0, running.committed() == 5), timeout_s=30, what="5 commits"
        )
        assert await running.ready()

        vhost = settings.amqp_url.rsplit("/", 1)[1] or "/"
        local_broker.ctl("close_all_connections", "--vhost", vhost, "test: observability")

        await eventually(running.not_ready, timeout_s=10, what="/readyz 503 after the drop")
        status, body = await http_get(running.port, "/readyz")
        assert status == 503
        assert orjson.loads(body)["status"] == "not-ready"
        back_after = await eventually(running.ready, timeout_s=60, what="/readyz 200 again")

        later = generate_events(7, seed=33)
        assert (await publish_events(without_endpoint(settings), later)).all_confirmed
        await eventually(
            lambda: asyncio.sleep(0, running.committed() == 12),
            timeout_s=30,
            what="events published after the reconnect are committed",
        )
    finally:
        counts = await running.finish()
    assert counts["committed"] == 12
    print(f"ready again {back_after:.1f} s after the first 503")


async def test_a_full_consume_never_logs_a_national_id(settings: Settings) -> None:
    """Committed, duplicate and dead-lettered deliveries at DEBUG: no national id in the logs."""
    events = generate_events(15, seed=34)
    national_ids = {event.person.national_id for event in events}
    assert (await publish_events(without_endpoint(settings), events)).all_confirmed
    resent = events[:3]  # a producer resend: duplicates at the consumer
    assert (await publish_events(without_endpoint(settings), resent)).all_confirmed
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        counts = await consume(settings, until_idle_s=1.5)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
    assert counts["committed"] == 15
    assert counts["duplicate"] == 3
    output = buffer.getvalue()
    assert "delivery committed" in output  # the logs were captured at all
    for line in output.splitlines():
        orjson.loads(line)  # every line is one JSON object
    leaked = [national_id for national_id in national_ids if national_id in output]
    assert leaked == []


class HoldingProcessor:
    """A real :class:`Processor` that holds the first delivery until released: a stall."""

    def __init__(self, inner: Processor) -> None:
        self._inner = inner
        self.release = asyncio.Event()
        self._held = False

    async def process(self, body: bytes, **context: Any) -> Outcome:
        if not self._held:
            self._held = True
            await self.release.wait()
        return await self._inner.process(body, **context)


async def test_a_delivery_that_stays_undecided_is_logged_once_and_keeps_readyz_red(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery held past ``stall_after_s``: one warning naming its message id, the
    readiness problem until it settles, and the deliveries behind it still commit."""
    events = generate_events(3, seed=34)
    assert (await publish_events(without_endpoint(settings), events)).all_confirmed
    caplog.set_level(logging.WARNING, logger="kpr.consumer")
    async with open_store(settings.store_url) as store:
        holding = HoldingProcessor(
            Processor(build_opener(settings), pseudonymiser(settings), store)
        )
        async with Consumer(
            settings.amqp_url,
            topology=settings.topology(),
            processor=holding,  # type: ignore[arg-type]
            watch_interval_s=0.1,
            stall_after_s=0.5,
        ) as consumer:
            running = asyncio.create_task(consumer.run())

            async def stalled() -> bool:
                return any("undecided" in p for p in await consumer.readiness_problems())

            await eventually(stalled, timeout_s=15, what="the stall reported")
            assert consumer.oldest_delivery_s() >= 0.5
            await asyncio.sleep(0.5)  # several watchdog rounds: still one warning
            warnings = [r for r in caplog.records if "undecided" in r.getMessage()]
            assert len(warnings) == 1
            assert getattr(warnings[0], "message_id", None)
            holding.release.set()

            async def settled() -> bool:
                return consumer.counts["committed"] == 3 and not await stalled()

            await eventually(settled, timeout_s=15, what="the held delivery settled")
            assert consumer.oldest_delivery_s() == 0.0
            consumer.request_stop()
            await asyncio.wait_for(running, timeout=30)
