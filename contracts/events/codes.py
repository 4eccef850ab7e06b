"""The code lists of the event contract, as ``StrEnum`` s with their Norwegian labels.

Wire values are the national code values where a national list was found (sex: Volven
3101), else stable English slugs; the member names are the English labels, and
:data:`NORWEGIAN_LABELS` gives the term the guideline uses for each, for the contract
reference page and for mapping local service types to the national codes.

Where each list comes from, with its national source or the statement that none was
found: :mod:`contracts.events.code_sources` (rendered in docs/CONTRACTS.md). A value that
changes on the wire is retired on a stated date: :mod:`contracts.events.migrations`.
"""

from __future__ import annotations

from enum import StrEnum, unique

from contracts.events.diagnoses import CodeSystem

__all__ = [
    "NORWEGIAN_LABELS",
    "Assessment",
    "BreastfeedingStatus",
    "CodeSystem",
    "ConsultationForm",
    "ConsultationPlace",
    "ConsultationStatus",
    "CooperationPartner",
    "CorrectionKind",
    "CounterpartCategory",
    "ExtraConsultationKind",
    "LengthUnit",
    "MassUnit",
    "PersonnelCategory",
    "ProgrammeConsultation",
    "ReferralTarget",
    "ServiceArea",
    "Sex",
    "Theme",
    "norwegian_label",
]


@unique
class CorrectionKind(StrEnum):
    """What an event does to its record: the register's N / M / T / C pattern."""

    ORIGINAL = "original"
    REPLACE = "replace"
    SUPPLEMENT = "supplement"
    CANCEL = "cancel"

    @property
    def register_code(self) -> str:
        """The register's one-letter code: N, M, T or C."""
        return _REGISTER_CODES[self]


_REGISTER_CODES: dict[CorrectionKind, str] = {
    CorrectionKind.ORIGINAL: "N",
    CorrectionKind.REPLACE: "M",
    CorrectionKind.SUPPLEMENT: "T",
    CorrectionKind.CANCEL: "C",
}


@unique
class Sex(StrEnum):
    """Sex as recorded in the patient record, in the national code list Volven 3101.

    The slugs of the first contract (``female``, ``male``, ``unknown``) are retired; until
    when they are still read: :data:`contracts.events.migrations.SEX_TO_VOLVEN_3101`."""

    UNKNOWN = "0"
    MALE = "1"
    FEMALE = "2"
    UNSPECIFIED = "9"


@unique
class CounterpartCategory(StrEnum):
    """Where a KAD/ØHD patient came from or went to (code list "Ut til", Volven 7300)."""

    HOME = "home"
    HOME_WITH_HOME_CARE = "home-with-home-care"
    NURSING_HOME = "nursing-home"
    OTHER_MUNICIPAL_INSTITUTION = "other-municipal-institution"
    EMERGENCY_PRIMARY_CARE = "emergency-primary-care"
    GENERAL_PRACTITIONER = "general-practitioner"
    HOSPITAL = "hospital"
    PSYCHIATRIC_INSTITUTION = "psychiatric-institution"
    OTHER_INSTITUTION = "other-institution"
    DIED = "died"
    OTHER = "other"
    UNKNOWN = "unknown"


@unique
class ServiceArea(StrEnum):
    """The part of the HST service a consultation belongs to."""

    CHILD_HEALTH_STATION = "child-health-station"
    SCHOOL_HEALTH = "school-health"
    ANTENATAL = "antenatal"
    POSTNATAL = "postnatal"
    YOUTH_CLINIC = "youth-clinic"


