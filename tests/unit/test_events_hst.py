"""HST consultations: every field of the issue and every rule, valid and invalid."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import ContractViolation
from contracts.events import (
    PROGRAMME_BY_SERVICE_AREA,
    Assessment,
    ConsultationStatus,
    Environment,
    HstConsultation,
    ProgrammeConsultation,
    ServiceArea,
    Theme,
    parse_event,
)
from contracts.events.hst import age_in_months
from contracts.synth import generate_events

TEST = Environment.TEST
_EVENTS = [e for e in generate_events(1500, seed=21, kinds=["hst"]) if e.revision == 1]


def _pick(**wanted: object) -> dict[str, Any]:
    for event in _EVENTS:
        assert isinstance(event, HstConsultation)
        if all(getattr(event, name) == value for name, value in wanted.items()):
            return copy.deepcopy(event.model_dump(mode="json"))
    raise AssertionError(f"no generated consultation with {wanted}")


@pytest.fixture
def infant() -> dict[str, Any]:
    """A completed 6-week consultation with measurements and breastfeeding."""
    return _pick(
        programme_consultation=ProgrammeConsultation.WEEKS_6,
        status=ConsultationStatus.COMPLETED,
        form="attended",
    )


@pytest.fixture
def antenatal() -> dict[str, Any]:
    return _pick(service_area=ServiceArea.ANTENATAL, status=ConsultationStatus.COMPLETED)


def _violation(raw: dict[str, Any]) -> ContractViolation:
    with pytest.raises(ContractViolation) as caught:
        parse_event(raw, environment=TEST)
    return caught.value


def _parse(raw: dict[str, Any]) -> HstConsultation:
    event = parse_event(raw, environment=TEST)
    assert isinstance(event, HstConsultation)
    return event


def test_every_field_of_the_issue_exists() -> None:
    """Service area, unit, municipality, person, time, place, programme, form, personnel, ..."""
    expected = {
        "service_area", "unit", "service_municipality", "person", "consultation_at", "place",
        "programme_consultation", "pregnancy_week", "form", "personnel", "guardian_present",
        "interpreter_needed", "status", "measurements", "breastfeeding", "themes",
        "individual_plan", "coordinator",
    }  # fmt: skip
    assert expected <= set(HstConsultation.model_fields)
    assert len(Theme) == 18
    assert [t.number for t in Theme] == list(range(1, 19))
    assert {a.value for a in Assessment} == {
        "ok", "not-addressed", "follow-up-next", "extra-consultation", "referred", "cooperation",
    }  # fmt: skip
    assert {s.value for s in ConsultationStatus} == {
        "completed", "did-not-attend", "cancelled-by-service", "cancelled-by-user",
    }  # fmt: skip


def test_a_generated_infant_consultation_is_valid(infant: dict[str, Any]) -> None:
    event = _parse(infant)
    assert event.clinical_time == event.consultation_at
    assert event.reporting_unit_org_number == infant["unit"]["org_number"]
    assert event.measurements is not None


def test_the_programme_must_belong_to_the_service_area(infant: dict[str, Any]) -> None:
    infant["programme_consultation"] = "grade-8"
    error = _violation(infant)
    assert (error.field, error.rule) == ("programme_consultation", "programme-not-in-service-area")
    infant["programme_consultation"] = "extra"
    _parse(infant)


def test_every_service_area_allows_an_extra_consultation() -> None:
    for area in ServiceArea:
        assert ProgrammeConsultation.EXTRA in PROGRAMME_BY_SERVICE_AREA[area]


def test_antenatal_consultations_state_the_pregnancy_week(antenatal: dict[str, Any]) -> None:
    assert 4 <= _parse(antenatal).pregnancy_week <= 44  # type: ignore[operator]
    antenatal["pregnancy_week"] = None
    assert _violation(antenatal).rule == "pregnancy-week-required"
    antenatal["pregnancy_week"] = 2
    assert _violation(antenatal).rule == "pregnancy-week-range"
    antenatal["pregnancy_week"] = 50
    assert _violation(antenatal).field == "pregnancy_week"


def test_only_antenatal_consultations_have_a_pregnancy_week(infant: dict[str, Any]) -> None:
    infant["pregnancy_week"] = 20
    assert _violation(infant).rule == "pregnancy-week-forbidden"


def test_place_is_remote_exactly_for_remote_forms(infant: dict[str, Any]) -> None:
    """Video, telephone and digital dialogue happen at place remote; attended never does."""
    infant |= {"form": "video", "measurements": None}
    assert _violation(infant).rule == "place-form-mismatch"
    infant["place"] = "remote"
    _parse(infant)
    infant["form"] = "attended"
    assert _violation(infant).rule == "place-form-mismatch"


@pytest.mark.parametrize("status", ["did-not-attend", "cancelled-by-service", "cancelled-by-user"])
def test_content_belongs_to_completed_consultations(infant: dict[str, Any], status: str) -> None:
    """A consultation that did not happen reports no measurements, breastfeeding or themes."""
    infant["status"] = status
    error = _violation(infant)
    assert error.rule == "content-without-completed-consultation"
    infant |= {"measurements": None, "breastfeeding": None, "themes": [], "personnel": []}
    assert _parse(infant).status is ConsultationStatus(status)


def test_a_completed_consultation_names_personnel_once_each(infant: dict[str, Any]) -> None:
    infant["personnel"] = []
    assert _violation(infant).rule == "personnel-required"
    infant["personnel"] = ["public-health-nurse", "public-health-nurse"]
    assert _violation(infant).rule == "personnel-repeated"
    infant["personnel"] = ["public-health-nurse", "doctor", "physiotherapist"]
    assert len(_parse(infant).personnel) == 3


@pytest.mark.parametrize(
    ("field", "value", "unit"),
    [
        ("height", 300.0, "cm"),
        ("height", 10.0, "cm"),
        ("weight", 1000.0, "kg"),
        ("weight", 100.0, "g"),
        ("head_circumference", 90.0, "cm"),
    ],
)
def test_implausible_measurements_are_refused(
    infant: dict[str, Any], field: str, value: float, unit: str
) -> None:
    infant["measurements"][field] = {"value": value, "unit": unit}
    error = _violation(infant)
    assert (error.field, error.rule) == (f"measurements.{field}", "measurement-range")


def test_units_are_converted_before_the_range_check(infant: dict[str, Any]) -> None:
    """4200 g and 4.2 kg are the same plausible weight; 520 mm is a plausible length."""
    infant["measurements"] = {
        "height": {"value": 520, "unit": "mm"},
        "weight": {"value": 4200, "unit": "g"},
        "head_circumference": None,
    }
    event = _parse(infant)
    assert event.measurements is not None
    assert event.measurements.weight is not None
    assert event.measurements.weight.kilograms == pytest.approx(4.2)
    infant["measurements"]["weight"] = {"value": 4.2, "unit": "lb"}
    assert _violation(infant).rule == "not-in-code-list"
    infant["measurements"] = {"height": None, "weight": None, "head_circumference": None}
    assert _violation(infant).rule == "measurements-empty"
    infant["measurements"] = {"weight": {"value": float("nan"), "unit": "kg"}}
    assert _violation(infant).field == "measurements.weight.value"


def test_breastfeeding_is_for_children_up_to_12_months(infant: dict[str, Any]) -> None:
    infant["breastfeeding"] = "partial"
    _parse(infant)
    school = _pick(service_area=ServiceArea.SCHOOL_HEALTH, status=ConsultationStatus.COMPLETED)
    school["breastfeeding"] = "exclusive"
    error = _violation(school)
    assert (error.field, error.rule) == ("breastfeeding", "breastfeeding-age")


@given(
    birth=st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 1, 1)),
    days=st.integers(min_value=0, max_value=5000),
)
def test_age_in_months_counts_completed_months(birth: date, days: int) -> None:
    """Property: age in months is monotone and within a month of days / 30.44."""
    on = date.fromordinal(birth.toordinal() + days)
    months = age_in_months(birth, on)
    assert months >= 0
    assert abs(months - days / 30.4375) < 1.1
    assert age_in_months(birth, date.fromordinal(on.toordinal() + 1)) >= months


def test_a_consultation_before_birth_is_refused(infant: dict[str, Any]) -> None:
    infant["consultation_at"] = "2017-01-05T10:00:00+01:00"
    infant |= {"breastfeeding": None}
    error = _violation(infant)
    assert (error.field, error.rule) == ("consultation_at", "before-birth")


@pytest.mark.parametrize(
    ("assessment", "detail", "value"),
    [
        ("extra-consultation", "extra_consultation", "drop-in"),
        ("referred", "referral", "outside-municipality"),
        ("cooperation", "cooperation_partners", ["ppt", "kindergarten"]),
    ],
)
def test_assessment_sub_choices(
    infant: dict[str, Any], assessment: str, detail: str, value: object
) -> None:
    """Extra consultation, referral and cooperation need their sub-choice; others have none."""
    theme = {"theme": "sleep", "assessment": assessment}
    infant["themes"] = [theme]
    error = _violation(infant)
    assert (error.field, error.rule) == (f"themes.0.{detail}", "assessment-detail-required")
    theme[detail] = value  # type: ignore[assignment]
    assert _parse(infant).themes[0].assessment is Assessment(assessment)
    theme["assessment"] = "ok"
    assert _violation(infant).rule == "assessment-detail-forbidden"


def test_cooperation_partners_are_listed_once_each(infant: dict[str, Any]) -> None:
    infant["themes"] = [
        {"theme": "language", "assessment": "cooperation", "cooperation_partners": ["ppt", "ppt"]}
    ]
    assert _violation(infant).rule == "cooperation-partner-repeated"


def test_themes_are_assessed_once_each(infant: dict[str, Any]) -> None:
    infant["themes"] = [
        {"theme": "sleep", "assessment": "ok"},
        {"theme": "sleep", "assessment": "follow-up-next"},
    ]
    assert _violation(infant).rule == "theme-repeated"
    infant["themes"] = [{"theme": theme.value, "assessment": "ok"} for theme in Theme]
    assert len(_parse(infant).themes) == 18
    infant["themes"] = [{"theme": "astrology", "assessment": "ok"}]
    assert _violation(infant).rule == "not-in-code-list"


def test_flags_and_service_municipality(infant: dict[str, Any]) -> None:
    """Guardian, interpreter, plan and coordinator are booleans; the municipality is listed."""
    infant |= {"guardian_present": True, "individual_plan": True, "coordinator": False}
    event = _parse(infant)
    assert (event.guardian_present, event.individual_plan, event.coordinator) == (True, True, False)
    infant["interpreter_needed"] = None
    assert _violation(infant).field == "interpreter_needed"
    infant["interpreter_needed"] = False
    infant["service_municipality"] = "9999"
    assert _violation(infant).rule == "municipality-unknown"


def test_consultation_time_must_lie_in_the_register_period(infant: dict[str, Any]) -> None:
    infant["consultation_at"] = "2029-01-01T10:00:00+01:00"
    assert _violation(infant).rule == "time-in-future"
