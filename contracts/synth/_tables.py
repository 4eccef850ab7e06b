"""What synthetic events are drawn from: units and the municipalities they serve, source
systems, diagnoses, referral and discharge categories, the consultation programmes with
their ages, and the defaults of :class:`~contracts.synth.SynthOptions`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from contracts.events.codes import (
    ConsultationStatus,
    CounterpartCategory,
    ProgrammeConsultation,
)

DEFAULT_SENDER_HER_ID: Final = 90001
DEFAULT_SENDER_ORG_NUMBER: Final = "310000000"
#: Valid (mod-11) test organisation numbers in the 31x range, which is never assigned.
DEFAULT_UNIT_ORG_NUMBERS: Final = ("310000000", "310000027", "310000035", "310000043", "310000051")
#: The end of the generated period: fixed, so the output for a seed never changes.
DEFAULT_UNTIL: Final = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
EARLIEST: Final = datetime(2017, 1, 1, 8, 0, tzinfo=UTC)
EVENT_KINDS: Final = frozenset({"kad", "hst"})

# Service municipalities per unit, by position; a tuple of several is an inter-municipal unit.
UNIT_MUNICIPALITIES: Final = (
    ("0301",),
    ("4601", "4627", "4626"),
    ("5001", "5028", "5031"),
    ("3403", "3411", "3412", "3413"),
    ("1103", "1108", "1124"),
    ("5501",),
    ("1804", "1841"),
)
SOURCE_SYSTEMS: Final = (
    "Visma HsPro 8.4",
    "EG Infodoc 2025.2",
    "CGM Helsestasjon 4.1",
    "DIPS Arena 24",
)

KAD_DIAGNOSES: Final = (
    ("ICPC-2", "R81"),
    ("ICPC-2", "U71"),
    ("ICPC-2", "K77"),
    ("ICPC-2", "R95"),
    ("ICPC-2", "D73"),
    ("ICPC-2", "S76"),
    ("ICPC-2", "P76"),
    ("ICPC-2", "A03"),
    ("ICPC-2", "K78"),
    ("ICPC-2", "T90"),
    ("ICPC-2", "-31"),
    ("ICD-10", "J18.9"),
    ("ICD-10", "N390"),
    ("ICD-10", "I509"),
    ("ICD-10", "J441"),
    ("ICD-10", "A099"),
    ("ICD-10", "L039"),
    ("ICD-10", "E119"),
    ("ICD-10", "F329"),
    ("ICD-10", "R074"),
    ("ICD-10", "I489"),
    ("ICD-10", "R55"),
)
REFERRED_BY: Final = (
    (CounterpartCategory.EMERGENCY_PRIMARY_CARE, 5),
    (CounterpartCategory.GENERAL_PRACTITIONER, 4),
    (CounterpartCategory.HOSPITAL, 2),
    (CounterpartCategory.NURSING_HOME, 1),
    (CounterpartCategory.HOME_WITH_HOME_CARE, 1),
)
DISCHARGED_TO: Final = (
    (CounterpartCategory.HOME, 10),
    (CounterpartCategory.HOME_WITH_HOME_CARE, 4),
    (CounterpartCategory.NURSING_HOME, 2),
    (CounterpartCategory.HOSPITAL, 3),
    (CounterpartCategory.DIED, 1),
)
# The child-health-station programme: consultation and age in days at which it falls due.
CHILD_PROGRAMME: Final = (
    (ProgrammeConsultation.HOME_VISIT_7_10_DAYS, 8),
    (ProgrammeConsultation.WEEKS_4, 28),
    (ProgrammeConsultation.WEEKS_6, 42),
    (ProgrammeConsultation.MONTHS_2, 61),
    (ProgrammeConsultation.MONTHS_3, 91),
    (ProgrammeConsultation.MONTHS_4, 122),
    (ProgrammeConsultation.MONTHS_5, 152),
    (ProgrammeConsultation.MONTHS_6, 183),
    (ProgrammeConsultation.MONTHS_8, 244),
    (ProgrammeConsultation.MONTHS_10, 304),
    (ProgrammeConsultation.MONTHS_12, 365),
    (ProgrammeConsultation.MONTHS_15, 456),
    (ProgrammeConsultation.MONTHS_17_18, 532),
    (ProgrammeConsultation.YEARS_2, 730),
    (ProgrammeConsultation.YEARS_4, 1461),
)
# School consultations and the age in years at which they fall (school start at 6).
SCHOOL_PROGRAMME: Final = (
    (ProgrammeConsultation.SCHOOL_START, 6),
    (ProgrammeConsultation.GRADE_3, 8),
    (ProgrammeConsultation.GRADE_6, 11),
    (ProgrammeConsultation.GRADE_8, 13),
    (ProgrammeConsultation.GRADE_10, 15),
    (ProgrammeConsultation.UPPER_SECONDARY_1, 16),
)
STATUSES: Final = (
    (ConsultationStatus.COMPLETED, 88),
    (ConsultationStatus.DID_NOT_ATTEND, 5),
    (ConsultationStatus.CANCELLED_BY_SERVICE, 3),
    (ConsultationStatus.CANCELLED_BY_USER, 4),
)
