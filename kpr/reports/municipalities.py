"""Today's municipality for a number as sent: the one place the reports map numbers.

Municipality numbers changed with the 2020 and 2024 reforms (merges, splits, new county
numbers), so a trend since 2017 compares like with like only when every number is
mapped to the municipality that covers it today. Every report figure takes its
municipality through :func:`municipality_today`, called once per row when the store is
read (:mod:`kpr.reports.queries`), so the mapping is swapped in here and nowhere else.

Until the reference data's change mapping is wired in (the reference-data issue provides
a pure function in :mod:`contracts.events.reference`), a number maps to itself.
"""

from __future__ import annotations

__all__ = ["municipality_today"]


def municipality_today(number: str) -> str:
    """The four-digit number of the municipality that covers ``number`` today."""
    return number
