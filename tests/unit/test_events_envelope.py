"""The envelope metadata, parse / encode, schema versions and error hygiene of every event."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ContractViolation, UnknownSchemaVersion
from contracts.events import (
    SCHEMA_VERSIONS,
    CorrectionKind,
    Environment,
    HstConsultation,
    KadAdmission,
    KadDischarge,
    encode_event,
    parse_event,
)
from contracts.synth import generate_events

TEST = Environment.TEST
_EVENTS = generate_events(300, seed=11, corrections=0.1)


def _first(event_type: str) -> dict[str, Any]:
    event = next(e for e in _EVENTS if e.event_type == event_type and e.revision == 1)
    return event.model_dump(mode="json")


@pytest.fixture(params=["kad.admission", "kad.discharge", "hst.consultation"])
def raw(request: pytest.FixtureRequest) -> dict[str, Any]:
    return copy.deepcopy(_first(request.param))


def _violation(raw: dict[str, Any], environment: Environment = TEST) -> ContractViolation:
    with pytest.raises(ContractViolation) as caught:
        parse_event(raw, environment=environment)
    return caught.value


def test_the_public_api_is_what_the_lead_imports() -> None:
    """The names the pipeline imports exist; the discriminator values are the documented ones."""
    assert frozenset({1}) == SCHEMA_VERSIONS
    assert {
        KadAdmission.model_fields["event_type"].default,
        KadDischarge.model_fields["event_type"].default,
        HstConsultation.model_fields["event_type"].default,
    } == {
        "kad.admission",
        "kad.discharge",
        "hst.consultation",
    }
    assert [kind.register_code for kind in CorrectionKind] == ["N", "M", "T", "C"]


def test_a_valid_event_parses_from_bytes_and_from_a_mapping(raw: dict[str, Any]) -> None:
    """parse_event accepts JSON bytes and an already decoded mapping alike."""
    from_mapping = parse_event(raw, environment=TEST)
    from_bytes = parse_event(orjson.dumps(raw), environment=TEST)
    assert from_mapping == from_bytes
    assert from_mapping.event_type == raw["event_type"]


def test_properties_give_record_key_unit_and_clinical_time(raw: dict[str, Any]) -> None:
    """record_key is the event id of an original; the unit and clinical time come from the body."""
    event = parse_event(raw, environment=TEST)
    assert event.record_key == event.event_id
    assert event.reporting_unit_org_number == raw["unit"]["org_number"]
    time_field = {
        "kad.admission": "admitted_at",
        "kad.discharge": "discharged_at",
        "hst.consultation": "consultation_at",
    }[raw["event_type"]]
    assert event.clinical_time == datetime.fromisoformat(raw[time_field].replace("Z", "+00:00"))
    assert event.clinical_time.tzinfo is not None


def test_encoding_is_deterministic_and_round_trips() -> None:
    """encode then parse gives back an equal event, and encoding twice gives equal bytes."""
    for event in _EVENTS:
        encoded = encode_event(event)
        assert encoded == encode_event(event)
        assert parse_event(encoded, environment=TEST) == event


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), count=st.integers(min_value=1, max_value=8))
def test_round_trip_is_identity_for_any_generated_data(seed: int, count: int) -> None:
    """Property: model -> bytes -> model is the identity for every generated event."""
    for event in generate_events(count, seed=seed, corrections=0.3):
        assert parse_event(encode_event(event), environment=TEST) == event


def test_unknown_schema_version_is_refused_with_its_own_class(raw: dict[str, Any]) -> None:
    """A version this side does not know raises UnknownSchemaVersion naming the field."""
    for version in (2, 0, "1", True, 1.5):
        raw["schema_version"] = version
        with pytest.raises(UnknownSchemaVersion) as caught:
            parse_event(raw, environment=TEST)
        assert caught.value.field == "schema_version"
        assert caught.value.rule == "unknown-schema-version"


def test_a_missing_schema_version_is_a_contract_violation(raw: dict[str, Any]) -> None:
    """Without schema_version the event cannot be dispatched: rule required."""
    del raw["schema_version"]
    error = _violation(raw)
    assert not isinstance(error, UnknownSchemaVersion)
    assert (error.field, error.rule) == ("schema_version", "required")


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_bytes_that_are_not_a_json_object_are_refused(data: bytes) -> None:
    """Non-JSON and non-object payloads are contract violations, not crashes."""
    with pytest.raises(ContractViolation) as caught:
        parse_event(data, environment=TEST)
    assert caught.value.rule in {"not-json", "not-an-object"}


def test_an_unknown_event_type_is_named(raw: dict[str, Any]) -> None:
    """An event_type outside the three is reported on event_type."""
    raw["event_type"] = "kad.transfer"
    error = _violation(raw)
    assert (error.field, error.rule) == ("event_type", "unknown-event-type")


def test_unknown_fields_are_refused(raw: dict[str, Any]) -> None:
    """extra=forbid: data minimisation means nothing outside the contract is carried."""
    raw["person"]["name"] = "Donald Duck"
    error = _violation(raw)
    assert (error.field, error.rule) == ("person.name", "unknown-field")


def test_a_missing_field_is_named(raw: dict[str, Any]) -> None:
    del raw["source_system"]
    error = _violation(raw)
    assert (error.field, error.rule) == ("source_system", "required")


def test_sender_identifiers_are_checked(raw: dict[str, Any]) -> None:
    """Sender org number must pass mod-11 and not be junk; HER-id must be positive."""
    raw["sender_org_number"] = "999999999"
    assert _violation(raw).rule == "org-number-junk"
    raw["sender_org_number"] = "310000000"
    raw["sender_her_id"] = 0
    error = _violation(raw)
    assert (error.field, error.rule) == ("sender_her_id", "her-id-range")


def test_registered_at_needs_an_offset_and_a_plausible_date(raw: dict[str, Any]) -> None:
    """Naive times, times before 2017-01-01 and times in the future are refused."""
    raw["registered_at"] = "2020-01-01T10:00:00"
    assert _violation(raw).rule == "time-without-offset"
    raw["registered_at"] = "2016-12-31T22:59:59+00:00"
    assert _violation(raw).rule == "time-before-2017"
    raw["registered_at"] = "2016-12-31T23:00:00+00:00"  # midnight in Norway: accepted
    parse_event(raw, environment=TEST)
    raw["registered_at"] = "2222-01-01T10:00:00+00:00"
    assert _violation(raw).rule == "time-in-future"


def test_future_is_measured_against_the_given_clock(raw: dict[str, Any]) -> None:
    """now= fixes the clock, so a replay or a test is independent of the wall clock."""
    raw["registered_at"] = "2024-06-01T12:00:00+00:00"
    parse_event(raw, environment=TEST, now=datetime(2024, 6, 1, 12, 5, tzinfo=UTC))
    with pytest.raises(ContractViolation) as caught:
        parse_event(raw, environment=TEST, now=datetime(2024, 6, 1, 11, 0, tzinfo=UTC))
    assert caught.value.rule == "time-in-future"


def test_an_original_has_revision_1_and_no_link(raw: dict[str, Any]) -> None:
    """original: corrects_event_id forbidden, revision exactly 1."""
    raw["corrects_event_id"] = str(uuid4())
    assert _violation(raw).rule == "correction-link-forbidden"
    raw["corrects_event_id"] = None
    raw["revision"] = 2
    assert _violation(raw).rule == "revision-original"
    raw["revision"] = 0
    assert _violation(raw).field == "revision"


@pytest.mark.parametrize("kind", ["replace", "supplement", "cancel"])
def test_a_correction_names_its_original(raw: dict[str, Any], kind: str) -> None:
    """replace / supplement / cancel need corrects_event_id (not their own id) and revision >= 2."""
    original_id = raw["event_id"]
    raw |= {"correction": kind, "revision": 2, "event_id": str(uuid4())}
    error = _violation(raw)
    assert (error.field, error.rule) == ("corrects_event_id", "correction-link-required")
    raw["corrects_event_id"] = raw["event_id"]
    assert _violation(raw).rule == "correction-self-reference"
    raw["corrects_event_id"] = original_id
    raw["revision"] = 1
    assert _violation(raw).rule == "revision-correction"
    raw["revision"] = 3
    event = parse_event(raw, environment=TEST)
    assert event.correction == CorrectionKind(kind)
    assert str(event.record_key) == original_id


def test_a_synthetic_identity_is_refused_in_production(raw: dict[str, Any]) -> None:
    """Synthetic test identities pass only in the test environment; production is the default."""
    with pytest.raises(ContractViolation) as caught:
        parse_event(raw)
    assert (caught.value.field, caught.value.rule) == (
        "person.national_id",
        "synthetic-id-in-production",
    )
    parse_event(raw, environment=Environment.TEST)


def test_error_descriptions_never_contain_the_national_id(raw: dict[str, Any]) -> None:
    """Whatever breaks, the description holds field names and rules, never the person's number."""
    national_id = raw["person"]["national_id"]
    raw["person"]["birth_date"] = "1901-01-01"
    raw["person"]["home_municipality"] = national_id[:4]
    raw["sender_org_number"] = national_id[:9]
    for environment in Environment:
        error = _violation(raw, environment)
        text = f"{error} {error.description} {error.field} {error.rule} {error!r}"
        assert national_id not in text
        assert error.__cause__ is None
        assert error.__suppress_context__


