"""Small-number suppression: primary, implied, complementary and derived cells."""

from __future__ import annotations

import pytest

from kpr.reports.suppression import publish
from kpr.reports.tables import Column, ColumnKind, Share, Table

D = ColumnKind.DIMENSION


def _table(rows: list[dict[str, object]], **kwargs: object) -> Table:
    return Table(
        key="t",
        title="t",
        columns=(
            Column("m", "m", D),
            Column("total", "total"),
            Column("a", "a"),
            Column("b", "b"),
            Column("c", "c"),
            Column("share", "share", ColumnKind.SHARE),
            Column("median", "median", ColumnKind.STATISTIC),
        ),
        rows=tuple(rows),
        **kwargs,  # type: ignore[arg-type]
    )


def test_counts_under_the_threshold_are_hidden_and_zero_is_shown() -> None:
    """1..4 are hidden (null, shown as <5); 0 and 5 are shown."""
    published = publish(_table([{"m": "x", "total": 9, "a": 0, "b": 4, "c": 5}]))
    row = published.rows[0]
    assert row["a"] == 0
    assert row["c"] == 5
    assert row["b"] is None
    assert published.cell_text(0, "b") == "<5"
    assert published.is_suppressed(0, "b")
    assert not published.is_suppressed(0, "a")


def test_one_hidden_cell_in_a_group_hides_the_next_smallest_nonzero() -> None:
    """a=3 alone hidden could be recomputed as total - b - c: the smallest non-zero
    other cell (c=6, not b=0) is hidden too, shown as x."""
    published = publish(
        _table([{"m": "x", "total": 29, "a": 3, "b": 0, "c": 6}], groups=(("a", "b", "c"),))
    )
    hidden = {key for (index, key) in published.suppressed}
    assert hidden == {"a", "c"}
    assert published.rows[0]["b"] == 0
    assert published.cell_text(0, "c") == "x"


def test_two_hidden_cells_need_no_complement() -> None:
    """With two cells hidden already, none more is hidden."""
    published = publish(
        _table([{"m": "x", "total": 25, "a": 3, "b": 2, "c": 20}], groups=(("a", "b", "c"),))
    )
    assert {key for _, key in published.suppressed} == {"a", "b"}
    assert published.rows[0]["c"] == 20


def test_a_small_implied_difference_hides_the_part() -> None:
    """total 40 and part 38 would reveal 2 by subtraction: the part is hidden, and the
    share built on it."""
    published = publish(
        _table(
            [{"m": "x", "total": 40, "a": 38, "b": 0, "c": 0}],
            complements=(("total", "a"),),
            shares=(Share("share", "a", "total"),),
        )
    )
    assert published.rows[0]["a"] is None
    assert published.rows[0]["total"] == 40
    assert published.rows[0]["share"] is None
    assert published.is_suppressed(0, "share")


def test_shares_are_computed_from_visible_counts() -> None:
    """A share with both counts visible is numerator / denominator; zero denominator is
    'not applicable', not suppressed."""
    published = publish(
        _table(
            [
                {"m": "x", "total": 20, "a": 10, "b": 0, "c": 0},
                {"m": "y", "total": 0, "a": 0, "b": 0, "c": 0},
            ],
            shares=(Share("share", "a", "total"),),
        )
    )
    assert published.rows[0]["share"] == pytest.approx(0.5)
    assert published.rows[1]["share"] is None
    assert not published.is_suppressed(1, "share")
    assert published.cell_text(1, "share") == "–"


def test_statistics_on_few_observations_are_hidden() -> None:
    """A median of 3 stays would disclose individual stays: hidden; of 12 it is shown."""
    published = publish(
        _table(
            [
                {"m": "x", "total": 3, "a": 0, "b": 0, "c": 0, "median": 40.0},
                {"m": "y", "total": 12, "a": 0, "b": 0, "c": 0, "median": 41.0},
            ],
            statistic_bases=(("median", "total"),),
        )
    )
    assert published.rows[0]["median"] is None
    assert published.is_suppressed(0, "median")
    assert published.rows[1]["median"] == 41.0


def test_the_threshold_is_configurable_and_flag_tables_are_not_suppressed() -> None:
    """--min-count 2 hides only 1s; a table with suppress=False shows everything."""
    rows = [{"m": "x", "total": 3, "a": 1, "b": 2, "c": 0}]
    assert {key for _, key in publish(_table(rows), threshold=2).suppressed} == {"a"}
    assert publish(_table(rows, suppress=False)).suppressed == frozenset()
    with pytest.raises(ValueError, match="at least 1"):
        publish(_table(rows), threshold=0)
