"""The story generator: one person's stay, child-health programme, pregnancy or
youth-clinic visit at a time, as raw event dictionaries (which
:func:`contracts.synth.generate_events` validates)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from contracts.events.codes import (
    Assessment,
    BreastfeedingStatus,
    ConsultationForm,
    ConsultationPlace,
    ConsultationStatus,
    CooperationPartner,
    CorrectionKind,
    CounterpartCategory,
    ExtraConsultationKind,
    PersonnelCategory,
    ProgrammeConsultation,
    ReferralTarget,
    ServiceArea,
    Sex,
    Theme,
)
from contracts.events.identifiers import synthetic_national_id
from contracts.events.municipalities import number_in_use
from contracts.synth._tables import (
    CHILD_PROGRAMME,
    DEFAULT_SENDER_HER_ID,
    DEFAULT_SENDER_ORG_NUMBER,
    DEFAULT_UNIT_ORG_NUMBERS,
    DEFAULT_UNTIL,
    DISCHARGED_TO,
    EARLIEST,
    EVENT_KINDS,
    KAD_DIAGNOSES,
    REFERRED_BY,
    SCHOOL_PROGRAMME,
    SOURCE_SYSTEMS,
    STATUSES,
    UNIT_MUNICIPALITIES,
)

__all__ = ["Generator", "SynthOptions", "raw_events"]


@dataclass(frozen=True, slots=True)
class SynthOptions:
    """What to generate. Shares are probabilities in [0, 1]."""

    kinds: frozenset[str] = EVENT_KINDS
    corrections: float = 0.0
    duplicates: float = 0.0
    unit_org_numbers: tuple[str, ...] = DEFAULT_UNIT_ORG_NUMBERS
    sender_her_id: int = DEFAULT_SENDER_HER_ID
    sender_org_number: str = DEFAULT_SENDER_ORG_NUMBER
    until: datetime = DEFAULT_UNTIL

    def __post_init__(self) -> None:
        if not self.kinds or not self.kinds <= EVENT_KINDS:
            raise ValueError("kinds must be a non-empty subset of {'kad', 'hst'}")
        for share in (self.corrections, self.duplicates):
            if not 0.0 <= share <= 1.0:
                raise ValueError("shares must lie between 0 and 1")
        if not self.unit_org_numbers:
            raise ValueError("at least one unit organisation number is needed")
        if self.until.tzinfo is None or self.until <= EARLIEST:
            raise ValueError("until must be tz-aware and after 2017-01-01")


@dataclass(slots=True)
class Generator:
    rng: random.Random
    options: SynthOptions
    serial: int = 0
    people: set[str] = field(default_factory=set)

    # -- building blocks --------------------------------------------------------------

    def uuid(self) -> str:
        return str(UUID(int=self.rng.getrandbits(128), version=4))

    def time_between(self, start: datetime, end: datetime) -> datetime:
        span = max(int((end - start).total_seconds()), 1)
        moment = start + timedelta(seconds=self.rng.randrange(span))
        return moment.replace(microsecond=0)

    def weighted(self, choices: Sequence[tuple[Any, int]]) -> Any:
        values = [value for value, _ in choices]
        weights = [weight for _, weight in choices]
        return self.rng.choices(values, weights=weights)[0]

    def person(
        self, born_from: date, born_until: date, *, female: bool | None = None
    ) -> dict[str, Any]:
        is_female = self.rng.random() < 0.5 if female is None else female
        days = max((born_until - born_from).days, 1)
        birth = born_from + timedelta(days=self.rng.randrange(days))
        while True:
            self.serial += 1
            national_id = synthetic_national_id(
                birth, female=is_female, serial=self.rng.randrange(1000) + self.serial
            )
            if national_id not in self.people:
                self.people.add(national_id)
                break
        unit_index = self.rng.randrange(len(self.options.unit_org_numbers))
        home = self.rng.choice(UNIT_MUNICIPALITIES[unit_index % len(UNIT_MUNICIPALITIES)])
        return {
            "national_id": national_id,
            "sex": (Sex.FEMALE if is_female else Sex.MALE).value,
            "birth_date": birth.isoformat(),
            "home_municipality": home,
            "_unit_index": unit_index,
        }

    def envelope(
        self, event_type: str, person: dict[str, Any], registered_at: datetime
    ) -> dict[str, Any]:
        public_person = {key: value for key, value in person.items() if not key.startswith("_")}
        return {
            "event_type": event_type,
            "schema_version": 1,
            "event_id": self.uuid(),
            "revision": 1,
            "correction": CorrectionKind.ORIGINAL.value,
            "corrects_event_id": None,
            "source_system": self.rng.choice(SOURCE_SYSTEMS),
            "sender_her_id": self.options.sender_her_id,
            "sender_org_number": self.options.sender_org_number,
            "registered_at": registered_at.isoformat(),
            "person": public_person,
        }

    @staticmethod
    def dated(event: dict[str, Any], moment: datetime) -> dict[str, Any]:
        """``event`` with today's municipality numbers replaced by those in use at
        ``moment`` (a back-filled event of 2018 names Bergen 1201, not 4601)."""
        day = (moment.astimezone(UTC) + timedelta(hours=1)).date()  # Norwegian new year
        person = event["person"]
        event["person"] = person | {
            "home_municipality": number_in_use(person["home_municipality"], day)
        }
        if "service_municipality" in event:
            event["service_municipality"] = number_in_use(event["service_municipality"], day)
        if "service_municipalities" in event:
            numbers = [number_in_use(n, day) for n in event["service_municipalities"]]
            event["service_municipalities"] = list(dict.fromkeys(numbers))
        return event

    def registered_after(self, moment: datetime) -> datetime:
        delay = timedelta(minutes=self.rng.randrange(5, 3 * 24 * 60))
        return min(moment + delay, self.options.until)

    def unit(self, unit_index: int) -> tuple[dict[str, Any], tuple[str, ...]]:
        org_number = self.options.unit_org_numbers[unit_index]
        municipalities = UNIT_MUNICIPALITIES[unit_index % len(UNIT_MUNICIPALITIES)]
        return {"org_number": org_number, "name": None, "address": None}, municipalities

    # -- KAD/ØHD -------------------------------------------------------------------

    def diagnoses(self) -> list[dict[str, str]]:
        picked = self.rng.sample(KAD_DIAGNOSES, k=self.rng.choice((1, 1, 1, 2, 3)))
        return [{"system": system, "code": code} for system, code in picked]

    def counterpart(self, choices: Sequence[tuple[CounterpartCategory, int]]) -> dict[str, Any]:
        category: CounterpartCategory = self.weighted(choices)
        org_number = None
        if category in (CounterpartCategory.HOSPITAL, CounterpartCategory.NURSING_HOME):
            org_number = (
                self.rng.choice(self.options.unit_org_numbers) if self.rng.random() < 0.3 else None
            )
        return {"category": category.value, "org_number": org_number, "her_id": None}

    def kad_stay(self) -> list[dict[str, Any]]:
        until = self.options.until
        person = self.person(date(1925, 1, 1), date(2004, 12, 31))
        unit, municipalities = self.unit(person["_unit_index"])
        admitted = self.time_between(EARLIEST, until - timedelta(hours=2))
        stay_id = f"KAD-{self.rng.getrandbits(48):012x}"
        common = {
            "unit": unit | {"name": f"KAD {municipalities[0]}"},
            "service_municipalities": list(municipalities),
            "stay_id": stay_id,
            "admitted_at": admitted.isoformat(),
        }
        admission = self.envelope("kad.admission", person, self.registered_after(admitted)) | common
        admission |= {
            "admission_diagnoses": self.diagnoses(),
            "referred_by": self.counterpart(REFERRED_BY),
        }
        discharged = admitted + timedelta(hours=self.rng.randrange(6, 24 * 6))
        if discharged > until:
            return [self.dated(admission, admitted)]  # still in the bed at the end
        discharge = (
            self.envelope("kad.discharge", person, self.registered_after(discharged)) | common
        )
        discharge |= {
            "discharged_at": discharged.isoformat(),
            "discharge_diagnoses": self.diagnoses(),
            "discharged_to": self.counterpart(DISCHARGED_TO),
        }
        return [self.dated(admission, admitted), self.dated(discharge, discharged)]

    # -- HST -------------------------------------------------------------------------

    def consultation(
        self,
        person: dict[str, Any],
        area: ServiceArea,
        programme: ProgrammeConsultation,
        when: datetime,
        *,
        pregnancy_week: int | None = None,
    ) -> dict[str, Any]:
        unit, municipalities = self.unit(person["_unit_index"])
        status: ConsultationStatus = self.weighted(STATUSES)
        form = ConsultationForm.ATTENDED
        if self.rng.random() < 0.06:
            form = self.rng.choice(
                (
                    ConsultationForm.VIDEO,
                    ConsultationForm.TELEPHONE,
                    ConsultationForm.DIGITAL_DIALOGUE,
                )
            )
        place = _place_for(area, programme, form)
        birth = date.fromisoformat(person["birth_date"])
        age_days = (when.date() - birth).days
        child = area in (ServiceArea.CHILD_HEALTH_STATION, ServiceArea.SCHOOL_HEALTH)
        completed = status is ConsultationStatus.COMPLETED
        personnel = [_lead_personnel(area).value] if completed else []
        if completed and self.rng.random() < 0.15:
            personnel.append(PersonnelCategory.DOCTOR.value)
        event = self.envelope("hst.consultation", person, self.registered_after(when))
        event |= {
            "service_area": area.value,
            "unit": unit,
            "service_municipality": municipalities[0],
            "consultation_at": when.isoformat(),
            "place": place.value,
            "programme_consultation": programme.value,
            "pregnancy_week": pregnancy_week,
            "form": form.value,
            "personnel": personnel,
            "guardian_present": (self.rng.random() < 0.9)
            if child and age_days < 16 * 365
            else None,
            "interpreter_needed": self.rng.random() < 0.07,
            "status": status.value,
            "measurements": None,
            "breastfeeding": None,
            "themes": [],
            "individual_plan": True if self.rng.random() < 0.01 else None,
            "coordinator": None,
        }
        if completed and form is ConsultationForm.ATTENDED and child:
            event["measurements"] = _measurements(self.rng, age_days)
        if completed and area is ServiceArea.CHILD_HEALTH_STATION and age_days < 365:
            event["breastfeeding"] = self.weighted(
                (
                    (BreastfeedingStatus.EXCLUSIVE.value, 4),
                    (BreastfeedingStatus.PARTIAL.value, 4),
                    (BreastfeedingStatus.NONE.value, 2),
                )
            )
        if completed:
            event["themes"] = self.themes()
        return self.dated(event, when)

    def themes(self) -> list[dict[str, Any]]:
        picked = self.rng.sample(list(Theme), k=self.rng.randrange(0, 7))
        result = []
        for theme in sorted(picked, key=lambda t: t.number):
            assessment: Assessment = self.weighted(
                (
                    (Assessment.OK, 80),
                    (Assessment.NOT_ADDRESSED, 6),
                    (Assessment.FOLLOW_UP_NEXT, 8),
                    (Assessment.EXTRA_CONSULTATION, 3),
                    (Assessment.REFERRED, 2),
                    (Assessment.COOPERATION, 1),
                )
            )
            entry: dict[str, Any] = {
                "theme": theme.value,
                "assessment": assessment.value,
                "extra_consultation": None,
                "referral": None,
                "cooperation_partners": [],
            }
            if assessment is Assessment.EXTRA_CONSULTATION:
                entry["extra_consultation"] = self.rng.choice(list(ExtraConsultationKind)).value
            elif assessment is Assessment.REFERRED:
                entry["referral"] = self.rng.choice(list(ReferralTarget)).value
            elif assessment is Assessment.COOPERATION:
                partners = self.rng.sample(list(CooperationPartner), k=self.rng.randrange(1, 3))
                entry["cooperation_partners"] = [partner.value for partner in partners]
            result.append(entry)
        return result

    def at_clinic_hours(self, day: date) -> datetime:
        return datetime(
            day.year,
            day.month,
            day.day,
            self.rng.randrange(7, 15),
            self.rng.choice((0, 15, 30, 45)),
            tzinfo=UTC,
        )

    def child_history(self) -> list[dict[str, Any]]:
        until = self.options.until
        person = self.person(date(2010, 1, 1), (until - timedelta(days=30)).date())
        birth = date.fromisoformat(person["birth_date"])
        events = []
        for programme, due_days in CHILD_PROGRAMME:
            day = birth + timedelta(days=due_days + self.rng.randrange(-3, 15))
            when = self.at_clinic_hours(day)
            if when < EARLIEST or when > until:
                continue
            if self.rng.random() < 0.08:
                continue  # a realistic gap: the consultation was never booked or registered
            events.append(
                self.consultation(person, ServiceArea.CHILD_HEALTH_STATION, programme, when)
            )
        for programme, age_years in SCHOOL_PROGRAMME:
            day = date(birth.year + age_years, 9, 1) + timedelta(days=self.rng.randrange(0, 200))
            when = self.at_clinic_hours(day)
            if when < EARLIEST or when > until or self.rng.random() < 0.15:
                continue
            events.append(self.consultation(person, ServiceArea.SCHOOL_HEALTH, programme, when))
        return events

    def pregnancy(self) -> list[dict[str, Any]]:
        until = self.options.until
        person = self.person(date(1980, 1, 1), date(2004, 12, 31), female=True)
        start = self.time_between(EARLIEST, until - timedelta(days=30))
        events = []
        for week in (8, 12, 24, 28, 32, 36, 38, 40):
            when = self.at_clinic_hours((start + timedelta(weeks=week - 8)).date())
            if when > until or self.rng.random() < 0.1:
                continue
            events.append(
                self.consultation(
                    person,
                    ServiceArea.ANTENATAL,
                    ProgrammeConsultation.ANTENATAL,
                    when,
                    pregnancy_week=week,
                )
            )
        birth_day = (start + timedelta(weeks=32)).date()
        for programme, offset in (
            (ProgrammeConsultation.POSTNATAL_HOME_VISIT, 3),
            (ProgrammeConsultation.POSTNATAL_CHECK, 42),
        ):
            when = self.at_clinic_hours(birth_day + timedelta(days=offset))
            if when <= until:
                events.append(self.consultation(person, ServiceArea.POSTNATAL, programme, when))
        return events

    def youth_visit(self) -> list[dict[str, Any]]:
        until = self.options.until
        person = self.person(date(2000, 1, 1), date(2009, 12, 31))
        birth = date.fromisoformat(person["birth_date"])
        start = max(EARLIEST, datetime(birth.year + 14, 1, 1, tzinfo=UTC))
        end = min(until, datetime(birth.year + 20, 1, 1, tzinfo=UTC))
        if start >= end:
            return []
        when = self.at_clinic_hours(self.time_between(start, end).date())
        if when > until:
            return []
        return [
            self.consultation(
                person, ServiceArea.YOUTH_CLINIC, ProgrammeConsultation.YOUTH_CLINIC_VISIT, when
            )
        ]

    # -- corrections and duplicates -----------------------------------------------------

    def correction_of(self, original: dict[str, Any]) -> dict[str, Any]:
        kind: CorrectionKind = self.weighted(
            (
                (CorrectionKind.REPLACE, 6),
                (CorrectionKind.SUPPLEMENT, 3),
                (CorrectionKind.CANCEL, 1),
            )
        )
        corrected = dict(original)
        registered = datetime.fromisoformat(original["registered_at"])
        corrected |= {
            "event_id": self.uuid(),
            "revision": 2,
            "correction": kind.value,
            "corrects_event_id": original["event_id"],
            "registered_at": self.registered_after(registered).isoformat(),
        }
        if kind is CorrectionKind.REPLACE:
            corrected["source_system"] = original["source_system"]
            if original["event_type"] == "hst.consultation":
                corrected["interpreter_needed"] = not original["interpreter_needed"]
            elif original["event_type"] == "kad.admission":
                corrected["admission_diagnoses"] = self.diagnoses()
            else:
                corrected["discharge_diagnoses"] = self.diagnoses()
        return corrected


def _place_for(
    area: ServiceArea, programme: ProgrammeConsultation, form: ConsultationForm
) -> ConsultationPlace:
    if form is not ConsultationForm.ATTENDED:
        return ConsultationPlace.REMOTE
    if programme in (
        ProgrammeConsultation.HOME_VISIT_7_10_DAYS,
        ProgrammeConsultation.POSTNATAL_HOME_VISIT,
    ):
        return ConsultationPlace.HOME
    if area is ServiceArea.SCHOOL_HEALTH:
        return ConsultationPlace.SCHOOL
    if area is ServiceArea.YOUTH_CLINIC:
        return ConsultationPlace.YOUTH_CLINIC
    return ConsultationPlace.HEALTH_STATION


def _lead_personnel(area: ServiceArea) -> PersonnelCategory:
    if area in (ServiceArea.ANTENATAL, ServiceArea.POSTNATAL):
        return PersonnelCategory.MIDWIFE
    return PersonnelCategory.PUBLIC_HEALTH_NURSE


def _measurements(rng: random.Random, age_days: int) -> dict[str, Any]:
    """Height and weight on a rough growth curve, head circumference under two years."""
    years = age_days / 365.25
    height = 50.0 + 25.0 * min(years, 1.0) + 6.5 * max(years - 1.0, 0.0)
    weight = 3.5 + 6.5 * min(years, 1.0) + 2.6 * max(years - 1.0, 0.0)
    result: dict[str, Any] = {
        "height": {"value": round(height * rng.uniform(0.94, 1.06), 1), "unit": "cm"},
        "weight": (
            {"value": round(weight * 1000 * rng.uniform(0.85, 1.15)), "unit": "g"}
            if years < 1.0
            else {"value": round(weight * rng.uniform(0.85, 1.2), 1), "unit": "kg"}
        ),
        "head_circumference": None,
    }
    if years < 2.0:
        head = 35.0 + 11.0 * min(years, 1.0) + 2.5 * max(years - 1.0, 0.0)
        result["head_circumference"] = {
            "value": round(head * rng.uniform(0.96, 1.04), 1),
            "unit": "cm",
        }
    return result


def stories(generator: Generator) -> Iterable[list[dict[str, Any]]]:
    kinds = generator.options.kinds
    makers: list[tuple[Callable[[], list[dict[str, Any]]], int]] = []
    if "kad" in kinds:
        makers.append((generator.kad_stay, 10))
    if "hst" in kinds:
        makers += [
            (generator.child_history, 3),
            (generator.pregnancy, 2),
            (generator.youth_visit, 2),
        ]
    while True:
        maker: Callable[[], list[dict[str, Any]]] = generator.weighted(makers)
        yield maker()


def raw_events(count: int, seed: int, options: SynthOptions) -> list[dict[str, Any]]:
    # Reproducible test data, not secrets: a seeded PRNG is the point.
    generator = Generator(rng=random.Random(seed), options=options)  # noqa: S311
    result: list[dict[str, Any]] = []
    for story in stories(generator):
        for event in story:
            result.append(event)
            rng = generator.rng
            if options.corrections and rng.random() < options.corrections:
                result.append(generator.correction_of(event))
            if options.duplicates and rng.random() < options.duplicates:
                result.append(dict(result[-1]))
        if len(result) >= count:
            return result[:count]
    raise AssertionError("unreachable: the story generator never ends")
