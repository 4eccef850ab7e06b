"""KAD/ØHD admission and discharge: the nine items of seed 004 and their rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from contracts.errors import ContractViolation
from contracts.events import (
    CodeSystem,
    CounterpartCategory,
    Environment,
    KadAdmission,
    KadDischarge,
    parse_event,
)
from contracts.synth import generate_events

TEST = Environment.TEST
_EVENTS = generate_events(200, seed=5, kinds=["kad"])


def _template(event_type: str) -> dict[str, Any]:
    event = next(e for e in _EVENTS if e.event_type == event_type)
    return copy.deepcopy(event.model_dump(mode="json"))


@pytest.fixture
def admission() -> dict[str, Any]:
    return _template("kad.admission")


@pytest.fixture
def discharge() -> dict[str, Any]:
    return _template("kad.discharge")


def _violation(raw: dict[str, Any]) -> ContractViolation:
    with pytest.raises(ContractViolation) as caught:
        parse_event(raw, environment=TEST)
    return caught.value


def test_admission_and_discharge_of_one_stay_share_the_stay_id() -> None:
    """The generator's stays join on stay_id, admission before discharge."""
    admissions = {e.stay_id: e for e in _EVENTS if isinstance(e, KadAdmission)}
    discharges = [e for e in _EVENTS if isinstance(e, KadDischarge)]
    assert discharges
    for discharge in discharges:
        if discharge.stay_id in admissions:
            admission = admissions[discharge.stay_id]
            assert admission.admitted_at == discharge.admitted_at
            assert admission.clinical_time <= discharge.clinical_time
            assert admission.person == discharge.person


def test_all_nine_items_are_fields(admission: dict[str, Any], discharge: dict[str, Any]) -> None:
    """Unit, municipalities, patient, times, both diagnosis lists, referral, discharged-to."""
    for name in ("unit", "service_municipalities", "person", "admitted_at", "stay_id"):
        assert name in KadAdmission.model_fields
        assert name in KadDischarge.model_fields
    assert {"admission_diagnoses", "referred_by"} <= set(KadAdmission.model_fields)
    assert {"discharged_at", "discharge_diagnoses", "discharged_to"} <= set(
        KadDischarge.model_fields
    )
    assert {"org_number", "name", "address"} <= set(admission["unit"])


def test_discharge_before_admission_is_refused(discharge: dict[str, Any]) -> None:
    discharge["discharged_at"] = "2025-03-01T10:00:00+01:00"
    discharge["admitted_at"] = "2025-03-01T10:00:01+01:00"
    error = _violation(discharge)
    assert (error.field, error.rule) == ("discharged_at", "discharge-before-admission")
    discharge["discharged_at"] = discharge["admitted_at"]
    event = parse_event(discharge, environment=TEST)
    assert isinstance(event, KadDischarge)
    assert event.discharged_at == event.admitted_at


def test_an_admission_before_birth_is_refused(admission: dict[str, Any]) -> None:
    admission["admitted_at"] = "2017-01-02T10:00:00+01:00"
    admission["person"] = next(
        e.person
        for e in generate_events(400, seed=3, kinds=["hst"])
        if e.person.birth_date.year >= 2018
    ).model_dump(mode="json")
    error = _violation(admission)
    assert (error.field, error.rule) == ("admitted_at", "before-birth")


@pytest.mark.parametrize("field", ["admitted_at"])
def test_admission_time_must_lie_in_the_register_period(
    admission: dict[str, Any], field: str
) -> None:
    """Dates like 1986 or 3015 (seen in the register) are refused."""
    admission[field] = "1986-05-01T10:00:00+02:00"
    assert (_violation(admission).field, _violation(admission).rule) == (field, "time-before-2017")
    admission[field] = "3015-05-01T10:00:00+02:00"
    assert _violation(admission).rule == "time-in-future"


