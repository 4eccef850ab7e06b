"""How the dedup record grows: bytes per message and lookup cost over millions of rows.

The dedup state is two primary-key indexes: ``received_messages(message_id)`` and
``events(event_id, revision)``. Each lookup is one B-tree probe, so its cost grows with
log(n); this measures it instead of asserting it. Rows are bulk-loaded (the real
``apply`` path is measured by ``kpr bench``), then the real ``apply`` is timed for new
and duplicate messages at each size.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from consumers.processing import pseudonymise
from consumers.pseudonym import Pseudonymiser
from consumers.store import SqliteStore
from contracts.synth import generate_events

__all__ = ["measure_dedup_growth"]

_BATCH = 50_000


def _bulk_load(path: Path, rows: int) -> None:
    connection = sqlite3.connect(path)
    try:
        now = "2026-01-01T00:00:00+00:00"
        for start in range(0, rows, _BATCH):
            batch = [
                (str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(min(_BATCH, rows - start))
            ]
            connection.executemany(
                "INSERT INTO received_messages VALUES (?, ?, 1, ?)",
                [(m, e, now) for m, e in batch],
            )
            connection.executemany(
                "INSERT INTO events VALUES (?, 1, ?, 'hst.consultation', 'original', 'p', "
                "'310000000', '0301', 90001, NULL, ?, ?, ?, 'd', '{}')",
                [(e, e, now, now, now) for _, e in batch],
            )
            connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def _query_plan(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        plan = connection.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM received_messages WHERE message_id = ?", ("x",)
        ).fetchall()
        return " ".join(str(row[-1]) for row in plan)
    finally:
        connection.close()


async def _time_applies(path: Path, sample: int) -> tuple[float, float]:
    pseudonyms = Pseudonymiser(b"b" * 32)
    events = generate_events(sample, seed=int(time.time()))
    async with SqliteStore(path) as store:
        records = [pseudonymise(e, pseudonyms, f"bench-{uuid.uuid4()}") for e in events]
        started = time.perf_counter()
        for record in records:
            await store.apply(record)
        new = (time.perf_counter() - started) / len(records)
        started = time.perf_counter()
        for record in records:
            await store.apply(record)
        duplicate = (time.perf_counter() - started) / len(records)
    return new, duplicate


def measure_dedup_growth(sizes: tuple[int, ...], sample: int = 200) -> list[dict[str, Any]]:
    """Grow one SQLite store through ``sizes`` (rows) and measure at each size."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "dedup.sqlite3"
        asyncio.run(SqliteStore(path).ping())  # creates the schema
        loaded = 0
        for size in sizes:
            _bulk_load(path, size - loaded)
            loaded = size
            new_s, duplicate_s = asyncio.run(_time_applies(path, sample))
            loaded += sample
            results.append(
                {
                    "rows": size,
                    "file_bytes": path.stat().st_size,
                    "bytes_per_row": round(path.stat().st_size / max(size, 1), 1),
                    "apply_new_ms": round(new_s * 1000, 3),
                    "apply_duplicate_ms": round(duplicate_s * 1000, 3),
                    "lookup_plan": _query_plan(path),
                }
            )
    return results