@unique
class ProgrammeConsultation(StrEnum):
    """Which consultation of the national programme this is.

    ``antenatal`` carries the pregnancy week in its own field; ``extra`` is any
    consultation outside the programme (drop-in, unplanned, planned extra).
    """

    POSTNATAL_HOME_VISIT = "postnatal-home-visit"
    HOME_VISIT_7_10_DAYS = "home-visit-7-10-days"
    WEEKS_4 = "4-weeks"
    WEEKS_6 = "6-weeks"
    MONTHS_2 = "2-months"
    MONTHS_3 = "3-months"
    MONTHS_4 = "4-months"
    MONTHS_5 = "5-months"
    MONTHS_6 = "6-months"
    MONTHS_8 = "8-months"
    MONTHS_10 = "10-months"
    MONTHS_12 = "12-months"
    MONTHS_15 = "15-months"
    MONTHS_17_18 = "17-18-months"
    YEARS_2 = "2-years"
    YEARS_4 = "4-years"
    SCHOOL_START = "school-start"
    GRADE_2 = "grade-2"
    GRADE_3 = "grade-3"
    GRADE_6 = "grade-6"
    GRADE_7 = "grade-7"
    GRADE_8 = "grade-8"
    GRADE_10 = "grade-10"
    UPPER_SECONDARY_1 = "upper-secondary-1"
    ANTENATAL = "antenatal"
    POSTNATAL_CHECK = "postnatal-check"
    YOUTH_CLINIC_VISIT = "youth-clinic-visit"
    EXTRA = "extra"


@unique
class ConsultationForm(StrEnum):
    """How the consultation took place."""

    ATTENDED = "attended"
    VIDEO = "video"
    TELEPHONE = "telephone"
    DIGITAL_DIALOGUE = "digital-dialogue"


@unique
class ConsultationPlace(StrEnum):
    """Where the consultation took place."""

    HEALTH_STATION = "health-station"
    SCHOOL = "school"
    HOME = "home"
    YOUTH_CLINIC = "youth-clinic"
    KINDERGARTEN = "kindergarten"
    REMOTE = "remote"
    OTHER = "other"


@unique
class PersonnelCategory(StrEnum):
    """Health-personnel categories present at the consultation."""

    PUBLIC_HEALTH_NURSE = "public-health-nurse"
    MIDWIFE = "midwife"
    DOCTOR = "doctor"
    PHYSIOTHERAPIST = "physiotherapist"
    NURSE = "nurse"
    PSYCHOLOGIST = "psychologist"
    NUTRITIONIST = "nutritionist"
    OTHER = "other"


@unique
class ConsultationStatus(StrEnum):
    """What became of the booked consultation."""

    COMPLETED = "completed"
    DID_NOT_ATTEND = "did-not-attend"
    CANCELLED_BY_SERVICE = "cancelled-by-service"
    CANCELLED_BY_USER = "cancelled-by-user"


@unique
class BreastfeedingStatus(StrEnum):
    """Breastfeeding status, reported for children aged 0-12 months."""

    EXCLUSIVE = "exclusive"
    PARTIAL = "partial"
    NONE = "none"


@unique
class Theme(StrEnum):
    """The 18 themes of a consultation (working-group proposal), in their numbered order."""

    INFORMATION_AND_CONSENT = "information-and-consent"
    FAMILY_AND_NETWORK = "family-and-network"
    SLEEP = "sleep"
    NUTRITION = "nutrition"
    DENTAL_HEALTH = "dental-health"
    GROWTH_AND_DEVELOPMENT = "growth-and-development"
    PHYSICAL_HEALTH = "physical-health"
    VISION = "vision"
    HEARING = "hearing"
    LANGUAGE = "language"
    MENTAL_HEALTH = "mental-health"
    COPING_AND_WELL_BEING = "coping-and-well-being"
    RELATIONS_AND_INTERACTION = "relations-and-interaction"
    SEXUAL_HEALTH = "sexual-health"
    BULLYING = "bullying"
    VIOLENCE_AND_ABUSE = "violence-and-abuse"
    ENVIRONMENT_AND_SAFETY = "environment-and-safety"
    TOBACCO_AND_SUBSTANCES = "tobacco-and-substances"

    @property
    def number(self) -> int:
        """The theme's number 1-18 in the proposal."""
        return _THEME_NUMBERS[self]


_THEME_NUMBERS: dict[Theme, int] = {theme: index for index, theme in enumerate(Theme, start=1)}


