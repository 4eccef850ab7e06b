"""The one shape every report figure has: a table of rows with typed columns.

Quality and guideline modules build :class:`Table` s from the store; suppression turns
them into :class:`PublishedTable` s (the cells a reader may see); rendering writes those
as HTML, CSV and JSON. A table also states which of its count cells add up to a shown
total (``groups``), which implied differences it reveals (``complements``), which shares
it derives (``shares``) and which statistics rest on how many observations
(``statistic_bases``): that is what small-number suppression needs to know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum, unique
from typing import Any

__all__ = ["Column", "ColumnKind", "PublishedTable", "Share", "Table"]


@unique
class ColumnKind(StrEnum):
    #: Identifies the row (municipality, year, day, code ...); never suppressed.
    DIMENSION = "dimension"
    #: A count of persons, consultations, stays or messages; suppressed when small.
    COUNT = "count"
    #: A share in [0, 1] derived from two counts (see :class:`Share`).
    SHARE = "share"
    #: A statistic over observations (median, p90); hidden when they are few.
    STATISTIC = "statistic"
    #: Free information (a flag's kind, a unit's note); never suppressed.
    TEXT = "text"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: ColumnKind = ColumnKind.COUNT


@dataclass(frozen=True)
class Share:
    """``column`` = ``numerator`` / ``denominator``, computed after suppression."""

    column: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class Table:
    """Raw figures, before suppression. ``rows`` map column keys to values."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]
    description: str = ""
    #: Count columns of one row that add up to a total the reader sees or can infer.
    groups: tuple[tuple[str, ...], ...] = ()
    #: (total, part) pairs: ``total - part`` is an implied cell that must not be small.
    complements: tuple[tuple[str, str], ...] = ()
    shares: tuple[Share, ...] = ()
    #: (statistic column, count column): the statistic is hidden when the count is small.
    statistic_bases: tuple[tuple[str, str], ...] = ()
    #: Sets of row indices whose count cells, column by column, add up to another row the
    #: reader sees (the municipalities of a county, the counties of the country).
    row_groups: tuple[tuple[int, ...], ...] = ()
    #: False for data-quality flag lists: they describe messages, not health statistics.
    suppress: bool = True

    def column(self, key: str) -> Column:
        for column in self.columns:
            if column.key == key:
                return column
        raise KeyError(key)

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.columns if c.kind is ColumnKind.DIMENSION)


@dataclass(frozen=True)
class PublishedTable:
    """A table as published: suppressed cells hold None and are listed in ``suppressed``.

    A None cell that is *not* suppressed means "not applicable" (a share of zero).
    """

    table: Table
    rows: tuple[Mapping[str, Any], ...]
    suppressed: frozenset[tuple[int, str]] = field(default_factory=frozenset)
    threshold: int = 5
    #: The cells hidden because they are small themselves (the rest protect them).
    primary: frozenset[tuple[int, str]] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        return self.table.key

    def is_suppressed(self, row_index: int, column: str) -> bool:
        return (row_index, column) in self.suppressed

    def cell_text(self, row_index: int, column: str) -> str:
        """What a reader sees: ``<5`` for a small cell, ``x`` for one hidden to protect
        it, ``–`` for not applicable."""
        if (row_index, column) in self.primary:
            return f"<{self.threshold}"
        if self.is_suppressed(row_index, column):
            return "x"
        value = self.rows[row_index].get(column)
        return format_value(value, self.table.column(column).kind)

    def column_keys(self) -> Sequence[str]:
        return [c.key for c in self.table.columns]


def format_value(value: Any, kind: ColumnKind) -> str:
    if value is None:
        return "–"
    if kind is ColumnKind.SHARE:
        return f"{float(value) * 100:.1f} %"
    if kind is ColumnKind.STATISTIC and isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
