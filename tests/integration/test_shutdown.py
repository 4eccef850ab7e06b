"""Graceful shutdown: SIGTERM to a running ``kpr consume`` mid-stream.

The process must exit 143 (128 + SIGTERM) within the drain timeout, and every message must be either
committed exactly once or still on the work queue: none lost, none half-done.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sqlite3
import sys
import time
from pathlib import Path

import aio_pika
import orjson
from support import environment_of, pipeline_settings

from contracts.events import encode_event
from contracts.pki import PkiDir
from contracts.synth import generate_events
from kpr.config import Settings
from kpr.localprocess import free_port
from kpr.runtime import publish_events

MESSAGES = 800
PRODUCE_EVENTS = 12_000
DRAIN_TIMEOUT_S = 10.0


def committed_count(port: int) -> float:
    """``kpr_consumer_messages_total{outcome="committed"}`` from the process's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    match = re.search(r'kpr_consumer_messages_total\{outcome="committed"\} (\S+)', text)
    return float(match.group(1)) if match else 0.0


async def queued_message_ids(url: str, queue_name: str) -> list[str]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        ids: list[str] = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            assert message.message_id is not None
            ids.append(message.message_id)
        return ids


async def test_sigterm_mid_stream_drains_exits_143_and_loses_nothing(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """800 messages, SIGTERM after the first commits: after the drain, exit 143 (128 +
    SIGTERM, as for every command a signal stops) within the drain timeout; the
    committed and the still-queued message ids partition the published ones exactly."""
    settings = pipeline_settings(amqp_vhost_url, dev_pki, tmp_path)
    store = Path(settings.store_url)
    report = await publish_events(settings, generate_events(MESSAGES, seed=51))
    assert report.all_confirmed
    published = set(report.confirmed)

    port = free_port()
    environment = {
        **environment_of(settings),
        "KPR_METRICS_PORT": str(port),
        "KPR_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
    }
    log_file = tmp_path / "consume.log"
    with log_file.open("wb") as log_sink:  # a file, not a pipe: a full pipe would stall it
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kpr",
            "consume",
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_sink,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.returncode is None, log_file.read_text()[-2000:]
            try:
                if committed_count(port) >= 50:
                    break
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "the consumer committed nothing in 60 s"
            await asyncio.sleep(0.02)

        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), DRAIN_TIMEOUT_S + 15)
        exit_seconds = time.monotonic() - signalled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 143, log_file.read_text()[-2000:]
    assert "stopped by SIGTERM after draining" in log_file.read_text()
    assert "Traceback" not in log_file.read_text()
    assert exit_seconds < DRAIN_TIMEOUT_S + 15
    # The JSON log lines; the command line's own closing line is plain text.
    logs = [
        orjson.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")
    ]
    assert any(entry["message"].startswith("shutdown:") for entry in logs)

    with sqlite3.connect(store) as connection:
        rows = connection.execute("SELECT message_id FROM received_messages").fetchall()
    committed = [row[0] for row in rows]
    still_queued = await queued_message_ids(settings.amqp_url, settings.topology().work_queue)
    dead = await queued_message_ids(settings.amqp_url, settings.topology().dead_letter_queue)

    assert 50 <= len(committed) < MESSAGES, "SIGTERM was not mid-stream"
    assert len(committed) == len(set(committed))  # each at most once
    assert dead == []
    assert set(committed).isdisjoint(still_queued)
    assert set(committed) | set(still_queued) == published  # none lost
    counts = dict(part.split("=") for part in stdout.decode().split())
    assert int(counts["committed"]) == len(committed)  # none committed twice or half-done
    print(
        f"committed {len(committed)}, left on the queue {len(still_queued)}, "
        f"exit {exit_seconds:.2f} s after SIGTERM"
    )


async def test_sigterm_to_kpr_produce_stops_publishing_and_exits_143_with_all_sent_confirmed(
    amqp_vhost_url: str, dev_pki: PkiDir, tmp_path: Path
) -> None:
    """SIGTERM while publishing: no more publishes, the in-flight ones are confirmed, exit 143,
    and the queue holds exactly as many messages as the report says were confirmed."""
    # More than this machine publishes in the 4 s before the signal (~1,000/s at best).
    events = generate_events(PRODUCE_EVENTS, seed=52)
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(encode_event(event) + b"\n" for event in events))
    prefix = f"t{secrets.token_hex(4)}."
    environment = {
        **os.environ,
        "KPR_AMQP_URL": amqp_vhost_url,
        "KPR_PKI_DIR": str(dev_pki.directory),
        "KPR_STATE_DIR": str(tmp_path),
        "KPR_ENVIRONMENT": "test",
        "KPR_QUEUE_PREFIX": prefix,
        "KPR_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
    }
    log_file = tmp_path / "produce.log"
    with log_file.open("wb") as log_sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kpr",
            "produce",
            str(source),
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_sink,
        )
    try:
        await asyncio.sleep(4.0)  # start-up, then some publishing
        assert process.returncode is None, "the producer finished before the signal"
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 143, log_file.read_text()[-2000:]
    assert "Traceback" not in log_file.read_text()
    summary = stdout.decode()
    match = re.search(
        rf"published (\d+) \(stopped after \d+ of {PRODUCE_EVENTS}\): confirmed (\d+), "
        r"failed 0, unknown 0",
        summary,
    )
    assert match is not None, summary
    sent, confirmed = int(match.group(1)), int(match.group(2))
    assert 0 < confirmed == sent < len(events)
    topology = Settings(queue_prefix=prefix).topology()
    queued = await queued_message_ids(amqp_vhost_url, topology.work_queue)
    assert len(queued) == confirmed
