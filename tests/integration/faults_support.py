"""Shared machinery of the fault-injection tests: a Jepsen-style history checker, a TCP
proxy that can cut or silently partition connections, and small helpers.

The checker follows Jepsen's queue checker. The producer records every publish as
confirmed, failed or unknown (``History.record`` is a ``publish_all(on_outcome=...)``
callback). Afterwards, reading the store and the dead-letter queue:

* every confirmed message is committed or dead-lettered (nothing lost);
* nothing is in the store or the dead-letter queue that was never published;
* unknowns may or may not appear (both are counted);
* the store holds each (event id, revision) and each message id at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import aio_pika

from consumers.deadletter import HEADER_ORIGINAL_MESSAGE_ID
from contracts.errors import PublishFailed
from contracts.events import Event
from contracts.resources import AsyncResource
from kpr.config import Settings
from kpr.runtime import publish_events
from producers.publisher import PublishOutcome, PublishReport
from producers.sealer import SealedMessage, message_id_for

T = TypeVar("T")

__all__ = [
    "History",
    "StoreContents",
    "TcpProxy",
    "Verdict",
    "check",
    "dead_lettered_ids",
    "eventually",
    "paced",
    "read_store",
]


# -- the history and its checker --------------------------------------------------------


@dataclass
class History:
    """What the producer knows of every message it tried: the final outcome per id.

    A message may be recorded several times (unknown, then confirmed on a resend):
    confirmed wins over everything, failed over unknown.
    """

    keys: dict[str, tuple[str, int]] = field(default_factory=dict)
    outcomes: dict[str, PublishOutcome] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def for_events(cls, events: Iterable[Event]) -> History:
        history = cls()
        for event in events:
            history.keys[message_id_for(event)] = (str(event.event_id), event.revision)
        return history

    async def record(
        self, sealed: SealedMessage, outcome: PublishOutcome, error: PublishFailed | None
    ) -> None:
        """The ``on_outcome`` callback of ``Publisher.publish_all`` / ``publish_events``."""
        del error
        self.attempts[sealed.message_id] += 1
        previous = self.outcomes.get(sealed.message_id)
        rank = {PublishOutcome.UNKNOWN: 0, PublishOutcome.FAILED: 1, PublishOutcome.CONFIRMED: 2}
        if previous is None or rank[outcome] > rank[previous]:
            self.outcomes[sealed.message_id] = outcome

    def with_outcome(self, outcome: PublishOutcome) -> set[str]:
        return {mid for mid, seen in self.outcomes.items() if seen is outcome}


@dataclass(frozen=True)
class StoreContents:
    """What the pathway store holds, counted per key (a count > 1 is a duplicate)."""

    message_ids: Counter[str]
    event_keys: Counter[tuple[str, int]]


def _read_store_sync(store_url: str) -> StoreContents:
    if store_url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(store_url) as connection:
            messages = connection.execute("SELECT message_id FROM received_messages").fetchall()
            events = connection.execute("SELECT event_id, revision FROM events").fetchall()
    else:
        path = store_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path)
        try:
            messages = connection.execute("SELECT message_id FROM received_messages").fetchall()
            events = connection.execute("SELECT event_id, revision FROM events").fetchall()
        finally:
            connection.close()
    return StoreContents(
        message_ids=Counter(str(row[0]) for row in messages),
        event_keys=Counter((str(row[0]), int(row[1])) for row in events),
    )


async def read_store(store_url: str) -> StoreContents:
    """Every message id and (event id, revision) row of the store (SQLite or PostgreSQL)."""
    return await asyncio.to_thread(_read_store_sync, store_url)


async def dead_lettered_ids(url: str, queue_name: str) -> list[str]:
    """The original message ids on a dead-letter queue (read and acked: drained)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        ids: list[str] = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            original = (message.headers or {}).get(HEADER_ORIGINAL_MESSAGE_ID)
            ids.append(str(original or message.message_id))
        return ids


