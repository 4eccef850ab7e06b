"""The back-fill producer on a real broker: SIGKILL mid-way, resume, nothing lost or re-sent."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aio_pika
import orjson
import pytest

from contracts.events import Environment, parse_event
from contracts.pki import PkiDir, ensure_dev_pki
from contracts.synth import generate_lines
from contracts.topology import Topology
from producers.backfill import Checkpoint, TokenBucket
from producers.sealer import message_id_for

EVENTS = 400
MAX_IN_FLIGHT = 16
MAX_RESEND = 32
INVALID_LINE = b'{"not": "an event"}'


@pytest.fixture(scope="session")
def backfill_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("backfill-pki"))


def _environment(url: str, pki: PkiDir, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "KPR_AMQP_URL": url,
        "KPR_PKI_DIR": str(pki.directory),
        "KPR_ENVIRONMENT": "test",
        "KPR_QUEUE_PREFIX": prefix,
    }


def _backfill(extract: Path, checkpoint: Path, env: dict[str, str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "kpr", "backfill", str(extract),
        "--checkpoint", str(checkpoint), "--max-in-flight", str(MAX_IN_FLIGHT),
        "--max-resend", str(MAX_RESEND), *extra,
    ]  # fmt: skip


async def _message_ids(url: str, queue_name: str) -> Counter[str]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        ids: Counter[str] = Counter()
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            assert message.message_id is not None
            ids[message.message_id] += 1
        return ids


def test_a_killed_backfill_resumes_without_loss_and_resends_less_than_its_bound(
    amqp_vhost_url: str, backfill_pki: PkiDir, tmp_path: Path
) -> None:
    """SIGKILL mid-way, restart with the same checkpoint: every event is on the queue;
    no line below the checkpoint found after the kill was sent twice, and the duplicates
    number fewer than the re-send bound. An invalid line is skipped, not fatal."""
    lines = generate_lines(EVENTS, seed=31)
    lines.insert(EVENTS // 2, INVALID_LINE)
    extract = tmp_path / "extract.jsonl"
    extract.write_bytes(b"\n".join(lines) + b"\n")
    checkpoint = tmp_path / "backfill.checkpoint"
    prefix = f"bf{secrets.token_hex(3)}."
    env = _environment(amqp_vhost_url, backfill_pki, prefix)

    first = subprocess.Popen(
        _backfill(extract, checkpoint, env, "--rate", "150"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while Checkpoint(checkpoint).read() < EVENTS // 4:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the back-fill made no progress"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    at_kill = Checkpoint(checkpoint).read()
    assert 0 < at_kill < len(lines), "killed mid-way"

    second = subprocess.run(
        _backfill(extract, checkpoint, env, "--progress"),
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert Checkpoint(checkpoint).read() == len(lines)
    assert "skipped 1" in second.stdout
    # The invalid line is listed by its number beside the checkpoint, by whichever run saw it.
    rejects = checkpoint.with_name(checkpoint.name + ".rejects.jsonl")
    listed = {orjson.loads(entry)["line"] for entry in rejects.read_bytes().splitlines()}
    assert listed == {EVENTS // 2 + 1}
    assert str(rejects) in second.stdout or at_kill > EVENTS // 2
    assert "lines" in second.stderr  # the progress bar went to stderr

    on_queue = asyncio.run(_message_ids(amqp_vhost_url, Topology(prefix=prefix).work_queue))
    events = [
        parse_event(line, environment=Environment.TEST) for line in lines if line != INVALID_LINE
    ]
    expected = [message_id_for(event) for event in events]
    assert set(on_queue) == set(expected)
    valid_lines_below_checkpoint = [
        message_id for index, message_id in enumerate(expected) if index < at_kill - 1
    ]
    assert all(on_queue[message_id] == 1 for message_id in valid_lines_below_checkpoint)
    duplicates = sum(on_queue.values()) - len(expected)
    assert 0 <= duplicates < MAX_RESEND


def test_a_checkpoint_survives_rewrites_and_refuses_garbage(tmp_path: Path) -> None:
    """Written values read back; a corrupt checkpoint raises instead of restarting at 0."""
    checkpoint = Checkpoint(tmp_path / "cp")
    assert checkpoint.read() == 0
    checkpoint.write(17)
    checkpoint.write(42)
    assert checkpoint.read() == 42
    (tmp_path / "cp").write_bytes(b'{"line": -1}')
    with pytest.raises(ValueError, match="checkpoint"):
        checkpoint.read()


def test_the_token_bucket_paces_to_its_rate_after_the_burst() -> None:
    """At 10/s with a burst of 2: two immediate, then one every 0.1 s."""
    now = [0.0]
    bucket = TokenBucket(10, burst=2, clock=lambda: now[0])
    delays = [bucket.delay() for _ in range(4)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2] == pytest.approx(0.1)
    assert delays[3] == pytest.approx(0.2)