def test_environment_from_env_fails_safe() -> None:
    """Unset or empty means production; only 'test' enables test identities; typos are loud."""
    assert Environment.from_env({}) is Environment.PRODUCTION
    assert Environment.from_env({"KPR_ENVIRONMENT": ""}) is Environment.PRODUCTION
    assert Environment.from_env({"KPR_ENVIRONMENT": " Test "}) is Environment.TEST
    assert Environment.from_env({"KPR_ENVIRONMENT": "production"}) is Environment.PRODUCTION
    with pytest.raises(ValueError, match="KPR_ENVIRONMENT"):
        Environment.from_env({"KPR_ENVIRONMENT": "tset"})


def test_models_are_frozen(raw: dict[str, Any]) -> None:
    """Events are immutable values."""
    event = parse_event(raw, environment=TEST)
    with pytest.raises(ValueError, match="frozen"):
        event.revision = 5  # type: ignore[misc]


def test_the_national_id_lives_only_in_person(raw: dict[str, Any]) -> None:
    """Pseudonymisation replaces one field: no other value in the event holds the number."""
    event = parse_event(raw, environment=TEST)
    dumped = event.model_dump(mode="json")
    national_id = dumped["person"].pop("national_id")
    assert national_id not in orjson.dumps(dumped).decode()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("registered_at", "x"),
        ("registered_at", 1_600_000_000),
        ("registered_at", None),
        ("event_id", "not-a-uuid"),
        ("event_id", 5),
        ("revision", "1"),
        ("revision", True),
        ("revision", 1.5),
        ("person", "x"),
        ("person.birth_date", 20200101),
        ("person.birth_date", "2020-01-01T10:00:00Z"),
        ("person.sex", 1),
        ("sender_her_id", "90001"),
        ("source_system", 5),
        ("source_system", ""),
        ("source_system", "x" * 101),
    ],
)
def test_wrong_json_types_give_a_documented_rule(
    raw: dict[str, Any], path: str, value: object
) -> None:
    """Wrong types are refused (no numbers as times, no strings or booleans as integers),
    each with a rule listed on the reference page."""
    from contracts.events.reference import RULES

    target = raw
    *parents, name = path.split(".")
    for parent in parents:
        target = target[parent]
    target[name] = value
    error = _violation(raw)
    assert error.field == path
    assert error.rule in RULES


