"""What every event shares: the envelope metadata, the person, the validation context.

Validation rules that depend on the deployment (synthetic identities allowed or not), on
the clock (nothing in the future) or on data (code lists) read a :class:`ValidationRules`
from the pydantic validation context. Without a context the rules are the production ones:
a model built directly in code is held to the strictest standard.

Every custom rule raises ``PydanticCustomError(rule, message, {"field": ...})``: the error
*type* is the rule's stable name and :mod:`contracts.events.parse` turns it into
:class:`contracts.errors.ContractViolation`. Messages never contain the value checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum, unique
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.errors import ContractViolation
from contracts.events.codes import CorrectionKind, Sex
from contracts.events.diagnoses import DiagnosisCodeLists, default_code_lists
from contracts.events.identifiers import (
    NationalIdKind,
    check_her_id,
    check_municipality,
    check_municipality_in_use,
    check_org_number,
    parse_national_id,
)
from contracts.events.migrations import SEX_TO_VOLVEN_3101

__all__ = [
    "CLOCK_SKEW",
    "CURRENT_SCHEMA_VERSION",
    "EARLIEST_EVENT_TIME",
    "SCHEMA_VERSIONS",
    "ContractModel",
    "Environment",
    "EventBase",
    "EventTime",
    "HerId",
    "MunicipalityNumber",
    "OrgNumber",
    "Person",
    "ServiceUnit",
    "StrictCount",
    "TextDate",
    "ValidationRules",
    "check_event_time",
    "rule_error",
    "rules_of",
]

CURRENT_SCHEMA_VERSION = 1
#: The schema versions this code parses. A consumer rejects any other with UnknownSchemaVersion.
SCHEMA_VERSIONS: frozenset[int] = frozenset({CURRENT_SCHEMA_VERSION})

#: KPR holds data from 2017-01-01 (Norwegian time; January is CET, UTC+1).
EARLIEST_EVENT_TIME = datetime(2017, 1, 1, tzinfo=timezone(timedelta(hours=1)))
#: How far in the future a time may lie, for clocks that are a little ahead of ours.
CLOCK_SKEW = timedelta(minutes=10)


@unique
class Environment(StrEnum):
    """Where this process runs. Only ``test`` accepts synthetic test identities."""

    PRODUCTION = "production"
    TEST = "test"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """Read ``KPR_ENVIRONMENT``; unset or empty means production (fail safe).

        Raises ``ValueError`` for any other value than ``production`` or ``test``, so a
        typo is found at start-up rather than silently treated as either.
        """
        source = os.environ if environ is None else environ
        raw = source.get("KPR_ENVIRONMENT", "").strip().lower()
        if not raw:
            return cls.PRODUCTION
        try:
            return cls(raw)
        except ValueError:
            raise ValueError("KPR_ENVIRONMENT must be 'production' or 'test'") from None


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """The deployment-dependent inputs of validation, passed as pydantic context.

    ``now`` fixes the clock for "not in the future" (tests, replays); ``None`` reads it.
    ``code_lists`` replaces the shipped diagnosis lists (a newer year's); ``None`` uses them.
    """

    environment: Environment = Environment.PRODUCTION
    code_lists: DiagnosisCodeLists | None = None
    now: datetime | None = None

    CONTEXT_KEY: ClassVar[str] = "kpr_rules"

    def context(self) -> dict[str, object]:
        return {self.CONTEXT_KEY: self}

    def current_time(self) -> datetime:
        """``now`` if given, else the clock."""
        return self.now if self.now is not None else datetime.now(UTC)

    def diagnosis_lists(self) -> DiagnosisCodeLists:
        return self.code_lists if self.code_lists is not None else default_code_lists()


_PRODUCTION_RULES = ValidationRules()


def rules_of(info: ValidationInfo) -> ValidationRules:
    """The rules in the validation context; production rules with the live clock if none."""
    context = info.context
    if isinstance(context, Mapping):
        rules = context.get(ValidationRules.CONTEXT_KEY)
        if isinstance(rules, ValidationRules):
            return rules
    return _PRODUCTION_RULES


def rule_error(rule: str, message: str, field_path: str = "") -> PydanticCustomError:
    """A pydantic error whose type is ``rule``; ``field_path`` refines the location."""
    return PydanticCustomError(rule, message, {"field": field_path} if field_path else None)


def _from_violation(error: ContractViolation, field_path: str = "") -> PydanticCustomError:
    return rule_error(error.rule, error.description, field_path)


def _org_number(value: str) -> str:
    try:
        return check_org_number(value)
    except ContractViolation as error:
        raise _from_violation(error) from None


def _her_id(value: int) -> int:
    try:
        return check_her_id(value)
    except ContractViolation as error:
        raise _from_violation(error) from None


def _municipality(value: str) -> str:
    try:
        return check_municipality(value)
    except ContractViolation as error:
        raise _from_violation(error) from None


def _not_a_number(value: object) -> object:
    # Pydantic reads numbers as Unix timestamps; the contract's times and dates are text.
    if isinstance(value, int | float):
        raise rule_error("datetime-type", "a date or time must be an ISO 8601 string")
    return value


EventTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
"""An ISO 8601 date-time with a UTC offset (never a number)."""
TextDate = Annotated[date, BeforeValidator(_not_a_number)]
"""An ISO 8601 date (never a number)."""
StrictCount = Annotated[int, Field(strict=True)]
"""An integer given as a JSON integer (not a string, float or boolean)."""

OrgNumber = Annotated[
    str,
    AfterValidator(_org_number),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{9}$",
            "description": "Organisation number (Enhetsregisteret): 9 digits, mod-11, "
            "not a known placeholder such as 999999999.",
        }
    ),
]
HerId = Annotated[
    int,
    Field(strict=True),
    AfterValidator(_her_id),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": 2**31 - 1,
            "description": "HER-id in the national address register (Adresseregisteret).",
        }
    ),
]
MunicipalityNumber = Annotated[
    str,
    AfterValidator(_municipality),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{4}$",
            "description": "Municipality number (4 digits), one in use on the event's "
            "date (the list of its year, 2017 on; see contracts/data/SOURCE-municipalities.md).",
        }
    ),
]


def check_event_time(value: datetime, info: ValidationInfo, field_path: str) -> datetime:
    """Reject times before 2017-01-01 (``time-before-2017``) or in the future.

    The future check (``time-in-future``) allows :data:`CLOCK_SKEW`.
    """
    if value < EARLIEST_EVENT_TIME:
        raise rule_error("time-before-2017", "the time is before 2017-01-01", field_path)
    if value > rules_of(info).current_time() + CLOCK_SKEW:
        raise rule_error("time-in-future", "the time lies in the future", field_path)
    return value


class ContractModel(BaseModel):
    """Base of every contract model: immutable, no unknown fields, no NaN."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Person(ContractModel):
    """The person the event is about. ``national_id`` is the only direct identifier."""

    national_id: str = Field(
        description="Fødselsnummer or D-number: 11 digits with both mod-11 check digits. "
        "Synthetic test identities (month + 40 / + 80) only where KPR_ENVIRONMENT=test.",
        json_schema_extra={"pattern": "^[0-9]{11}$"},
    )
    sex: Sex
    birth_date: TextDate = Field(description="Must agree with the date in the national id.")
    home_municipality: MunicipalityNumber = Field(description="Bostedskommune.")

    @field_validator("sex", mode="before")
    @classmethod
    def _retired_sex_codes(cls, value: object, info: ValidationInfo) -> object:
        # The version 1 slugs, read as the national codes until their cut-off.
        try:
            return SEX_TO_VOLVEN_3101.current(value, rules_of(info).current_time())
        except ContractViolation as error:
            raise rule_error(error.rule, error.description) from None

    @model_validator(mode="after")
    def _check_national_id(self, info: ValidationInfo) -> Person:
        # One model validator rather than a field validator plus this one, so the id is
        # parsed once per event (this runs for every message the consumer takes).
        rules = rules_of(info)
        try:
            parsed = parse_national_id(self.national_id, today=rules.current_time().date())
        except ContractViolation as error:
            raise _from_violation(error, "national_id") from None
        if parsed.kind is NationalIdKind.SYNTHETIC and rules.environment is not Environment.TEST:
            raise rule_error(
                "synthetic-id-in-production",
                "synthetic test identities are refused outside the test environment",
                "national_id",
            )
        if parsed.birth_date != self.birth_date:
            raise rule_error(
                "birth-date-mismatch",
                "the birth date differs from the one in the national id",
                "birth_date",
            )
        return self


class ServiceUnit(ContractModel):
    """The service unit (virksomhet) the event is reported for."""

    org_number: OrgNumber
    name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, min_length=1, max_length=300)


