"""What a dead letter says about itself, and which ones an operator means. Pure: no I/O.

A dead letter reaches ``{register}_dl`` in one of two ways:

* the consumer put it there (``Rejected``, or retries exhausted): the ``x-kpr-*`` headers
  of :mod:`consumers.deadletter` say why;
* the broker put it there (the work queue's delivery limit caught a message the
  consumer kept failing on): only the broker's ``x-death`` headers say why, and the
  reason shown is ``delivery-limit`` (other broker reasons show as ``broker-{reason}``).

:func:`describe` reads either into one :class:`DeadLetterInfo`; :class:`DlqFilter`
selects by reason, sender, event type, time and message id; :func:`replay_headers`
is what a replayed copy carries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from consumers.deadletter import (
    BROKER_HEADERS,
    FAILURE_HEADERS,
    HEADER_DEAD_LETTERED_AT,
    HEADER_DESCRIPTION,
    HEADER_HOST,
    HEADER_ORIGINAL_EXCHANGE,
    HEADER_ORIGINAL_ROUTING_KEY,
    HEADER_REASON,
    HEADER_REPLAY_COUNT,
    HEADER_SENDER_HER_ID,
    republishable,
)
from contracts.errors import Reason
from contracts.wire import bus_properties

__all__ = [
    "DeadLetterInfo",
    "DlqFilter",
    "count_by_reason",
    "describe",
    "parse_time",
    "replay_headers",
]

# The broker's reason for a quorum queue's delivery limit, and ours for it.
_BROKER_REASONS = {"delivery_limit": Reason.DELIVERY_LIMIT.value}


class DeadLetterInfo(BaseModel):
    """One dead letter as ``kpr dlq list`` shows it: ids, reason, times; no content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str
    reason: str
    description: str
    sender_her_id: int | None
    event_type: str | None
    dead_lettered_at: datetime | None
    replay_count: int
    size: int
    original_exchange: str | None = None
    original_routing_key: str | None = None
    consumer_host: str | None = None
    broker_death_count: int | None = None


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = _text(value)
    if text is not None and text.isdigit():
        return int(text)
    return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC. Raises ``ValueError``."""
    return _aware(datetime.fromisoformat(text))


def _latest_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]  # the broker keeps the most recent death first
    return None


def describe(
    headers: Mapping[str, Any] | None,
    *,
    message_id: str | None,
    size: int,
    message_type: str | None = None,
) -> DeadLetterInfo:
    """Read a dead letter's headers, whoever dead-lettered it."""
    headers = headers or {}
    sender = _int(headers.get(HEADER_SENDER_HER_ID))
    if sender is None:
        sender = bus_properties(headers).from_her_id
    event_type = _text(headers.get("eventType")) or _text(message_type)
    reason = _text(headers.get(HEADER_REASON))
    death = _latest_death(headers)
    when_text = _text(headers.get(HEADER_DEAD_LETTERED_AT))
    when: datetime | None = None
    if when_text is not None:
        try:
            when = parse_time(when_text)
        except ValueError:
            when = None
    if reason is not None:
        description = _text(headers.get(HEADER_DESCRIPTION)) or ""
    else:
        broker_reason = _text(death.get("reason") if death else None) or _text(
            headers.get("x-first-death-reason")
        )
        reason = _BROKER_REASONS.get(broker_reason or "", f"broker-{broker_reason or 'unknown'}")
        queue = _text(death.get("queue") if death else None) or "the work queue"
        description = f"dead-lettered by the broker from {queue} ({broker_reason or 'unknown'})"
        death_time = death.get("time") if death else None
        if isinstance(death_time, datetime):
            when = _aware(death_time)
    death_count = _int(death.get("count")) if death else None
    return DeadLetterInfo(
        message_id=message_id or "",
        reason=reason,
        description=description,
        sender_her_id=sender,
        event_type=event_type,
        dead_lettered_at=when,
        replay_count=_int(headers.get(HEADER_REPLAY_COUNT)) or 0,
        size=size,
        original_exchange=_text(headers.get(HEADER_ORIGINAL_EXCHANGE)),
        original_routing_key=_text(headers.get(HEADER_ORIGINAL_ROUTING_KEY)),
        consumer_host=_text(headers.get(HEADER_HOST)),
        broker_death_count=death_count,
    )


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters an operator means; an empty filter means all of them.

    Every given criterion must hold (AND); several reasons or message ids are
    alternatives (OR). ``since`` is inclusive, ``until`` exclusive, both on
    ``dead_lettered_at`` (a letter without that time matches no time bound).
    """

    reasons: frozenset[str] = field(default_factory=frozenset)
    sender_her_id: int | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    message_ids: frozenset[str] = field(default_factory=frozenset)

    def matches(self, info: DeadLetterInfo) -> bool:
        if self.reasons and info.reason not in self.reasons:
            return False
        if self.sender_her_id is not None and info.sender_her_id != self.sender_her_id:
            return False
        if self.event_type is not None and info.event_type != self.event_type:
            return False
        if self.message_ids and info.message_id not in self.message_ids:
            return False
        if self.since is not None or self.until is not None:
            if info.dead_lettered_at is None:
                return False
            if self.since is not None and info.dead_lettered_at < _aware(self.since):
                return False
            if self.until is not None and info.dead_lettered_at >= _aware(self.until):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """The criteria that were given, for the audit log."""
        given: dict[str, Any] = {}
        if self.reasons:
            given["reasons"] = sorted(self.reasons)
        if self.sender_her_id is not None:
            given["sender_her_id"] = self.sender_her_id
        if self.event_type is not None:
            given["event_type"] = self.event_type
        if self.since is not None:
            given["since"] = self.since.isoformat()
        if self.until is not None:
            given["until"] = self.until.isoformat()
        if self.message_ids:
            given["message_ids"] = sorted(self.message_ids)
        return given


def count_by_reason(infos: Iterable[DeadLetterInfo]) -> dict[str, int]:
    """Counts per reason, most frequent first (ties by name)."""
    counts = Counter(info.reason for info in infos)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def replay_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers a replayed copy carries: the sender's own, with the replay count raised.

    The failure headers of the last dead-lettering (``x-kpr-*``) and the broker's
    (``x-death``, ``x-first-death-*``, ``x-last-death-*``, ``x-delivery-count``) stay
    behind, so a new failure describes itself and the broker does not drop the copy.
    """
    carried = {
        key: republishable(value)
        for key, value in (headers or {}).items()
        if key not in FAILURE_HEADERS and key not in BROKER_HEADERS
    }
    carried[HEADER_REPLAY_COUNT] = (_int(carried.get(HEADER_REPLAY_COUNT)) or 0) + 1
    return carried
