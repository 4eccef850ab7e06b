"""Deterministic synthetic events for the demo, the tests and the benchmarks (``kpr synth``).

Everything comes from one ``random.Random(seed)``: the same arguments give the same
events, byte for byte. Times lie between 2017-01-01 and ``until`` (a fixed default, so
output does not drift with the clock). Identities are synthetic only (Tenor form,
month + 80), so no generated record can be a real person; the events validate in the
``test`` environment and are refused in production.

What is generated:

- KAD/ØHD stays (admission, then discharge unless the stay is still open at ``until``)
  with plausible ICPC-2 or ICD-10 diagnoses, referral and discharge categories, and
  inter-municipal units;
- HST histories: children following the child-health-station programme with realistic
  gaps (missed, cancelled, skipped consultations), school consultations, antenatal
  and postnatal care, youth-clinic visits;
- on request, a share of corrections (replace, supplement, cancel of an earlier event),
  exact duplicates (the same event sent twice) and, only in :func:`generate_lines`,
  defective records that break one named rule each.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final

import orjson

from contracts.events import (
    Environment,
    HstConsultation,
    KadAdmission,
    KadDischarge,
    encode_event,
    parse_event,
)
from contracts.synth._stories import SynthOptions, raw_events
from contracts.synth._tables import (
    DEFAULT_SENDER_HER_ID,
    DEFAULT_SENDER_ORG_NUMBER,
    DEFAULT_UNIT_ORG_NUMBERS,
    DEFAULT_UNTIL,
    EVENT_KINDS,
)

__all__ = [
    "DEFAULT_SENDER_HER_ID",
    "DEFAULT_SENDER_ORG_NUMBER",
    "DEFAULT_UNIT_ORG_NUMBERS",
    "DEFAULT_UNTIL",
    "EVENT_KINDS",
    "SynthOptions",
    "dev_authorisation",
    "generate_events",
    "generate_lines",
]

Event = KadAdmission | KadDischarge | HstConsultation


def dev_authorisation(
    sender_org_number: str = DEFAULT_SENDER_ORG_NUMBER,
    units: Iterable[str] = DEFAULT_UNIT_ORG_NUMBERS,
    *,
    sender_her_id: int = DEFAULT_SENDER_HER_ID,
) -> bytes:
    """The sender-authorisation JSON that lets the development sender report for ``units``
    (by default every unit the generator uses) under its HER-id: what ``kpr pki dev``,
    the demo and the tests write (the file format of ``KPR_AUTHORISATION_FILE``)."""
    return orjson.dumps(
        {
            "grants": {sender_org_number: sorted({sender_org_number, *units})},
            "her_ids": {str(sender_her_id): sender_org_number},
        },
        option=orjson.OPT_INDENT_2,
    )


def generate_events(
    count: int,
    *,
    seed: int,
    kinds: Iterable[str] = EVENT_KINDS,
    corrections: float = 0.0,
    duplicates: float = 0.0,
    unit_org_numbers: Sequence[str] = DEFAULT_UNIT_ORG_NUMBERS,
    sender_her_id: int = DEFAULT_SENDER_HER_ID,
    sender_org_number: str = DEFAULT_SENDER_ORG_NUMBER,
    until: datetime = DEFAULT_UNTIL,
) -> list[Event]:
    """``count`` valid events, the same ones for the same arguments.

    Every event is validated with :func:`parse_event` in the test environment, so a
    generator bug surfaces here as :class:`ContractViolation` rather than downstream.
    Raises ``ValueError`` for bad options (count < 0, shares outside [0, 1], unknown kinds).
    """
    if count < 0:
        raise ValueError("count must not be negative")
    options = SynthOptions(
        kinds=frozenset(kinds),
        corrections=corrections,
        duplicates=duplicates,
        unit_org_numbers=tuple(unit_org_numbers),
        sender_her_id=sender_her_id,
        sender_org_number=sender_org_number,
        until=until,
    )
    return [
        parse_event(raw, environment=Environment.TEST) for raw in raw_events(count, seed, options)
    ]


# Each defect breaks exactly one named rule; the name is what a test or a reader checks.
_DEFECTS: Final[tuple[tuple[str, Callable[[dict[str, Any]], None]], ...]] = (
    (
        "national-id-checksum",
        lambda e: e["person"].update(national_id=_break_checksum(e["person"]["national_id"])),
    ),
    ("municipality-unknown", lambda e: e["person"].update(home_municipality="0000")),
    ("org-number-junk", lambda e: e["unit"].update(org_number="999999999")),
    ("org-number-checksum", lambda e: e.update(sender_org_number="310000001")),
    ("time-before-2017", lambda e: e.update(registered_at="2016-05-01T10:00:00+00:00")),
    ("time-in-future", lambda e: e.update(registered_at="2090-01-01T10:00:00+00:00")),
    ("unknown-schema-version", lambda e: e.update(schema_version=99)),
    ("required", lambda e: e.pop("source_system")),
    (
        "correction-link-required",
        lambda e: e.update(correction="replace", revision=2, corrects_event_id=None),
    ),
)


def _break_checksum(national_id: str) -> str:
    last = (int(national_id[10]) + 1) % 10
    return national_id[:10] + str(last)


def generate_lines(
    count: int,
    *,
    seed: int,
    defects: float = 0.0,
    **options: Any,
) -> list[bytes]:
    """``count`` events as JSON lines (no newline), a share ``defects`` of them broken.

    The valid lines are :func:`encode_event` output; each defective line is a valid event
    with one rule broken (see ``_DEFECTS``). Same arguments, same bytes.
    """
    if not 0.0 <= defects <= 1.0:
        raise ValueError("the defect share must lie between 0 and 1")
    events = generate_events(count, seed=seed, **options)
    defect_rng = random.Random(f"defects:{seed}")  # noqa: S311 (reproducible, not secret)
    lines = []
    for event in events:
        if defects and defect_rng.random() < defects:
            raw = orjson.loads(encode_event(event))
            _name, breaker = defect_rng.choice(_DEFECTS)
            breaker(raw)
            lines.append(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))
        else:
            lines.append(encode_event(event))
    return lines
