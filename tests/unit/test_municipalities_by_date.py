"""An event is judged against the municipality numbers in use on its own date.

The back-fill reaches back to 2017, across the 2020 and 2024 reforms: an event of 2018
names Bergen 1201, one of 2021 Ålesund 1507, one of 2025 Haram 1580. The synthetic
generator writes the numbers of each event's year, as an EPJ does; the same events with
numbers that were not in use on their date are refused with the rule named.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.errors import ContractViolation
from contracts.events import Environment, parse_event
from contracts.events.municipalities import municipalities, municipality_today
from contracts.synth import (
    DEFAULT_SENDER_HER_ID,
    DEFAULT_SENDER_ORG_NUMBER,
    DEFAULT_UNIT_ORG_NUMBERS,
    generate_events,
)
from contracts.synth._stories import SynthOptions, raw_events
from contracts.synth._tables import DEFAULT_UNTIL, EVENT_KINDS

BACKFILL_UNTIL = datetime(2019, 12, 31, 12, 0, tzinfo=UTC)


def _raw_backfill(count: int, seed: int) -> list[dict[str, Any]]:
    options = SynthOptions(
        kinds=frozenset(EVENT_KINDS),
        corrections=0.0,
        duplicates=0.0,
        unit_org_numbers=tuple(DEFAULT_UNIT_ORG_NUMBERS),
        sender_her_id=DEFAULT_SENDER_HER_ID,
        sender_org_number=DEFAULT_SENDER_ORG_NUMBER,
        until=BACKFILL_UNTIL,
    )
    return list(raw_events(count, seed, options))


def _numbers(raw: dict[str, Any]) -> list[str]:
    numbers = [raw["person"]["home_municipality"]]
    numbers += [raw["service_municipality"]] if "service_municipality" in raw else []
    return numbers + list(raw.get("service_municipalities", []))


def test_a_backfill_of_2017_to_2019_with_the_numbers_of_its_years_has_no_violations() -> None:
    raws = _raw_backfill(600, seed=2017)
    events = [parse_event(raw, environment=Environment.TEST) for raw in raws]  # raises if not
    assert len(events) == len(raws)
    used = {n for raw in raws for n in _numbers(raw)}
    # the old numbers are there, and none of the numbers first used in 2020 or later
    assert {"1201", "1601"} & used
    assert all(municipalities()[n].from_year < 2020 for n in used), sorted(used)


def test_the_same_events_with_numbers_not_yet_in_use_are_refused_with_the_rule_named() -> None:
    refused = 0
    for raw in _raw_backfill(300, seed=2018):
        today = {n: municipality_today(n) for n in _numbers(raw)}
        if all(n == t for n, t in today.items()):
            continue  # an unchanged municipality (Bodø, Oslo): nothing to break
        raw["person"]["home_municipality"] = today[raw["person"]["home_municipality"]]
        if "service_municipality" in raw:
            raw["service_municipality"] = today[raw["service_municipality"]]
        if "service_municipalities" in raw:
            raw["service_municipalities"] = [today[n] for n in raw["service_municipalities"]]
        with pytest.raises(ContractViolation) as caught:
            parse_event(raw, environment=Environment.TEST)
        assert caught.value.rule == "municipality-not-in-use"
        refused += 1
    assert refused > 100


def test_a_number_is_judged_by_the_norwegian_new_year() -> None:
    """Changes take effect at midnight Norwegian time: 2019-12-31 23:30 UTC is already
    2020 in Norway, so the 2020 number is the one in use."""
    event = generate_events(1, seed=5, kinds=["hst"], until=DEFAULT_UNTIL)[0]
    raw = event.model_dump(mode="json")
    raw |= {
        "consultation_at": "2019-12-31T23:30:00+00:00",
        "registered_at": "2020-01-02T10:00:00+00:00",
        "service_municipality": "4601",
    }
    raw["person"] |= {"home_municipality": "4601"}
    parse_event(raw, environment=Environment.TEST)
    raw["consultation_at"] = (datetime(2019, 12, 31, 22, 30, tzinfo=UTC)).isoformat()
    with pytest.raises(ContractViolation) as caught:
        parse_event(raw, environment=Environment.TEST)
    assert caught.value.rule == "municipality-not-in-use"
