"""Build ``contracts/data/municipalities.json`` from FHI's csdata location table.

The source is ``data-raw/files/locations/norway_locations.xlsx`` of the R package csdata
(Folkehelseinstituttet, MIT licence; github niphr/csdata, CRAN csdata), which records
Statistics Norway's classification 131 (standard for municipal division) as one row per
municipality number and period, with the number(s) it continued as and the population
weight of each. See ``contracts/data/SOURCE-municipalities.md`` for the version used.

Run on a machine with openpyxl (not a project dependency, the output is committed):

    python infra/refdata/build_municipalities.py norway_locations.xlsx \
        contracts/data/municipalities.json

What it derives, for every number in use in some year since 2017:

- ``from_year`` / ``to_year``: the calendar years it was in use (municipal changes take
  effect on 1 January); ``to_year`` is null while it is in use. csdata lists the 2024
  numbers already under 2023 (FHI's statistics used the 2024 division for 2023), so a
  number that begins in the year its predecessor ends is taken to begin the year after.
- ``today``: the number(s) in use today that cover it, heaviest population weight first;
  for a split (Ålesund 1507 -> 1508 Ålesund and 1580 Haram) the one that kept the name
  comes first, and it is the one the register counts the number under.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import openpyxl

FIRST_YEAR = 2017


def _number(code: object) -> str:
    return str(code).removeprefix("municip_nor")


def build(source: Path) -> dict[str, object]:
    sheet = openpyxl.load_workbook(source, read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    periods: dict[str, dict[str, object]] = {}
    for values in rows[1:]:
        row = dict(zip(header, values, strict=False))
        if not str(row["municip_code"]).startswith("municip_nor"):
            continue
        number = _number(row["municip_code"])
        entry = periods.setdefault(
            number,
            {
                "name": row["municip_name"],
                "from": row["year_start"],
                "to": row["year_end"],
                "next": [],
            },
        )
        entry["from"] = min(entry["from"], row["year_start"])
        entry["to"] = (
            None if None in (entry["to"], row["year_end"]) else max(entry["to"], row["year_end"])
        )
        if row["municip_code_end"] is not None:
            entry["next"].append((_number(row["municip_code_end"]), row["weighting"] or 1.0))
    for entry in periods.values():
        for successor, _weight in entry["next"]:
            later = periods[successor]
            if entry["to"] is not None and later["from"] == entry["to"]:
                later["from"] = entry["to"] + 1

    def today(number: str) -> list[str]:
        entry = periods[number]
        if entry["to"] is None:
            return [number]
        ordered = sorted(
            entry["next"], key=lambda s: (-s[1], periods[s[0]]["name"] != entry["name"], s[0])
        )
        found: list[str] = []
        for successor, _weight in ordered:
            found += [n for n in today(successor) if n not in found]
        return found

    municipalities = [
        {
            "number": number,
            "name": entry["name"],
            "from_year": entry["from"],
            "to_year": entry["to"],
            "today": today(number),
        }
        for number, entry in sorted(periods.items())
        if entry["to"] is None or entry["to"] >= FIRST_YEAR
    ]
    return {
        "source": "Statistics Norway (SSB) classification 131, as recorded in FHI's csdata "
        "(norway_locations.xlsx); see SOURCE-municipalities.md",
        "first_year": FIRST_YEAR,
        "municipalities": municipalities,
    }


if __name__ == "__main__":
    document = build(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    print(f"{len(document['municipalities'])} numbers -> {sys.argv[2]}")