@dataclass(frozen=True)
class Verdict:
    """The checker's findings; :meth:`assert_valid` fails the test on any violation."""

    attempted: int
    confirmed: int
    failed: int
    unknown: int
    committed: int
    dead_lettered: int
    resends: int
    lost: list[str]
    unexpected: list[str]
    unknown_appeared: int
    duplicate_events: dict[tuple[str, int], int]
    duplicate_messages: dict[str, int]

    @property
    def valid(self) -> bool:
        return not (
            self.lost or self.unexpected or self.duplicate_events or self.duplicate_messages
        )

    def summary(self) -> str:
        return (
            f"attempted {self.attempted}: confirmed {self.confirmed}, failed {self.failed}, "
            f"unknown {self.unknown} (appeared {self.unknown_appeared}), resends "
            f"{self.resends}; committed "
            f"{self.committed}, dead-lettered {self.dead_lettered}; lost {len(self.lost)}, "
            f"unexpected {len(self.unexpected)}, duplicate rows "
            f"{len(self.duplicate_events) + len(self.duplicate_messages)}"
        )

    def assert_valid(self) -> None:
        assert self.valid, self.summary() + (
            f"; lost {self.lost[:5]}, unexpected {self.unexpected[:5]}, "
            f"duplicates {list(self.duplicate_events)[:5]} {list(self.duplicate_messages)[:5]}"
        )


def check(history: History, store: StoreContents, dead_letters: Iterable[str]) -> Verdict:
    """Judge a run: see the module docstring for the rules."""
    dead = set(dead_letters)
    committed_keys = set(store.event_keys)
    published = set(history.keys)

    def appeared(message_id: str) -> bool:
        return (
            message_id in store.message_ids
            or history.keys.get(message_id) in committed_keys
            or message_id in dead
        )

    confirmed = history.with_outcome(PublishOutcome.CONFIRMED)
    unknown = history.with_outcome(PublishOutcome.UNKNOWN)
    known_event_keys = set(history.keys.values())
    unexpected = sorted(
        {mid for mid in store.message_ids if mid not in published}
        | {mid for mid in dead if mid not in published}
        | {f"{key[0]}/{key[1]}" for key in committed_keys if key not in known_event_keys}
    )
    return Verdict(
        attempted=len(history.outcomes),
        confirmed=len(confirmed),
        failed=len(history.with_outcome(PublishOutcome.FAILED)),
        unknown=len(unknown),
        committed=len(committed_keys),
        dead_lettered=len(dead),
        resends=sum(history.attempts.values()) - len(history.attempts),
        lost=sorted(mid for mid in confirmed if not appeared(mid)),
        unexpected=unexpected,
        unknown_appeared=sum(1 for mid in unknown if appeared(mid)),
        duplicate_events={k: n for k, n in store.event_keys.items() if n > 1},
        duplicate_messages={k: n for k, n in store.message_ids.items() if n > 1},
    )


# -- a TCP proxy that can fail ----------------------------------------------------------


