"""The producer side of ``kpr bench``: an EPJ extract, and a process that back-fills it.

The sealed phases run the real back-fill (:func:`producers.backfill.backfill`): read a
JSON Lines extract, validate each line against the contracts, seal, publish with
confirms and keep the checkpoint, so the producer figures are those of the heavy case,
not of a loop written for the benchmark. The extract is written before the clock starts:
making up synthetic events is the benchmark's work, not the producer's. The raw phases
publish random bytes of the sealed size through the same :class:`Publisher`.

The producer runs in a process of its own (forked), as it would on a real machine, and
reports its wall-clock span and its own CPU seconds through a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.events import Event, encode_event
from contracts.synth import generate_events
from kpr import eventloop, lifecycle
from kpr.config import Settings
from kpr.runtime import build_sealer
from producers.backfill import Checkpoint, backfill
from producers.publisher import Publisher
from producers.sealer import SealedMessage

__all__ = ["Load", "ProducerRun", "events", "start_producer", "write_extract"]

EVENT_CHUNK = 1000
#: How long to wait for a producer to finish (the one-million-message run is the longest).
PRODUCER_TIMEOUT_S = 3 * 3600


def events(count: int, seed: int) -> Iterator[Event]:
    """``count`` distinct synthetic events, generated a chunk at a time (flat memory)."""
    made = 0
    chunk = 0
    while made < count:
        size = min(EVENT_CHUNK, count - made)
        yield from generate_events(size, seed=seed * 1_000_003 + chunk)
        made += size
        chunk += 1


def write_extract(path: Path, count: int, seed: int) -> Path:
    """An EPJ extract of ``count`` distinct events, one JSON object per line."""
    with path.open("wb") as handle:
        for event in events(count, seed):
            handle.write(encode_event(event))
            handle.write(b"\n")
    return path


@dataclass(frozen=True)
class Load:
    """What one producer process sends.

    ``extract`` set: back-fill it (sealed events); else ``count`` random bodies of
    ``raw_size`` bytes. ``rate`` limits the back-fill (its own token bucket);
    ``record_sent`` keeps the publish time of every event for the latency figures.
    """

    count: int
    max_in_flight: int
    extract: Path | None = None
    raw_size: int = 0
    rate: float | None = None
    record_sent: bool = False


class _Stamping:
    """A publisher that notes when each event was handed to the broker."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self.sent_at: dict[str, float] = {}

    async def publish(self, sealed: SealedMessage) -> None:
        self.sent_at[sealed.event_id] = time.time()
        await self._publisher.publish(sealed)


async def _raw_messages(count: int, size: int) -> AsyncIterator[SealedMessage]:
    for number in range(count):
        yield SealedMessage(
            message_id=f"raw-{number}",
            body=os.urandom(size),
            event_id=f"raw-{number}",
            event_type="raw",
            sender_her_id=0,
            recipient_her_id=0,
            created_at=datetime.now(UTC),
        )


async def _produce(settings: Settings, load: Load) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    # Loading the signing key is start-up work, done before the clock starts.
    sealer = build_sealer(settings) if load.extract is not None else None
    async with Publisher(settings.amqp_url, topology=settings.topology()) as publisher:
        started, cpu_started = time.time(), time.process_time()
        if load.extract is None:
            report = await publisher.publish_all(
                _raw_messages(load.count, load.raw_size), max_in_flight=load.max_in_flight
            )
            confirmed = len(report.confirmed)
        else:
            assert sealer is not None
            stamping = _Stamping(publisher)
            filled = await backfill(
                load.extract,
                sealer=sealer,
                publisher=stamping if load.record_sent else publisher,
                checkpoint=Checkpoint(load.extract.with_suffix(".checkpoint")),
                environment=settings.environment,
                rate=load.rate,
                max_in_flight=load.max_in_flight,
            )
            confirmed, sent_at = filled.published, stamping.sent_at
        finished, cpu_finished = time.time(), time.process_time()
    return {
        "started": started,
        "finished": finished,
        "cpu_s": cpu_finished - cpu_started,
        "confirmed": confirmed,
        "sent_at": sent_at,
    }


def _producer_main(settings: Settings, load: Load, results: Any) -> None:
    try:
        results.put(eventloop.run(_produce(settings, load)))
    except (lifecycle.Interrupted, KeyboardInterrupt) as stopped:
        # The bench stops its producer with SIGTERM (and a terminal's Ctrl-C reaches it
        # too): a quiet exit, not multiprocessing's traceback of the interruption.
        sys.exit(stopped.exit_code if isinstance(stopped, lifecycle.Interrupted) else 130)


@dataclass
class ProducerRun:
    """A producer process under way; :meth:`result` waits for its figures."""

    process: multiprocessing.process.BaseProcess
    results: Any

    async def result(self) -> dict[str, Any]:
        """``started``/``finished`` (epoch s), ``cpu_s``, ``confirmed``, ``sent_at``.

        Raises ``RuntimeError`` if the producer exits without figures or takes longer
        than :data:`PRODUCER_TIMEOUT_S`. Cancelled (Ctrl-C), it stops the producer.
        """
        deadline = time.monotonic() + PRODUCER_TIMEOUT_S
        try:
            while True:
                # Short waits, so that neither a cancellation nor the end of the event
                # loop waits for a thread blocked on the queue.
                with contextlib.suppress(queue.Empty):
                    figures: dict[str, Any] = await asyncio.to_thread(self.results.get, True, 0.5)
                    break
                if not self.process.is_alive() and self.results.empty():
                    raise RuntimeError(
                        f"the producer process exited ({self.process.exitcode}) without figures"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError("the producer process did not finish in time")
        except BaseException:
            self.process.terminate()
            raise
        await asyncio.to_thread(self.process.join, 30)
        return figures


def start_producer(settings: Settings, load: Load) -> ProducerRun:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=_producer_main, args=(settings, load, results), daemon=True)
    process.start()
    return ProducerRun(process, results)
