"""The core of ``kpr dlq``: list, show, export, replay and purge dead letters on the broker.

Reading never loses a dead letter: every operation reads on a channel of its own with
``basic.get`` and manual acks, and acks only what it has finished with (replayed and
confirmed, or purged). Closing the channel returns everything else to the queue, so a
crash or ``kill -9`` at any point leaves each dead letter either still queued or, for a
replay, republished *and* still queued (a redelivered replay the store deduplicates by
message id), never neither.

A scan reads at most as many messages as the queue held when it began, so copies that
come back during a replay (the consumer dead-letters them again) wait for the next run.

Replay republishes the original bytes to the work exchange with the original message id
and properties, ``x-kpr-replay-count`` raised by one, and neither our failure headers nor
the broker's ``x-death`` family (see :func:`consumers.dlq_filters.replay_headers`); it
waits for the broker's confirm before acking the dead letter. A dead letter whose replay
count has reached ``max_replays`` stays where it is and is reported.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import ChannelNotFoundEntity

from consumers.audit import AuditLog
from consumers.deadletter import publish_confirmed
from consumers.dlq_filters import DeadLetterInfo, DlqFilter, describe, replay_headers
from contracts.connection import TlsSettings, connect
from contracts.resources import AsyncResource
from contracts.topology import Topology

__all__ = ["DEFAULT_MAX_REPLAYS", "DeadLetter", "DeadLetterQueue", "ReplayReport", "json_safe"]

DEFAULT_MAX_REPLAYS = 3
_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read: what it says about itself, and the delivery to settle."""

    info: DeadLetterInfo
    message: AbstractIncomingMessage

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.message.headers or {})

    @property
    def body(self) -> bytes:
        return self.message.body


@dataclass
class ReplayReport:
    dry_run: bool
    replayed: list[str] = field(default_factory=list)
    at_cap: list[str] = field(default_factory=list)
    duplicates_left: list[str] = field(default_factory=list)


