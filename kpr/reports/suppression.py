"""Small-number suppression: what a published table may show.

Rules, applied to every table whose ``suppress`` is true (threshold ``n``, default 5):

1. **Primary.** A count with ``1 <= value < n`` is hidden (shown ``<n``, null in JSON).
   Zero is shown: it identifies nobody, and hiding it would hide "nothing was reported".
2. **Implied cells.** For each ``(total, part)`` complement, if ``total - part`` lies in
   ``1 .. n-1`` the part is hidden too, or the reader would subtract.
3. **Complementary, within a row.** For each group of cells that add up to a total the
   reader sees, if exactly one cell of the group is hidden, the smallest other visible
   cell is hidden as well (a non-zero one if there is one), so the hidden one cannot be
   recomputed.
4. **Complementary, across rows.** The same for each set of rows whose cells add up to
   another row the reader sees (``row_groups``: the municipalities of a county and
   period): if exactly one cell of a column is hidden among them, the smallest other
   visible one is hidden too, so county minus the others does not give it back.
   Rules 2-4 repeat, over the whole table, until nothing changes.
5. **Derived figures.** A share is shown only when its numerator and denominator both are;
   a statistic (median, p90) only when it rests on at least ``n`` observations.

Secondary hides (rules 2-5) are shown as ``x`` rather than ``<n``: the hidden value may
be large. Neither kind is ever distinguishable in JSON, where both are null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kpr.reports.tables import ColumnKind, PublishedTable, Table

__all__ = ["DEFAULT_THRESHOLD", "publish", "small"]

DEFAULT_THRESHOLD = 5


def small(value: Any, threshold: int) -> bool:
    """True for a count that identifies too few: ``1 <= value < threshold``."""
    return isinstance(value, int) and 1 <= value < threshold


def _share(row: Mapping[str, Any], numerator: str, denominator: str) -> float | None:
    top, bottom = row.get(numerator), row.get(denominator)
    if top is None or not bottom:
        return None
    return round(float(top) / float(bottom), 4)


def publish(table: Table, threshold: int = DEFAULT_THRESHOLD) -> PublishedTable:
    """Apply the rules above; raises ``ValueError`` for a threshold below 1."""
    if threshold < 1:
        raise ValueError("the suppression threshold must be at least 1")
    if not table.suppress:
        rows = tuple(_with_shares(table, dict(row)) for row in table.rows)
        return PublishedTable(table, rows, frozenset(), threshold)

    counts = [c.key for c in table.columns if c.kind is ColumnKind.COUNT]
    hidden: set[tuple[int, str]] = set()
    primary: set[tuple[int, str]] = set()
    for index, row in enumerate(table.rows):
        for key in counts:
            if small(row.get(key), threshold):
                primary.add((index, key))
    hidden |= primary
    changed = True
    while changed:
        changed = False
        for index, row in enumerate(table.rows):
            changed = _complements(table, index, row, hidden, threshold) or changed
            changed = _groups(table, index, row, hidden) or changed
        changed = _row_groups(table, counts, hidden) or changed

    published: list[dict[str, Any]] = []
    for index, row in enumerate(table.rows):
        visible = {key: (None if (index, key) in hidden else value) for key, value in row.items()}
        for share in table.shares:
            if (index, share.numerator) in hidden or (index, share.denominator) in hidden:
                hidden.add((index, share.column))
                visible[share.column] = None
            else:
                visible[share.column] = _share(row, share.numerator, share.denominator)
        for statistic, basis in table.statistic_bases:
            basis_value = row.get(basis)
            if small(basis_value, threshold) or (index, basis) in hidden:
                if visible.get(statistic) is not None:
                    hidden.add((index, statistic))
                visible[statistic] = None
        published.append(visible)
    return PublishedTable(
        table,
        tuple(published),
        frozenset(hidden),
        threshold,
        primary=frozenset(primary),
    )


def _with_shares(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    for share in table.shares:
        row[share.column] = _share(row, share.numerator, share.denominator)
    return row


def _complements(
    table: Table, index: int, row: Mapping[str, Any], hidden: set[tuple[int, str]], threshold: int
) -> bool:
    changed = False
    for total, part in table.complements:
        if (index, total) in hidden or (index, part) in hidden:
            continue
        total_value, part_value = row.get(total), row.get(part)
        implied = (
            total_value - part_value
            if isinstance(total_value, int) and isinstance(part_value, int)
            else None
        )
        if small(implied, threshold):
            hidden.add((index, part))
            changed = True
    return changed


def _row_groups(table: Table, counts: list[str], hidden: set[tuple[int, str]]) -> bool:
    changed = False
    for rows in table.row_groups:
        for key in counts:
            if sum((index, key) in hidden for index in rows) != 1:
                continue
            candidates = [
                (value == 0, value, index)
                for index in rows
                if (index, key) not in hidden
                and isinstance(value := table.rows[index].get(key), int)
            ]
            if candidates:
                _zero, _value, index = min(candidates)
                hidden.add((index, key))
                changed = True
    return changed


def _groups(table: Table, index: int, row: Mapping[str, Any], hidden: set[tuple[int, str]]) -> bool:
    changed = False
    for group in table.groups:
        hidden_cells = [key for key in group if (index, key) in hidden]
        if len(hidden_cells) != 1:
            continue
        candidates = [
            (row.get(key) == 0, row.get(key) or 0, key)
            for key in group
            if (index, key) not in hidden and isinstance(row.get(key), int)
        ]
        if not candidates:
            continue
        # Prefer the smallest non-zero cell: hiding a zero protects less.
        _zero, _value, key = min(candidates)
        hidden.add((index, key))
        changed = True
    return changed