def test_inter_municipal_units_list_several_municipalities(admission: dict[str, Any]) -> None:
    """Several service municipalities are accepted; none, repeats or unknown ones are not."""
    admission["service_municipalities"] = ["3403", "3411", "3412"]
    event = parse_event(admission, environment=TEST)
    assert isinstance(event, KadAdmission)
    assert event.service_municipalities == (
        "3403",
        "3411",
        "3412",
    )
    admission["service_municipalities"] = []
    assert _violation(admission).field == "service_municipalities"
    admission["service_municipalities"] = ["3403", "3403"]
    assert _violation(admission).rule == "municipality-repeated"
    admission["service_municipalities"] = ["3403", "0999"]
    error = _violation(admission)
    assert (error.field, error.rule) == ("service_municipalities.1", "municipality-unknown")


def test_diagnoses_state_their_system_per_code(admission: dict[str, Any]) -> None:
    """ICPC-2 and ICD-10 may be mixed in one list; ICD-10 is stored without the dot."""
    admission["admission_diagnoses"] = [
        {"system": "ICPC-2", "code": "R81"},
        {"system": "ICD-10", "code": "J18.9"},
        {"system": "ICPC-2", "code": "-30"},
    ]
    event = parse_event(admission, environment=TEST)
    assert isinstance(event, KadAdmission)
    assert [(d.system, d.code) for d in event.admission_diagnoses] == [
        (CodeSystem.ICPC2, "R81"),
        (CodeSystem.ICD10, "J189"),
        (CodeSystem.ICPC2, "-30"),
    ]


def test_a_code_under_the_wrong_system_is_an_error(admission: dict[str, Any]) -> None:
    admission["admission_diagnoses"] = [{"system": "ICPC-2", "code": "J18.9"}]
    error = _violation(admission)
    assert (error.field, error.rule) == ("admission_diagnoses.0.code", "diagnosis-wrong-system")
    admission["admission_diagnoses"] = [{"system": "ICD-10", "code": "K77"}]
    assert _violation(admission).rule == "diagnosis-wrong-system"
    admission["admission_diagnoses"] = [{"system": "ICD-10", "code": "-30"}]
    assert _violation(admission).rule == "diagnosis-wrong-system"


def test_unknown_codes_and_systems_are_errors(discharge: dict[str, Any]) -> None:
    discharge["discharge_diagnoses"] = [{"system": "ICD-10", "code": "Q999X"}]
    assert _violation(discharge).rule == "diagnosis-unknown-code"
    discharge["discharge_diagnoses"] = [{"system": "SNOMED", "code": "R81"}]
    error = _violation(discharge)
    assert (error.field, error.rule) == ("discharge_diagnoses.0.system", "not-in-code-list")
    discharge["discharge_diagnoses"] = []
    assert _violation(discharge).field == "discharge_diagnoses"


def test_counterparts_carry_a_category_and_optional_identifiers(
    discharge: dict[str, Any],
) -> None:
    """Discharged-to: category from "Ut til", optional org number (mod-11) and HER-id (> 0)."""
    discharge["discharged_to"] = {
        "category": "hospital",
        "org_number": "310000027",
        "her_id": 12345,
    }
    event = parse_event(discharge, environment=TEST)
    assert isinstance(event, KadDischarge)
    assert event.discharged_to.category is CounterpartCategory.HOSPITAL
    discharge["discharged_to"] = {"category": "hospital", "org_number": "310000028"}
    assert _violation(discharge).rule == "org-number-checksum"
    discharge["discharged_to"] = {"category": "hospital", "her_id": -1}
    assert _violation(discharge).rule == "her-id-range"
    discharge["discharged_to"] = {"category": "mars"}
    assert _violation(discharge).rule == "not-in-code-list"


def test_unit_org_number_is_checked(admission: dict[str, Any]) -> None:
    """The unit's org number must be valid; it is the reporting unit for authorisation."""
    admission["unit"]["org_number"] = "999 999 999"
    error = _violation(admission)
    assert (error.field, error.rule) == ("unit.org_number", "org-number-format")
    admission["unit"]["org_number"] = "310000043"
    assert parse_event(admission, environment=TEST).reporting_unit_org_number == "310000043"


def test_stay_id_must_be_a_plain_token(admission: dict[str, Any]) -> None:
    admission["stay_id"] = ""
    assert _violation(admission).field == "stay_id"
    admission["stay_id"] = "stay with spaces"
    assert _violation(admission).field == "stay_id"