def json_safe(value: Any) -> Any:
    """Header values as JSON can hold them: times as ISO text, bytes as base64."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _file_stem(message_id: str) -> str:
    return _UNSAFE_FILE_CHARACTERS.sub("_", message_id) or "no-message-id"


def _write_export(out_dir: Path, message_id: str, body: bytes, document: Any) -> Path:
    """Write one exported pair; a second copy of an id gets ``.2``, ``.3`` ... appended."""
    stem = _file_stem(message_id)
    number = 1
    while (out_dir / f"{stem}.der").exists():
        number += 1
        stem = f"{_file_stem(message_id)}.{number}"
    (out_dir / f"{stem}.der").write_bytes(body)
    (out_dir / f"{stem}.json").write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    return out_dir / f"{stem}.der"


def _replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The original bytes and properties, replay headers; no ``user_id`` (the operator's
    connection could not vouch for the sender's) and no ``expiration``."""
    return aio_pika.Message(
        message.body,
        headers=replay_headers(message.headers),
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


class DeadLetterQueue(AsyncResource):
    """``async with DeadLetterQueue(url, topology=...) as dlq: await dlq.list()``."""

    def __init__(
        self,
        url: str,
        *,
        topology: Topology,
        tls: TlsSettings | None = None,
        audit: AuditLog | None = None,
        connect_timeout_s: float = 60.0,
    ) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._topology = topology
        self._tls = tls
        self._audit = audit
        self._connection: AbstractRobustConnection | None = None
        #: Set when the dead-letter queue was not on the broker: nothing has been
        #: dead-lettered under this topology yet (every listing is then empty).
        self.queue_missing = False

    async def __aenter__(self) -> Self:
        self._connection = await connect(
            self._url, tls=self._tls, name="kpr-dlq", timeout_s=self._connect_timeout_s
        )
        return self

    async def aclose(self) -> None:
        """Close the connection; harmless twice."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await asyncio.shield(connection.close())

    async def _channel(self) -> AbstractChannel:
        if self._connection is None:
            raise RuntimeError("DeadLetterQueue is not open")
        return await self._connection.channel(publisher_confirms=True, on_return_raises=True)

    async def depth(self) -> int:
        """Messages ready in the dead-letter queue now."""
        async with await self._channel() as channel:
            queue = await self._dead_letters(channel)
            return 0 if queue is None else int(queue.declaration_result.message_count or 0)

    async def _dead_letters(self, channel: AbstractChannel) -> AbstractQueue | None:
        """The dead-letter queue, or ``None`` (and :attr:`queue_missing`) if the broker has
        none: a register that has never dead-lettered, or a wrong queue prefix."""
        try:
            return await channel.declare_queue(self._topology.dead_letter_queue, passive=True)
        except ChannelNotFoundEntity:
            self.queue_missing = True
            return None

    async def _scan(self, channel: AbstractChannel) -> AsyncIterator[DeadLetter]:
        """Every dead letter queued when the scan began, unacked, in queue order."""
        queue = await self._dead_letters(channel)
        if queue is None:
            return
        for _ in range(int(queue.declaration_result.message_count or 0)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return
            info = describe(
                message.headers,
                message_id=message.message_id,
                size=len(message.body),
                message_type=message.type,
            )
            yield DeadLetter(info, message)

    async def list_matching(self, selection: DlqFilter | None = None) -> list[DeadLetterInfo]:
        """What matches, in queue order; the queue is left as it was."""
        selection = selection or DlqFilter()
        async with await self._channel() as channel:
            return [
                letter.info
                async for letter in self._scan(channel)
                if selection.matches(letter.info)
            ]

    async def show(self, message_id: str) -> tuple[DeadLetterInfo, dict[str, Any], bytes] | None:
        """The first dead letter with this message id: info, headers, original bytes."""
        async with await self._channel() as channel:
            async for letter in self._scan(channel):
                if letter.info.message_id == message_id:
                    return letter.info, letter.headers, letter.body
        return None

    async def export(self, selection: DlqFilter, out_dir: Path) -> list[Path]:
        """Write ``{id}.der`` (the original, still encrypted) and ``{id}.json`` (headers)
        per matching dead letter; the queue is left as it was. Returns the ``.der`` paths."""
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        written: list[Path] = []
        async with await self._channel() as channel:
            async for letter in self._scan(channel):
                if not selection.matches(letter.info):
                    continue
                document = {
                    "info": letter.info.model_dump(mode="json"),
                    "properties": {
                        "message_id": letter.message.message_id,
                        "content_type": letter.message.content_type,
                        "type": letter.message.type,
                        "timestamp": json_safe(letter.message.timestamp),
                    },
                    "headers": json_safe(letter.headers),
                }
                written.append(
                    await asyncio.to_thread(
                        _write_export, out_dir, letter.info.message_id, letter.body, document
                    )
                )
        return written

    async def replay(
        self,
        selection: DlqFilter,
        *,
        dry_run: bool = False,
        limit: int | None = None,
        rate_per_s: float | None = None,
        max_replays: int = DEFAULT_MAX_REPLAYS,
        on_replayed: Callable[[str], None] | None = None,
    ) -> ReplayReport:
        """Republish matching dead letters to the work exchange, confirm, then ack each.

        A second copy of a message id already replayed in this run is left queued
        (``duplicates_left``). Raises what the broker raises (``Unroutable`` if the work
        exchange routes nowhere); what was not yet acked stays in the queue.
        """
        report = ReplayReport(dry_run=dry_run)
        interval = 1.0 / rate_per_s if rate_per_s else 0.0
        next_at = time.monotonic()
        try:
            async with await self._channel() as channel:
                exchange = await channel.get_exchange(self._topology.work_exchange, ensure=False)
                async for letter in self._scan(channel):
                    info = letter.info
                    if not selection.matches(info):
                        continue
                    if limit is not None and len(report.replayed) >= limit:
                        break
                    if info.replay_count >= max_replays:
                        report.at_cap.append(info.message_id)
                        continue
                    if info.message_id in report.replayed:
                        report.duplicates_left.append(info.message_id)
                        continue
                    if dry_run:
                        report.replayed.append(info.message_id)
                        continue
                    if interval:
                        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                        next_at = max(next_at, time.monotonic()) + interval
                    await publish_confirmed(
                        exchange,
                        _replay_copy(letter.message),
                        routing_key=self._topology.routing_key,
                    )
                    await letter.message.ack()
                    report.replayed.append(info.message_id)
                    if on_replayed is not None:
                        on_replayed(info.message_id)
        finally:
            if self._audit is not None:
                self._audit.append(
                    "replay",
                    filters=selection.as_dict(),
                    message_ids=report.replayed,
                    dry_run=dry_run,
                    at_cap=report.at_cap,
                    max_replays=max_replays,
                    queue=self._topology.dead_letter_queue,
                )
        return report

    async def purge(self, selection: DlqFilter, *, limit: int | None = None) -> list[str]:
        """Delete matching dead letters for good; returns their message ids."""
        purged: list[str] = []
        try:
            async with await self._channel() as channel:
                async for letter in self._scan(channel):
                    if not selection.matches(letter.info):
                        continue
                    if limit is not None and len(purged) >= limit:
                        break
                    await letter.message.ack()
                    purged.append(letter.info.message_id)
        finally:
            if self._audit is not None:
                self._audit.append(
                    "purge",
                    filters=selection.as_dict(),
                    message_ids=purged,
                    queue=self._topology.dead_letter_queue,
                )
        return purged
