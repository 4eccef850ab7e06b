"""Municipality numbers through time: which were in use in which year, and which
number covers each one today (package data ``contracts/data/municipalities.json``,
derived from Statistics Norway's classification 131; see
``contracts/data/SOURCE-municipalities.md``).

Municipal changes take effect on 1 January, so a number is in use for whole calendar
years. The 2020 reform merged and renumbered most municipalities (Bergen 1201 -> 4601),
the 2024 one split counties and a few municipalities (Halden 3001 -> 3101; Ålesund 1507
-> 1508 Ålesund and 1580 Haram). An event is judged against the numbers in use on its own
date, and the reports count every number under the one that covers it today.

Pure functions over the package data, read once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache

from contracts.events._data import read_package_data

__all__ = [
    "FIRST_YEAR",
    "Municipality",
    "municipalities",
    "municipality_list_version",
    "municipality_today",
    "number_in_use",
    "numbers_covered_by",
]

#: The first year the list covers (the register's back-fill starts on 2017-01-01).
FIRST_YEAR = 2017


@dataclass(frozen=True)
class Municipality:
    """One municipality number: its name, the years it was in use (``to_year`` ``None``
    while it is), and the numbers in use today that cover it (the first one counts)."""

    number: str
    name: str
    from_year: int
    to_year: int | None
    today: tuple[str, ...]

    def in_use(self, year: int) -> bool:
        return self.from_year <= year and (self.to_year is None or year <= self.to_year)

    @property
    def current(self) -> bool:
        return self.to_year is None


@cache
def municipalities() -> Mapping[str, Municipality]:
    """Every number in use in some year since :data:`FIRST_YEAR`, by number."""
    document = json.loads(read_package_data("municipalities.json"))
    return {
        row["number"]: Municipality(
            row["number"], row["name"], row["from_year"], row["to_year"], tuple(row["today"])
        )
        for row in document["municipalities"]
    }


@cache
def municipality_list_version() -> str:
    """Which list this is: a digest of the shipped file. A store keeps the today-number
    of every row beside the number as sent, and the version of the list that mapped
    them; when a release ships a new list (a 2028 reform: only the file changes), the
    version differs and the store maps its rows again on open."""
    return hashlib.sha256(read_package_data("municipalities.json").encode()).hexdigest()[:16]


def municipality_today(number: str) -> str:
    """The number in use today that covers ``number`` (itself if current or unknown)."""
    known = municipalities().get(number)
    return known.today[0] if known is not None and known.today else number


@cache
def _covered_by() -> Mapping[str, frozenset[str]]:
    covered: dict[str, set[str]] = {}
    for number in municipalities():
        covered.setdefault(municipality_today(number), set()).add(number)
    return {today: frozenset(numbers) for today, numbers in covered.items()}


def numbers_covered_by(today: str) -> frozenset[str]:
    """Every number that counts under today's number ``today``, itself included."""
    return _covered_by().get(today, frozenset({today}))


def number_in_use(today: str, on: date) -> str:
    """The number in use on ``on`` for the area of today's number ``today``: the one
    that counts under it, preferring one of the same name (Øygarden 1259, not Fjell 1246,
    for Øygarden 4626 in 2019). ``today`` itself if nothing else was in use then."""
    return _number_in_use(today, on.year)


@cache
def _number_in_use(today: str, year: int) -> str:
    current = municipalities().get(today)
    candidates = sorted(
        (m for m in municipalities().values() if today in m.today and m.in_use(year)),
        key=lambda m: (m.today[0] != today, current is None or m.name != current.name, m.number),
    )
    return candidates[0].number if candidates else today