@unique
class Assessment(StrEnum):
    """The assessment code given per theme."""

    OK = "ok"
    NOT_ADDRESSED = "not-addressed"
    FOLLOW_UP_NEXT = "follow-up-next"
    EXTRA_CONSULTATION = "extra-consultation"
    REFERRED = "referred"
    COOPERATION = "cooperation"


@unique
class ExtraConsultationKind(StrEnum):
    """Sub-choice of ``extra-consultation``."""

    DROP_IN = "drop-in"
    UNPLANNED = "unplanned"
    PLANNED_EXTRA = "planned-extra"


@unique
class ReferralTarget(StrEnum):
    """Sub-choice of ``referred``."""

    OTHER_MUNICIPAL_SERVICE = "other-municipal-service"
    OUTSIDE_MUNICIPALITY = "outside-municipality"


@unique
class CooperationPartner(StrEnum):
    """Sub-choice of ``cooperation``: the external partners (one or more)."""

    KINDERGARTEN = "kindergarten"
    SCHOOL = "school"
    PPT = "ppt"
    MENTAL_HEALTH = "mental-health"
    GENERAL_PRACTITIONER = "general-practitioner"
    PHYSIOTHERAPIST = "physiotherapist"
    SPECIALIST_HEALTH_SERVICE = "specialist-health-service"
    OTHER = "other"


@unique
class LengthUnit(StrEnum):
    """Unit of a length (height, head circumference)."""

    CM = "cm"
    MM = "mm"


@unique
class MassUnit(StrEnum):
    """Unit of a mass (weight)."""

    KG = "kg"
    G = "g"


