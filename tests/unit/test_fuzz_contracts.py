"""Hostile JSON at the contract parsers: ``parse_event`` and ``decode_letter``.

Extra fields, wrong types, huge strings and numbers (1e308, a 5,000-digit integer, 1 MB
strings) and deep nesting: each ends in a classified rejection (ContractViolation or
MalformedMessage, both :class:`~contracts.errors.Rejected`), within a time bound and a
tracemalloc peak bound. Valid-event properties live in ``test_events_*.py``.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ContractViolation, MalformedMessage, Rejected
from contracts.events import Environment, parse_event
from contracts.letter import decode_letter
from contracts.synth import generate_events

TIME_BOUND_S = 2.0
MEMORY_BOUND_BYTES = 64 * 1024 * 1024

VALID = generate_events(3, seed=5)
VALID_JSON = [event.model_dump(mode="json") for event in VALID]
MEGABYTE_STRING = "x" * 1_000_000
DEEP = 10_000

HUGE_VALUES: dict[str, Any] = {
    "1e308": 1e308,
    "max 64-bit integer": 2**63 - 1,
    "1 MB string": MEGABYTE_STRING,
    "list of 100,000 items": [0] * 100_000,
    "object with 10,000 keys": {f"k{i}": i for i in range(10_000)},
}

HOSTILE_BYTES: dict[str, bytes] = {
    "5,000-digit integer": b'{"event_type":"kad.admission","revision":' + b"9" * 5000 + b"}",
    "deep arrays": b"[" * DEEP + b"]" * DEEP,
    "deep objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "1e999": b'{"revision":1e999}',
    "NaN": b'{"revision":NaN}',
    "1 MB string value": orjson.dumps({"event_type": MEGABYTE_STRING}),
    "lone surrogate": b'{"event_type":"\\ud800"}',
    "invalid UTF-8": b'{"event_type":"\xff\xfe"}',
    "empty": b"",
    "null": b"null",
}


def rejected_within_bounds(call: Callable[[], object]) -> Rejected:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
    except Rejected as rejection:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        assert elapsed < TIME_BOUND_S, f"took {elapsed:.2f} s"
        assert peak < MEMORY_BOUND_BYTES, f"peak {peak} bytes"
        return rejection
    finally:
        tracemalloc.stop()
    pytest.fail("the input was accepted")


@pytest.mark.parametrize("data", list(HOSTILE_BYTES.values()), ids=list(HOSTILE_BYTES))
def test_hostile_event_bytes_are_a_contract_violation(data: bytes) -> None:
    """Bytes that no JSON parser should accept as an event: ContractViolation, bounded."""
    rejection = rejected_within_bounds(lambda: parse_event(data, environment=Environment.TEST))
    assert isinstance(rejection, ContractViolation)


@pytest.mark.parametrize("data", list(HOSTILE_BYTES.values()), ids=list(HOSTILE_BYTES))
def test_hostile_letter_bytes_are_malformed(data: bytes) -> None:
    """The same bytes as a letter: MalformedMessage, bounded."""
    rejection = rejected_within_bounds(lambda: decode_letter(data))
    assert isinstance(rejection, MalformedMessage)


@pytest.mark.parametrize("value", list(HUGE_VALUES.values()), ids=list(HUGE_VALUES))
@pytest.mark.parametrize("field", ["event_id", "revision", "registered_at", "person"])
def test_a_huge_value_in_a_known_field_is_a_violation_without_echoing_it(
    field: str, value: Any
) -> None:
    """A huge number, string, list or object where a small value belongs: rejected,
    and the description never carries the value (no echo of input into headers)."""
    data = dict(VALID_JSON[0], **{field: value})
    rejection = rejected_within_bounds(
        lambda: parse_event(orjson.dumps(data), environment=Environment.TEST)
    )
    assert isinstance(rejection, ContractViolation)
    assert len(rejection.description) < 2000


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(VALID_JSON) - 1),
    data=st.data(),
    replacement=json_values,
)
def test_a_field_of_the_wrong_type_is_a_violation_or_still_valid(
    which: int, data: st.DataObject, replacement: Any
) -> None:
    """Any top-level field replaced by arbitrary JSON: either still a valid event (the value
    happened to fit) or a ContractViolation. Never another exception."""
    event = dict(VALID_JSON[which])
    field = data.draw(st.sampled_from(sorted(event)))
    event[field] = replacement
    with contextlib.suppress(ContractViolation):
        parsed = parse_event(orjson.dumps(event), environment=Environment.TEST)
        assert parsed.event_type == event["event_type"]


@settings(max_examples=200, deadline=None)
@given(
    which=st.integers(0, len(VALID_JSON) - 1),
    extra=st.dictionaries(st.text(min_size=1, max_size=30), json_values, min_size=1, max_size=3),
)
def test_extra_fields_are_refused(which: int, extra: dict[str, Any]) -> None:
    """Fields the contract does not name are refused (extra="forbid"), whatever their name."""
    event = dict(VALID_JSON[which])
    extra = {key: value for key, value in extra.items() if key not in event}
    if not extra:
        return
    with pytest.raises(ContractViolation):
        parse_event(orjson.dumps({**event, **extra}), environment=Environment.TEST)


@settings(max_examples=200, deadline=None)
@given(raw=json_values)
def test_any_json_as_a_letter_is_a_letter_or_malformed(raw: Any) -> None:
    """Arbitrary JSON as the signed content: MalformedMessage (it is never a letter)."""
    with pytest.raises(MalformedMessage):
        decode_letter(orjson.dumps(raw))