def test_the_package_exports_exactly_its_public_names() -> None:
    """Everything in __all__ exists, and the pipeline's names are among them."""
    import contracts.events as events

    for name in events.__all__:
        assert hasattr(events, name), name
    assert {
        "Event", "KadAdmission", "KadDischarge", "HstConsultation", "Environment",
        "CorrectionKind", "parse_event", "encode_event", "SCHEMA_VERSIONS",
    } <= set(events.__all__)  # fmt: skip


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_mutation_gives_a_valid_event_or_a_contract_violation(data: st.DataObject) -> None:
    """Fuzz: replacing or deleting any field never crashes the parser or leaks the national id."""
    original = _first(
        data.draw(st.sampled_from(["kad.admission", "kad.discharge", "hst.consultation"]))
    )
    raw = copy.deepcopy(original)
    path = data.draw(st.sampled_from(_paths(raw)))
    parent: Any = raw
    for part in path[:-1]:
        parent = parent[part]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_JSON_VALUES)
    try:
        parse_event(raw, environment=TEST)
    except ContractViolation as error:
        leaked = original["person"]["national_id"] in str(error)
        rule = error.rule
    else:
        leaked, rule = False, "accepted"
    assert not leaked
    assert rule


def test_a_newer_years_code_lists_can_be_passed_to_parse_event(tmp_path: Any) -> None:
    """parse_event(code_lists=...) checks against the given lists instead of the shipped ones."""
    from contracts.events import load_code_lists

    raw = _first("kad.admission")
    raw["admission_diagnoses"] = [{"system": "ICD-10", "code": "U99.9"}]
    with pytest.raises(ContractViolation):
        parse_event(raw, environment=TEST)
    (tmp_path / "ICPC2.json").write_text('[{"code": "R81", "text": "x"}]', "utf-8")
    (tmp_path / "ICD10.json").write_text('[{"code": "U999", "text": "y"}]', "utf-8")
    event = parse_event(raw, environment=TEST, code_lists=load_code_lists(tmp_path))
    assert isinstance(event, KadAdmission)
    assert event.admission_diagnoses[0].code == "U999"


@pytest.mark.parametrize("key", ["15105560017", "id 151055 60017", "x" * 80, "ø"])
def test_unknown_keys_are_not_echoed_into_the_field_path(raw: dict[str, Any], key: str) -> None:
    """An unknown key is input too: an odd one is reported as <unnamed>, never verbatim."""
    raw[key] = 1
    error = _violation(raw)
    assert error.rule == "unknown-field"
    assert error.field == "<unnamed>"
    assert key not in str(error)


def test_production_accepts_an_ordinary_national_id(raw: dict[str, Any]) -> None:
    """Production refuses only synthetic ids: an ordinary-form number (born 1855) passes."""
    raw["person"] |= {"national_id": "15105560017", "birth_date": "1855-10-15"}
    assert parse_event(raw).person.national_id == "15105560017"


def test_the_birth_date_must_agree_with_the_national_id(raw: dict[str, Any]) -> None:
    raw["person"] |= {"national_id": "15105560017", "birth_date": "1855-10-16"}
    error = _violation(raw, Environment.PRODUCTION)
    assert (error.field, error.rule) == ("person.birth_date", "birth-date-mismatch")