_LABEL_ROWS: tuple[tuple[StrEnum, str], ...] = (
    (CodeSystem.ICPC2, "ICPC-2 (primærhelsetjenesten)"),
    (CodeSystem.ICD10, "ICD-10 (spesialisthelsetjenesten)"),
    (CorrectionKind.ORIGINAL, "Ny (N)"),
    (CorrectionKind.REPLACE, "Korreksjon, erstatt (M)"),
    (CorrectionKind.SUPPLEMENT, "Korreksjon, supplement (T)"),
    (CorrectionKind.CANCEL, "Korreksjon, slett (C)"),
    (Sex.UNKNOWN, "Ikke kjent"),
    (Sex.MALE, "Mann"),
    (Sex.FEMALE, "Kvinne"),
    (Sex.UNSPECIFIED, "Ikke spesifisert"),
    (CounterpartCategory.HOME, "Hjem"),
    (CounterpartCategory.HOME_WITH_HOME_CARE, "Hjem med hjemmetjenester"),
    (CounterpartCategory.NURSING_HOME, "Sykehjem"),
    (CounterpartCategory.OTHER_MUNICIPAL_INSTITUTION, "Annen kommunal institusjon"),
    (CounterpartCategory.EMERGENCY_PRIMARY_CARE, "Legevakt"),
    (CounterpartCategory.GENERAL_PRACTITIONER, "Fastlege"),
    (CounterpartCategory.HOSPITAL, "Sykehus"),
    (CounterpartCategory.PSYCHIATRIC_INSTITUTION, "Psykisk helsevern"),
    (CounterpartCategory.OTHER_INSTITUTION, "Annen institusjon"),
    (CounterpartCategory.DIED, "Død"),
    (CounterpartCategory.OTHER, "Annet"),
    (CounterpartCategory.UNKNOWN, "Ukjent"),
    (ServiceArea.CHILD_HEALTH_STATION, "Helsestasjon 0-5 år"),
    (ServiceArea.SCHOOL_HEALTH, "Skolehelsetjenesten"),
    (ServiceArea.ANTENATAL, "Svangerskapsomsorg"),
    (ServiceArea.POSTNATAL, "Barselomsorg"),
    (ServiceArea.YOUTH_CLINIC, "Helsestasjon for ungdom (HFU)"),
    (ProgrammeConsultation.POSTNATAL_HOME_VISIT, "Hjemmebesøk jordmor etter fødsel"),
    (ProgrammeConsultation.HOME_VISIT_7_10_DAYS, "Hjemmebesøk 7-10 dager"),
    (ProgrammeConsultation.WEEKS_4, "4 uker"),
    (ProgrammeConsultation.WEEKS_6, "6 uker"),
    (ProgrammeConsultation.MONTHS_2, "2 måneder"),
    (ProgrammeConsultation.MONTHS_3, "3 måneder"),
    (ProgrammeConsultation.MONTHS_4, "4 måneder"),
    (ProgrammeConsultation.MONTHS_5, "5 måneder"),
    (ProgrammeConsultation.MONTHS_6, "6 måneder"),
    (ProgrammeConsultation.MONTHS_8, "8 måneder"),
    (ProgrammeConsultation.MONTHS_10, "10 måneder"),
    (ProgrammeConsultation.MONTHS_12, "12 måneder"),
    (ProgrammeConsultation.MONTHS_15, "15 måneder"),
    (ProgrammeConsultation.MONTHS_17_18, "17-18 måneder"),
    (ProgrammeConsultation.YEARS_2, "2 år"),
    (ProgrammeConsultation.YEARS_4, "4 år"),
    (ProgrammeConsultation.SCHOOL_START, "Skolestart (1. trinn)"),
    (ProgrammeConsultation.GRADE_2, "2. trinn"),
    (ProgrammeConsultation.GRADE_3, "3. trinn"),
    (ProgrammeConsultation.GRADE_6, "6. trinn"),
    (ProgrammeConsultation.GRADE_7, "7. trinn"),
    (ProgrammeConsultation.GRADE_8, "8. trinn"),
    (ProgrammeConsultation.GRADE_10, "10. trinn"),
    (ProgrammeConsultation.UPPER_SECONDARY_1, "Videregående skole, 1. trinn"),
    (ProgrammeConsultation.ANTENATAL, "Svangerskapskonsultasjon (svangerskapsuke oppgis)"),
    (ProgrammeConsultation.POSTNATAL_CHECK, "Etterkontroll etter fødsel"),
    (ProgrammeConsultation.YOUTH_CLINIC_VISIT, "Besøk på helsestasjon for ungdom"),
    (ProgrammeConsultation.EXTRA, "Ekstrakonsultasjon (utenfor programmet)"),
    (ConsultationForm.ATTENDED, "Oppmøte"),
    (ConsultationForm.VIDEO, "Video"),
    (ConsultationForm.TELEPHONE, "Telefon"),
    (ConsultationForm.DIGITAL_DIALOGUE, "Digital innbyggerdialog"),
    (ConsultationPlace.HEALTH_STATION, "Helsestasjon"),
    (ConsultationPlace.SCHOOL, "Skole"),
    (ConsultationPlace.HOME, "Hjemme"),
    (ConsultationPlace.YOUTH_CLINIC, "Helsestasjon for ungdom"),
    (ConsultationPlace.KINDERGARTEN, "Barnehage"),
    (ConsultationPlace.REMOTE, "Ikke fysisk oppmøte (video, telefon, digital)"),
    (ConsultationPlace.OTHER, "Annet sted"),
    (PersonnelCategory.PUBLIC_HEALTH_NURSE, "Helsesykepleier"),
    (PersonnelCategory.MIDWIFE, "Jordmor"),
    (PersonnelCategory.DOCTOR, "Lege"),
    (PersonnelCategory.PHYSIOTHERAPIST, "Fysioterapeut"),
    (PersonnelCategory.NURSE, "Sykepleier"),
    (PersonnelCategory.PSYCHOLOGIST, "Psykolog"),
    (PersonnelCategory.NUTRITIONIST, "Ernæringsfysiolog"),
    (PersonnelCategory.OTHER, "Annet helsepersonell"),
    (ConsultationStatus.COMPLETED, "Konsultasjon gjennomført"),
    (ConsultationStatus.DID_NOT_ATTEND, "Ikke møtt"),
    (ConsultationStatus.CANCELLED_BY_SERVICE, "Avbestilt/utsatt av tjenesten"),
    (ConsultationStatus.CANCELLED_BY_USER, "Avbestilt/utsatt av bruker"),
    (BreastfeedingStatus.EXCLUSIVE, "Fullt ammet"),
    (BreastfeedingStatus.PARTIAL, "Delvis ammet"),
    (BreastfeedingStatus.NONE, "Ikke ammet"),
    (Theme.INFORMATION_AND_CONSENT, "1 Informasjon og samtykke"),
    (Theme.FAMILY_AND_NETWORK, "2 Familie og nettverk"),
    (Theme.SLEEP, "3 Søvn"),
    (Theme.NUTRITION, "4 Ernæring"),
    (Theme.DENTAL_HEALTH, "5 Tannhelse"),
    (Theme.GROWTH_AND_DEVELOPMENT, "6 Vekst og utvikling"),
    (Theme.PHYSICAL_HEALTH, "7 Fysisk helse"),
    (Theme.VISION, "8 Syn"),
    (Theme.HEARING, "9 Hørsel"),
    (Theme.LANGUAGE, "10 Språk"),
    (Theme.MENTAL_HEALTH, "11 Psykisk helse"),
    (Theme.COPING_AND_WELL_BEING, "12 Mestring og trivsel"),
    (Theme.RELATIONS_AND_INTERACTION, "13 Relasjoner og samspill"),
    (Theme.SEXUAL_HEALTH, "14 Seksuell helse"),
    (Theme.BULLYING, "15 Mobbing"),
    (Theme.VIOLENCE_AND_ABUSE, "16 Vold og overgrep"),
    (Theme.ENVIRONMENT_AND_SAFETY, "17 Miljø og sikkerhet"),
    (Theme.TOBACCO_AND_SUBSTANCES, "18 Tobakk og rusmidler"),
    (Assessment.OK, "OK (veiledet/observert, alt ok)"),
    (Assessment.NOT_ADDRESSED, "Ikke tatt opp"),
    (Assessment.FOLLOW_UP_NEXT, "Følges opp i neste konsultasjon"),
    (Assessment.EXTRA_CONSULTATION, "Ekstra konsultasjon"),
    (Assessment.REFERRED, "Henvist"),
    (Assessment.COOPERATION, "Tverrfaglig samarbeid med eksterne"),
    (ExtraConsultationKind.DROP_IN, "Drop-in"),
    (ExtraConsultationKind.UNPLANNED, "Ikke-planlagt konsultasjon"),
    (ExtraConsultationKind.PLANNED_EXTRA, "Planlagt ekstra konsultasjon"),
    (ReferralTarget.OTHER_MUNICIPAL_SERVICE, "Andre kommunale tjenester"),
    (ReferralTarget.OUTSIDE_MUNICIPALITY, "Tjenester utenfor kommunen"),
    (CooperationPartner.KINDERGARTEN, "Barnehage"),
    (CooperationPartner.SCHOOL, "Skole"),
    (CooperationPartner.PPT, "PPT"),
    (CooperationPartner.MENTAL_HEALTH, "Psykisk helse"),
    (CooperationPartner.GENERAL_PRACTITIONER, "Fastlege"),
    (CooperationPartner.PHYSIOTHERAPIST, "Fysioterapeut"),
    (CooperationPartner.SPECIALIST_HEALTH_SERVICE, "Spesialisthelsetjenesten"),
    (CooperationPartner.OTHER, "Annen samarbeidspartner"),
    (LengthUnit.CM, "centimeter"),
    (LengthUnit.MM, "millimeter"),
    (MassUnit.KG, "kilogram"),
    (MassUnit.G, "gram"),
)

# Keyed by (code list, value): StrEnum members of different lists with the same value
# ("other", "home", "school" ...) are equal as strings, so the member alone is no key.
NORWEGIAN_LABELS: dict[tuple[type[StrEnum], str], str] = {
    (type(member), member.value): label for member, label in _LABEL_ROWS
}


def norwegian_label(member: StrEnum) -> str:
    """The Norwegian term for a code (``KeyError`` if a code has none: a bug here)."""
    return NORWEGIAN_LABELS[(type(member), member.value)]
