"""The store's copy of the municipality mapping: beside every number as sent, the number
that covers it today, and which shipped list mapped it.

The number as sent is what the EPJ wrote and is never changed (1201 stays 1201); the
today-number (4601) is what the reports group by, in SQL. Both are written at commit
time from :func:`contracts.events.municipalities.municipality_today`. A release that
ships a new list (the next reform) changes :func:`municipality_list_version`; the first
store opened by it maps every stored number again, in the schema transaction, before
anything is written, and records the new version. So a reform needs a new list file and
nothing else: no migration script, no code change.

The re-map reads the distinct (number, today-number) pairs of each table, a few hundred
at most, and updates only the numbers whose today-number changed: one scan per table per
new list, not per open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contracts.events.municipalities import municipality_list_version, municipality_today

if TYPE_CHECKING:
    from consumers.database import Dialect

__all__ = [
    "MUNICIPALITY_REFERENCE",
    "TABLES_WITH_MUNICIPALITY",
    "add_today_columns",
    "remap_municipalities",
    "stored_list_version",
]

#: The ``kpr_reference`` row that records which municipality list mapped the store.
MUNICIPALITY_REFERENCE = "municipalities"

#: Every table that keeps a municipality as sent, and so its today-number beside it.
TABLES_WITH_MUNICIPALITY = ("events", "stays", "consultations", "rejections")


def add_today_columns(cursor: Any) -> None:
    """Give a store of schema version 1 its ``municipality_today`` columns (empty: the
    re-map that follows fills them)."""
    for table in TABLES_WITH_MUNICIPALITY:
        cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")  # noqa: S608 - constant names
        if "municipality_today" not in {column[0] for column in cursor.description}:
            cursor.execute(f"ALTER TABLE {table} ADD COLUMN municipality_today TEXT")


def stored_list_version(cursor: Any, dialect: Dialect) -> str | None:
    """The version of the municipality list that mapped this store (None: never mapped)."""
    cursor.execute(
        dialect.sql("SELECT version FROM kpr_reference WHERE name = ?"), (MUNICIPALITY_REFERENCE,)
    )
    row = cursor.fetchone()
    return None if row is None else str(row[0])


def remap_municipalities(cursor: Any, dialect: Dialect) -> int:
    """Map every stored number to today's under the shipped list, if the store was mapped
    with another one (or none); returns how many rows changed. Runs in the caller's
    transaction, under its schema lock."""
    shipped = municipality_list_version()
    if stored_list_version(cursor, dialect) == shipped:
        return 0
    changed = 0
    for table in TABLES_WITH_MUNICIPALITY:
        cursor.execute(
            f"SELECT DISTINCT municipality, municipality_today FROM {table}"  # noqa: S608
            " WHERE municipality IS NOT NULL"
        )
        stale = {
            number
            for number, today in cursor.fetchall()
            if today != municipality_today(str(number))
        }
        for number in sorted(stale):
            cursor.execute(
                dialect.sql(
                    f"UPDATE {table} SET municipality_today = ? WHERE municipality = ?"  # noqa: S608
                ),
                (municipality_today(number), number),
            )
            changed += max(cursor.rowcount, 0)
    cursor.execute(
        dialect.sql(
            "INSERT INTO kpr_reference (name, version) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET version = excluded.version"
        ),
        (MUNICIPALITY_REFERENCE, shipped),
    )
    return changed
