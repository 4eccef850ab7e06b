"""KAD/ØHD stays: municipal acute inpatient beds, reported as an admission and a discharge.

The two events of one stay share ``stay_id``. Content follows the nine items of the
consultation paper on KAD/ØHD reporting (seed 004): unit, service municipality or
municipalities, patient, admission and discharge time, admission and discharge
diagnoses (ICPC-2 or ICD-10, the system stated per code), referring unit and
discharged-to (category from code list "Ut til" plus optional organisation number /
HER-id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from contracts.errors import ContractViolation
from contracts.events._common import (
    ContractModel,
    EventBase,
    EventTime,
    HerId,
    MunicipalityNumber,
    OrgNumber,
    ServiceUnit,
    check_event_time,
    rule_error,
    rules_of,
)
from contracts.events.codes import CodeSystem, CounterpartCategory
from contracts.events.diagnoses import normalise_diagnosis_code

__all__ = ["Counterpart", "Diagnosis", "KadAdmission", "KadDischarge", "StayId"]

StayId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The source system's id of the stay; joins admission and discharge. "
        "Must not contain the national id.",
    ),
]


class Diagnosis(ContractModel):
    """One diagnosis code with its code system stated."""

    system: CodeSystem
    code: str = Field(
        min_length=2,
        max_length=8,
        description="ICD-10 with or without the dot (stored without), ICPC-2 from the list, "
        "or an ICPC-2 process code -30 ... -69.",
    )

    @field_validator("code")
    @classmethod
    def _check_code(cls, value: str, info: ValidationInfo) -> str:
        system = info.data.get("system")
        if not isinstance(system, CodeSystem):
            return value  # the system itself is invalid; that error is reported already
        try:
            return normalise_diagnosis_code(system, value, rules_of(info).diagnosis_lists())
        except ContractViolation as error:
            raise rule_error(error.rule, error.description) from None


Diagnoses = Annotated[tuple[Diagnosis, ...], Field(min_length=1, max_length=20)]


class Counterpart(ContractModel):
    """Where the patient came from or went to: a category, optionally the exact unit."""

    category: CounterpartCategory = Field(description='Category from code list "Ut til".')
    org_number: OrgNumber | None = None
    her_id: HerId | None = None


class _KadStay(EventBase):
    unit: ServiceUnit = Field(description="The KAD/ØHD unit (name, address, org number).")
    service_municipalities: tuple[MunicipalityNumber, ...] = Field(
        min_length=1,
        max_length=50,
        description="The municipality or municipalities the unit serves (several for an "
        "inter-municipal unit), no repeats.",
    )
    stay_id: StayId
    admitted_at: EventTime = Field(description="Admission date and time (with UTC offset).")

    @field_validator("admitted_at")
    @classmethod
    def _check_admitted_at(cls, value: datetime, info: ValidationInfo) -> datetime:
        return check_event_time(value, info, "")

    @field_validator("service_municipalities")
    @classmethod
    def _check_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise rule_error("municipality-repeated", "a service municipality is listed twice")
        return value

    @property
    def reporting_unit_org_number(self) -> str:
        return self.unit.org_number

    def municipality_fields(self) -> list[tuple[str, str]]:
        return [
            *super().municipality_fields(),
            *(
                (f"service_municipalities.{i}", n)
                for i, n in enumerate(self.service_municipalities)
            ),
        ]


class KadAdmission(_KadStay):
    """A patient admitted to a KAD/ØHD bed."""

    event_type: Literal["kad.admission"] = Field(
        default="kad.admission", description="Discriminator: always kad.admission."
    )
    admission_diagnoses: Diagnoses = Field(description="Set by the admitting doctor.")
    referred_by: Counterpart = Field(description="Referring unit (henvisende virksomhet).")

    @model_validator(mode="after")
    def _check_times(self) -> KadAdmission:
        self.check_not_before_birth(self.admitted_at, "admitted_at")
        self.check_municipalities_in_use(self.admitted_at)
        return self

    @property
    def clinical_time(self) -> datetime:
        return self.admitted_at


class KadDischarge(_KadStay):
    """A patient discharged from a KAD/ØHD bed. Repeats the admission time of the stay."""

    event_type: Literal["kad.discharge"] = Field(
        default="kad.discharge", description="Discriminator: always kad.discharge."
    )
    discharged_at: EventTime = Field(description="Discharge date and time (with UTC offset).")
    discharge_diagnoses: Diagnoses = Field(description="Set by the doctor in the unit.")
    discharged_to: Counterpart = Field(description="Discharged to (utskrevet til).")

    @field_validator("discharged_at")
    @classmethod
    def _check_discharged_at(cls, value: datetime, info: ValidationInfo) -> datetime:
        return check_event_time(value, info, "")

    @model_validator(mode="after")
    def _check_times(self) -> KadDischarge:
        self.check_not_before_birth(self.admitted_at, "admitted_at")
        if self.discharged_at < self.admitted_at:
            raise rule_error(
                "discharge-before-admission",
                "the discharge time is before the admission time",
                "discharged_at",
            )
        self.check_municipalities_in_use(self.discharged_at)
        return self

    @property
    def clinical_time(self) -> datetime:
        return self.discharged_at