def _event_type_is_required(schema: dict[str, Any]) -> None:
    # event_type has a default so code can build events, but on the wire it is the
    # discriminator and must be sent.
    required = schema.setdefault("required", [])
    if "event_type" in schema.get("properties", {}) and "event_type" not in required:
        required.insert(0, "event_type")


class EventBase(ContractModel):
    """The envelope metadata every event carries."""

    model_config = ConfigDict(json_schema_extra=_event_type_is_required)

    schema_version: Literal[1] = Field(description="Version of this contract.")
    event_id: UUID = Field(description="Unique id of this event, set by the source system.")
    revision: StrictCount = Field(
        ge=1, description="Revision of the record: 1 for the original, then 2, 3, ..."
    )
    correction: CorrectionKind = Field(
        description="original (N), replace (M), supplement (T) or cancel (C)."
    )
    corrects_event_id: UUID | None = Field(
        default=None,
        description="The original event this corrects; required for replace, supplement "
        "and cancel, absent for an original.",
    )
    source_system: str = Field(
        min_length=1, max_length=100, description="EPJ system and version that produced the event."
    )
    sender_her_id: HerId
    sender_org_number: OrgNumber
    registered_at: EventTime = Field(
        description="When the source system registered the record (with UTC offset)."
    )
    person: Person = Field(description="The person the event is about.")

    @field_validator("registered_at")
    @classmethod
    def _check_registered_at(cls, value: datetime, info: ValidationInfo) -> datetime:
        return check_event_time(value, info, "")

    def municipality_fields(self) -> list[tuple[str, str]]:
        """(field path, number) of every municipality the event names."""
        return [("person.home_municipality", self.person.home_municipality)]

    def check_municipalities_in_use(self, moment: datetime) -> None:
        """Every municipality the event names was in use at ``moment``, its clinical
        time (``municipality-not-in-use``). Changes take effect at midnight on 1 January
        Norwegian time, which is always winter time (UTC+1), so the year is exact."""
        norwegian_date = (moment.astimezone(UTC) + timedelta(hours=1)).date()
        for field_path, number in self.municipality_fields():
            try:
                check_municipality_in_use(number, norwegian_date)
            except ContractViolation as error:
                raise _from_violation(error, field_path) from None

    @model_validator(mode="after")
    def _check_correction_link(self) -> Any:
        if self.correction is CorrectionKind.ORIGINAL:
            if self.corrects_event_id is not None:
                raise rule_error(
                    "correction-link-forbidden",
                    "an original event must not name an event it corrects",
                    "corrects_event_id",
                )
            if self.revision != 1:
                raise rule_error(
                    "revision-original", "an original event has revision 1", "revision"
                )
        else:
            if self.corrects_event_id is None:
                raise rule_error(
                    "correction-link-required",
                    "a correction must name the original event it corrects",
                    "corrects_event_id",
                )
            if self.corrects_event_id == self.event_id:
                raise rule_error(
                    "correction-self-reference",
                    "a correction must have its own event id",
                    "corrects_event_id",
                )
            if self.revision < 2:
                raise rule_error(
                    "revision-correction", "a correction has revision 2 or higher", "revision"
                )
        return self

    @property
    def record_key(self) -> UUID:
        """The id that groups an original with its corrections."""
        return self.event_id if self.corrects_event_id is None else self.corrects_event_id

    def check_not_before_birth(self, when: datetime, field_path: str) -> None:
        """Raise ``before-birth`` if ``when`` is before the person's birth date."""
        if when.date() < self.person.birth_date:
            raise rule_error("before-birth", "the time is before the person's birth", field_path)
