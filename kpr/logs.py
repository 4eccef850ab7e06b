"""Structured logs: one JSON object per line on stderr, and nothing personal in them.

Each line holds ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and the
``extra`` fields a call passes, if they are on the allow-list :data:`LOGGED_FIELDS`
(ids of messages and events, reason codes, counts, timings). Anything else passed as
``extra`` is dropped, so a careless ``extra={"event": event}`` cannot leak a person.

Two more guards, because log text is not always ours:

* any run of exactly 11 digits (the shape of a national identity number) in the
  message or a field is replaced by ``[redacted]``;
* an exception is logged as its class and stack frames; its message only when it is
  one of ours (:class:`contracts.errors.KprError`, whose texts are written by this
  package and never formatted from input). Library exceptions, e.g. pydantic's
  validation errors, quote their input, so their text is never written.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Final, TextIO

import orjson

from contracts.errors import KprError

__all__ = ["LOGGED_FIELDS", "JsonFormatter", "configure_logging", "redact"]

LOGGED_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "message_id",
        "event_id",
        "event_type",
        "reason",
        "disposition",
        "sender_her_id",
        "queue",
        "attempt",
        "seconds",
        "count",
        "in_flight",
        "consumer_tag",
        "problems",
        "port",
        "claimed",
        "role",
        "signature",
        "stack",
    }
)

_NATIONAL_ID_SHAPE: Final = re.compile(r"(?<!\d)\d{11}(?!\d)")
REDACTED: Final = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every run of exactly 11 digits replaced by ``[redacted]``."""
    return _NATIONAL_ID_SHAPE.sub(REDACTED, text)


def _safe(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_safe(item) for item in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; see the module docstring for what goes in."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in LOGGED_FIELDS:
            if name in record.__dict__:
                value = record.__dict__[name]
                if value is not None:
                    entry[name] = _safe(value)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            entry["exc_type"] = f"{exc_type.__module__}.{exc_type.__qualname__}"
            if isinstance(exc, KprError):
                entry["exc_message"] = redact(str(exc))
            entry["stack"] = redact("".join(traceback.format_tb(tb)))
        return orjson.dumps(entry).decode()


def configure_logging(level: int | str = logging.INFO, *, stream: TextIO | None = None) -> None:
    """Route every log record to ``stream`` (default stderr) as JSON lines.

    Replaces the root logger's handlers, so calling it twice does not double the output.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # aio-pika / aiormq log reconnect chatter at info with connection URLs; warnings suffice.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # aiormq logs a failed transport as an error before raising it; the command line names
    # that failure itself (kpr.exits) and aio-pika logs each failed reconnect.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
