"""A code that changes on the wire: the old value is read as the new one for events
received before the stated cut-off, and refused with the change's own rule from then on
(sex: the first contract's slugs -> Volven 3101, refused from 2027-07-01 Norwegian time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from contracts.errors import ContractViolation
from contracts.events import Environment, Sex, encode_event, parse_event
from contracts.events.migrations import MIGRATIONS, SEX_TO_VOLVEN_3101
from contracts.synth import generate_lines

CUT_OFF = SEX_TO_VOLVEN_3101.retired_from
JUST_BEFORE = CUT_OFF - timedelta(seconds=1)


def _event(sex: str) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(generate_lines(1, seed=7)[0])
    event["person"]["sex"] = sex
    return event


def _parse(sex: str, received: datetime) -> Any:
    return parse_event(_event(sex), environment=Environment.TEST, now=received)


def test_the_cut_off_is_midnight_norwegian_time() -> None:
    assert datetime(2027, 6, 30, 22, tzinfo=UTC) == CUT_OFF


@pytest.mark.parametrize(
    ("old", "new"), [("female", Sex.FEMALE), ("male", Sex.MALE), ("unknown", Sex.UNKNOWN)]
)
def test_an_old_value_received_before_the_cut_off_is_read_and_stored_as_the_new_one(
    old: str, new: Sex
) -> None:
    event = _parse(old, JUST_BEFORE)
    assert event.person.sex is new
    assert orjson.loads(encode_event(event))["person"]["sex"] == new.value


@pytest.mark.parametrize("old", ["female", "male", "unknown"])
@pytest.mark.parametrize("received", [CUT_OFF, CUT_OFF + timedelta(days=400)])
def test_an_old_value_received_from_the_cut_off_on_is_refused_naming_the_rule(
    old: str, received: datetime
) -> None:
    with pytest.raises(ContractViolation) as refused:
        _parse(old, received)
    assert refused.value.rule == "sex-code-retired"
    assert refused.value.field == "person.sex"
    replacement = SEX_TO_VOLVEN_3101.renamed[old].value
    assert f"send the Sex code '{replacement}' instead" in str(refused.value)
    assert "2027-07-01" in str(refused.value)


@pytest.mark.parametrize("received", [JUST_BEFORE, CUT_OFF])
@pytest.mark.parametrize("code", [member.value for member in Sex])
def test_the_national_codes_are_accepted_on_both_sides_of_the_cut_off(
    code: str, received: datetime
) -> None:
    assert _parse(code, received).person.sex.value == code


@pytest.mark.parametrize("received", [JUST_BEFORE, CUT_OFF])
def test_a_value_that_was_never_a_code_is_not_in_the_code_list(received: datetime) -> None:
    with pytest.raises(ContractViolation) as refused:
        _parse("f", received)
    assert refused.value.rule == "not-in-code-list"


def test_the_clinical_date_does_not_decide_the_receipt_does() -> None:
    """A back-fill of an old event, received after the cut-off, must use the new codes."""
    event = _event("female")
    assert event["registered_at"] < "2027"
    with pytest.raises(ContractViolation, match="sex-code-retired"):
        parse_event(event, environment=Environment.TEST, now=CUT_OFF + timedelta(hours=1))


def test_every_migration_maps_to_members_of_its_own_list_and_retires_values_it_no_longer_has() -> (
    None
):
    for migration in MIGRATIONS:
        current = {member.value for member in migration.code_list}
        assert all(type(new) is migration.code_list for new in migration.renamed.values())
        assert not set(migration.renamed) & current
        assert migration.retired_from.tzinfo is not None
