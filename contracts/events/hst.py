"""HST consultations: one event per consultation in the child health station, school
health service, antenatal and postnatal care and the youth health station.

Content follows the working-group proposal for HST reporting to KPR (seed 000) and the
FHI programme letter (seed 001): unit, service municipality, person, time and place,
programme consultation, form, personnel, guardian, interpreter, status, measurements,
breastfeeding (0-12 months), the 18 themes with an assessment code each, individual plan
and coordinator.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from contracts.events._common import (
    ContractModel,
    EventBase,
    EventTime,
    MunicipalityNumber,
    ServiceUnit,
    StrictCount,
    check_event_time,
    rule_error,
)
from contracts.events.codes import (
    Assessment,
    BreastfeedingStatus,
    ConsultationForm,
    ConsultationPlace,
    ConsultationStatus,
    CooperationPartner,
    ExtraConsultationKind,
    LengthUnit,
    MassUnit,
    PersonnelCategory,
    ProgrammeConsultation,
    ReferralTarget,
    ServiceArea,
    Theme,
)

__all__ = [
    "HEAD_CIRCUMFERENCE_RANGE_CM",
    "HEIGHT_RANGE_CM",
    "PROGRAMME_BY_SERVICE_AREA",
    "WEIGHT_RANGE_KG",
    "HstConsultation",
    "Length",
    "Mass",
    "Measurements",
    "ThemeAssessment",
    "age_in_months",
]

#: Plausible ranges, from a premature newborn to a tall adult, after unit conversion.
HEIGHT_RANGE_CM = (25.0, 220.0)
WEIGHT_RANGE_KG = (0.3, 250.0)
HEAD_CIRCUMFERENCE_RANGE_CM = (18.0, 65.0)
#: Breastfeeding status is reported for children aged 0-12 completed months.
BREASTFEEDING_MAX_MONTHS = 12
PREGNANCY_WEEK_RANGE = (4, 44)

_P = ProgrammeConsultation
#: Which programme consultations each service area may report.
PROGRAMME_BY_SERVICE_AREA: dict[ServiceArea, frozenset[ProgrammeConsultation]] = {
    ServiceArea.CHILD_HEALTH_STATION: frozenset(
        {
            _P.HOME_VISIT_7_10_DAYS,
            _P.WEEKS_4,
            _P.WEEKS_6,
            _P.MONTHS_2,
            _P.MONTHS_3,
            _P.MONTHS_4,
            _P.MONTHS_5,
            _P.MONTHS_6,
            _P.MONTHS_8,
            _P.MONTHS_10,
            _P.MONTHS_12,
            _P.MONTHS_15,
            _P.MONTHS_17_18,
            _P.YEARS_2,
            _P.YEARS_4,
            _P.EXTRA,
        }
    ),
    ServiceArea.SCHOOL_HEALTH: frozenset(
        {
            _P.SCHOOL_START,
            _P.GRADE_2,
            _P.GRADE_3,
            _P.GRADE_6,
            _P.GRADE_7,
            _P.GRADE_8,
            _P.GRADE_10,
            _P.UPPER_SECONDARY_1,
            _P.EXTRA,
        }
    ),
    ServiceArea.ANTENATAL: frozenset({_P.ANTENATAL, _P.EXTRA}),
    ServiceArea.POSTNATAL: frozenset({_P.POSTNATAL_HOME_VISIT, _P.POSTNATAL_CHECK, _P.EXTRA}),
    ServiceArea.YOUTH_CLINIC: frozenset({_P.YOUTH_CLINIC_VISIT, _P.EXTRA}),
}

_LENGTH_TO_CM = {LengthUnit.CM: 1.0, LengthUnit.MM: 0.1}
_MASS_TO_KG = {MassUnit.KG: 1.0, MassUnit.G: 0.001}


def age_in_months(birth_date: date, on: date) -> int:
    """Completed months of age on a day (negative before birth)."""
    months = (on.year - birth_date.year) * 12 + (on.month - birth_date.month)
    return months - 1 if on.day < birth_date.day else months


class Length(ContractModel):
    value: float = Field(gt=0, description="The measured length in ``unit``.")
    unit: LengthUnit

    @property
    def centimetres(self) -> float:
        return self.value * _LENGTH_TO_CM[self.unit]


class Mass(ContractModel):
    value: float = Field(gt=0, description="The measured mass in ``unit``.")
    unit: MassUnit

    @property
    def kilograms(self) -> float:
        return self.value * _MASS_TO_KG[self.unit]


def _check_range(value: float, bounds: tuple[float, float], field_path: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise rule_error(
            "measurement-range",
            f"the measurement is outside the plausible range {low:g}-{high:g}",
            field_path,
        )


class Measurements(ContractModel):
    """Height, weight and head circumference, each with its unit; at least one."""

    height: Length | None = Field(default=None, description="Plausible 25-220 cm.")
    weight: Mass | None = Field(default=None, description="Plausible 0.3-250 kg.")
    head_circumference: Length | None = Field(default=None, description="Plausible 18-65 cm.")

    @model_validator(mode="after")
    def _check_plausible(self) -> Measurements:
        if self.height is None and self.weight is None and self.head_circumference is None:
            raise rule_error("measurements-empty", "measurements must hold at least one value")
        if self.height is not None:
            _check_range(self.height.centimetres, HEIGHT_RANGE_CM, "height")
        if self.weight is not None:
            _check_range(self.weight.kilograms, WEIGHT_RANGE_KG, "weight")
        if self.head_circumference is not None:
            _check_range(
                self.head_circumference.centimetres,
                HEAD_CIRCUMFERENCE_RANGE_CM,
                "head_circumference",
            )
        return self


class ThemeAssessment(ContractModel):
    """One of the 18 themes with its assessment code and the sub-choice the code needs."""

    theme: Theme
    assessment: Assessment
    extra_consultation: ExtraConsultationKind | None = Field(
        default=None, description="Required for assessment extra-consultation, else absent."
    )
    referral: ReferralTarget | None = Field(
        default=None, description="Required for assessment referred, else absent."
    )
    cooperation_partners: tuple[CooperationPartner, ...] = Field(
        default=(),
        max_length=len(CooperationPartner),
        description="One or more for assessment cooperation, else empty.",
    )

    @model_validator(mode="after")
    def _check_sub_choice(self) -> ThemeAssessment:
        needs = {
            "extra_consultation": self.assessment is Assessment.EXTRA_CONSULTATION,
            "referral": self.assessment is Assessment.REFERRED,
            "cooperation_partners": self.assessment is Assessment.COOPERATION,
        }
        given = {
            "extra_consultation": self.extra_consultation is not None,
            "referral": self.referral is not None,
            "cooperation_partners": bool(self.cooperation_partners),
        }
        for name, needed in needs.items():
            if needed and not given[name]:
                raise rule_error(
                    "assessment-detail-required", "this assessment code needs its sub-choice", name
                )
            if given[name] and not needed:
                raise rule_error(
                    "assessment-detail-forbidden",
                    "this sub-choice belongs to another assessment code",
                    name,
                )
        if len(set(self.cooperation_partners)) != len(self.cooperation_partners):
            raise rule_error(
                "cooperation-partner-repeated",
                "a cooperation partner is listed twice",
                "cooperation_partners",
            )
        return self


class HstConsultation(EventBase):
    """One consultation (or a booked one that did not take place) in the HST services."""

    event_type: Literal["hst.consultation"] = Field(
        default="hst.consultation", description="Discriminator: always hst.consultation."
    )
    service_area: ServiceArea
    unit: ServiceUnit = Field(description="The service unit (virksomhet).")
    service_municipality: MunicipalityNumber = Field(
        description="The municipality that delivers the service (tjenestekommune)."
    )
    consultation_at: EventTime = Field(
        description="Date and time of the consultation (with UTC offset); not before birth."
    )
    place: ConsultationPlace = Field(description="remote exactly when the form is not attended.")
    programme_consultation: ProgrammeConsultation = Field(
        description="The consultation in the national programme; must belong to the service area."
    )
    pregnancy_week: StrictCount | None = Field(
        default=None,
        ge=1,
        le=45,
        description="Pregnancy week (4-44), required for antenatal consultations, else absent.",
    )
    form: ConsultationForm
    personnel: tuple[PersonnelCategory, ...] = Field(
        default=(),
        max_length=len(PersonnelCategory),
        description="Health-personnel categories present; at least one for a completed "
        "consultation, no repeats.",
    )
    guardian_present: bool | None = Field(
        default=None, description="A guardian accompanied the child; absent if not relevant."
    )
    interpreter_needed: bool = Field(description="Interpreter or sign-language interpreter needed.")
    status: ConsultationStatus
    measurements: Measurements | None = Field(
        default=None, description="Only for a completed consultation."
    )
    breastfeeding: BreastfeedingStatus | None = Field(
        default=None, description="Only for a completed consultation of a child aged 0-12 months."
    )
    themes: tuple[ThemeAssessment, ...] = Field(
        default=(),
        max_length=len(Theme),
        description="The themes assessed, each at most once; only for a completed consultation.",
    )
    individual_plan: bool | None = Field(
        default=None, description="The person has an individual plan (individuell plan)."
    )
    coordinator: bool | None = Field(
        default=None, description="The person has a coordinator (koordinator)."
    )

    @field_validator("consultation_at")
    @classmethod
    def _check_consultation_at(cls, value: datetime, info: ValidationInfo) -> datetime:
        return check_event_time(value, info, "")

    @model_validator(mode="after")
    def _check_consistency(self) -> HstConsultation:
        self.check_not_before_birth(self.consultation_at, "consultation_at")
        self.check_municipalities_in_use(self.consultation_at)
        self._check_programme()
        self._check_form_and_place()
        self._check_completed_content()
        return self

    def _check_programme(self) -> None:
        if self.programme_consultation not in PROGRAMME_BY_SERVICE_AREA[self.service_area]:
            raise rule_error(
                "programme-not-in-service-area",
                "the programme consultation does not belong to the service area",
                "programme_consultation",
            )
        antenatal = self.programme_consultation is ProgrammeConsultation.ANTENATAL
        if antenatal and self.pregnancy_week is None:
            raise rule_error(
                "pregnancy-week-required",
                "an antenatal consultation needs the pregnancy week",
                "pregnancy_week",
            )
        if self.pregnancy_week is not None:
            if not antenatal:
                raise rule_error(
                    "pregnancy-week-forbidden",
                    "only an antenatal consultation has a pregnancy week",
                    "pregnancy_week",
                )
            low, high = PREGNANCY_WEEK_RANGE
            if not low <= self.pregnancy_week <= high:
                raise rule_error(
                    "pregnancy-week-range",
                    f"the pregnancy week is outside {low}-{high}",
                    "pregnancy_week",
                )

    def _check_form_and_place(self) -> None:
        attended = self.form is ConsultationForm.ATTENDED
        remote = self.place is ConsultationPlace.REMOTE
        if attended == remote:
            raise rule_error(
                "place-form-mismatch",
                "the place is remote exactly when the form is not attended",
                "place",
            )
        if len(set(self.personnel)) != len(self.personnel):
            raise rule_error(
                "personnel-repeated", "a personnel category is listed twice", "personnel"
            )

    def _check_completed_content(self) -> None:
        completed = self.status is ConsultationStatus.COMPLETED
        if completed and not self.personnel:
            raise rule_error(
                "personnel-required",
                "a completed consultation names the personnel present",
                "personnel",
            )
        for name, present in (
            ("measurements", self.measurements is not None),
            ("breastfeeding", self.breastfeeding is not None),
            ("themes", bool(self.themes)),
        ):
            if present and not completed:
                raise rule_error(
                    "content-without-completed-consultation",
                    "only a completed consultation reports this",
                    name,
                )
        if len({assessment.theme for assessment in self.themes}) != len(self.themes):
            raise rule_error("theme-repeated", "a theme is assessed twice", "themes")
        if self.breastfeeding is not None:
            age = age_in_months(self.person.birth_date, self.consultation_at.date())
            if age > BREASTFEEDING_MAX_MONTHS:
                raise rule_error(
                    "breastfeeding-age",
                    "breastfeeding status is reported for children aged 0-12 months only",
                    "breastfeeding",
                )

    @property
    def reporting_unit_org_number(self) -> str:
        return self.unit.org_number

    @property
    def clinical_time(self) -> datetime:
        return self.consultation_at

    def municipality_fields(self) -> list[tuple[str, str]]:
        return [*super().municipality_fields(), ("service_municipality", self.service_municipality)]