class TcpProxy(AsyncResource):
    """A loopback TCP proxy to ``target_host:target_port`` that a test can break.

    * :meth:`drop_all` aborts every open connection (both sides see a reset), like a
      crashed load balancer;
    * :meth:`blackhole` stops forwarding without closing anything: bytes are held, new
      connections are accepted but not connected onward, like a silent network partition
      (no FIN, no RST, only silence);
    * :meth:`heal` forwards again (held bytes flow, as TCP retransmission would deliver);
    * :meth:`drop_on_method` arms a cut at an exact protocol moment: when a client sends
      that AMQP 0-9-1 method, every connection is aborted before the frame is forwarded
      (so "the node went away while the client was declaring" is certain, not a race).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0
        self._trigger: tuple[int, int] | None = None
        self.triggered = asyncio.Event()

    @classmethod
    def to(cls, amqp_url: str) -> TcpProxy:
        """A proxy to the host and port of ``amqp_url``."""
        parsed = urlsplit(amqp_url)
        assert parsed.hostname is not None
        assert parsed.port is not None
        return cls(parsed.hostname, parsed.port)

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url_for(self, amqp_url: str) -> str:
        """``amqp_url`` rewritten to go through this proxy (same credentials and vhost)."""
        scheme, rest = amqp_url.split("://", 1)
        credentials, _, host_and_path = rest.rpartition("@")
        _, _, path = host_and_path.partition("/")
        prefix = f"{credentials}@" if credentials else ""
        return f"{scheme}://{prefix}127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        self._flowing.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    def drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def drop_on_method(self, class_id: int, method_id: int) -> None:
        """Abort every connection the first time a client sends this method (once)."""
        self._trigger = (class_id, method_id)
        self.triggered.clear()

    def blackhole(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pump(reader, up_writer, _FrameWatch()),
                self._pump(up_reader, writer),
                return_exceptions=True,
            )
            for side in (writer, up_writer):
                side.transport.abort()
                self._writers.discard(side)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        watch: _FrameWatch | None = None,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                if watch is not None and self._trigger is not None:
                    cut = watch.find(chunk, self._trigger)
                    if cut is not None:
                        writer.write(chunk[:cut])
                        self._trigger = None
                        self.triggered.set()
                        self.drop_all()
                        return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


class _FrameWatch:
    """Follows the AMQP 0-9-1 frames a client sends, across chunk boundaries."""

    _PROTOCOL_HEADER = 8  # b"AMQP\x00\x00\x09\x01"

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0  # stream offset of self._buffer[0]
        self._skip = self._PROTOCOL_HEADER

    def find(self, chunk: bytes, method: tuple[int, int]) -> int | None:
        """Where in ``chunk`` the first frame carrying ``method`` starts, if it does."""
        start = self._offset + len(self._buffer)  # stream offset of chunk[0]
        self._buffer += chunk
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                self._buffer, self._offset = self._buffer[taken:], self._offset + taken
                self._skip -= taken
                if self._skip:
                    return None
            if len(self._buffer) < 11:  # type, channel, size, and the method ids
                return None
            frame_type = self._buffer[0]
            size = int.from_bytes(self._buffer[3:7], "big")
            ids = (
                int.from_bytes(self._buffer[7:9], "big"),
                int.from_bytes(self._buffer[9:11], "big"),
            )
            if frame_type == 1 and ids == method:
                return max(self._offset - start, 0)
            self._skip = 7 + size + 1  # header, payload, frame-end octet


# -- helpers --------------------------------------------------------------------------


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
) -> float:
    """Poll ``condition``; return the seconds it took; raise AssertionError after ``timeout_s``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(interval_s)
    return time.monotonic() - started


def publish_in_thread(
    settings: Settings,
    events: Sequence[Event],
    interval_s: float,
    *,
    history: History,
) -> asyncio.Task[PublishReport]:
    """``publish_events`` of ``events``, one every ``interval_s``, in a thread with an event
    loop of its own (the pacing blocks), outcomes recorded in ``history``; the caller's
    loop stays free to fire a fault mid-stream."""

    def produce() -> PublishReport:
        return asyncio.run(
            publish_events(settings, paced(events, interval_s), on_outcome=history.record)
        )

    return asyncio.create_task(asyncio.to_thread(produce))


async def confirmed_at_least(history: History, count: int, *, timeout_s: float = 60) -> int:
    """Wait until ``history`` holds ``count`` confirms; the number confirmed then."""

    async def reached() -> bool:
        return len(history.with_outcome(PublishOutcome.CONFIRMED)) >= count

    await eventually(reached, timeout_s=timeout_s, what=f"{count} confirmed", interval_s=0.05)
    return len(history.with_outcome(PublishOutcome.CONFIRMED))


def paced(items: Iterable[T], interval_s: float) -> Iterator[T]:
    """``items`` one every ``interval_s`` (a blocking sleep: run the consumer of this
    iterator in a thread of its own, see :func:`publish_in_thread`)."""
    for item in items:
        time.sleep(interval_s)
        yield item
