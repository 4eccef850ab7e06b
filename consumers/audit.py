"""The operator audit log: every replay and purge, one JSON object per line.

Each line says who (the OS user, or the name given with ``--operator``), when, which
action, with which filters, and which message ids it touched. Ids, HER-ids and
reasons only: no content, no personal data. The file is opened in append mode and
flushed and fsynced per line, so concurrent runs interleave whole lines.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AuditLog", "current_operator"]


def current_operator() -> str:
    """The OS user running the tool (``unknown`` if it cannot be told)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class AuditLog:
    def __init__(self, path: Path, *, operator: str | None = None) -> None:
        self.path = Path(path)
        self.operator = operator or current_operator()

    def append(
        self,
        action: str,
        *,
        filters: Mapping[str, Any],
        message_ids: Iterable[str],
        **details: Any,
    ) -> dict[str, Any]:
        """Append one entry and return it. Raises ``OSError`` if the file cannot be written."""
        entry: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "operator": self.operator,
            "action": action,
            "filters": dict(filters),
            "message_ids": list(message_ids),
            **details,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(orjson.dumps(entry) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every entry so far (for tests and ``jq``-less inspection)."""
        if not self.path.exists():
            return []
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]
