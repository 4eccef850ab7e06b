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
at most, and updates only the rows whose today-number changed, in one joined UPDATE per
table: two scans per table per new list, none on an open with the same list. Measured on
SQLite: 200,000 events under 835 numbers, all to map, 0.6 s (one UPDATE per number,
a full scan each, took 20 s); an open with the same list, 1-5 ms.
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
    # The new pairs go into a temporary table, and one UPDATE per table joins it: one
    # scan of the table, not one per renumbered municipality (the column as sent has no
    # index, and should not get one for a job that runs once per list).
    cursor.execute(
        "CREATE TEMPORARY TABLE kpr_municipality_map (number TEXT PRIMARY KEY, today TEXT NOT NULL)"
    )
    for table in TABLES_WITH_MUNICIPALITY:
        cursor.execute(
            f"SELECT DISTINCT municipality, municipality_today FROM {table}"  # noqa: S608
            " WHERE municipality IS NOT NULL"
        )
        stale = sorted(
            {
                str(number)
                for number, today in cursor.fetchall()
                if today != municipality_today(str(number))
            }
        )
        if not stale:
            continue
        cursor.execute("DELETE FROM kpr_municipality_map")
        rows = ", ".join(["(?, ?)"] * len(stale))
        cursor.execute(
            dialect.sql(f"INSERT INTO kpr_municipality_map (number, today) VALUES {rows}"),  # noqa: S608
            [value for number in stale for value in (number, municipality_today(number))],
        )
        cursor.execute(
            f"UPDATE {table} SET municipality_today = (SELECT m.today FROM kpr_municipality_map m"  # noqa: S608
            f" WHERE m.number = {table}.municipality)"
            " WHERE municipality IN (SELECT number FROM kpr_municipality_map)"
        )
        changed += max(cursor.rowcount, 0)
    cursor.execute("DROP TABLE kpr_municipality_map")
    cursor.execute(
        dialect.sql(
            "INSERT INTO kpr_reference (name, version) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET version = excluded.version"
        ),
        (MUNICIPALITY_REFERENCE, shipped),
    )
    return changed
