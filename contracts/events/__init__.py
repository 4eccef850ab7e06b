"""The event contract between EPJ systems and the register: models, validation, versions.

Three event types, told apart by ``event_type``: ``kad.admission`` and ``kad.discharge``
(two events of one KAD/ØHD stay, joined by ``stay_id``) and ``hst.consultation``.
Every event carries the envelope metadata of :class:`EventBase` and one :class:`Person`;
the national id lives only in ``event.person.national_id``.

Use :func:`parse_event` to validate (bytes or a mapping) and :func:`encode_event` to
serialise. The reference page ``docs/CONTRACTS.md`` is generated from these models.
"""

from contracts.events._common import (
    CURRENT_SCHEMA_VERSION,
    EARLIEST_EVENT_TIME,
    SCHEMA_VERSIONS,
    Environment,
    EventBase,
    Person,
    ServiceUnit,
    ValidationRules,
)
from contracts.events.codes import (
    NORWEGIAN_LABELS,
    Assessment,
    BreastfeedingStatus,
    CodeSystem,
    ConsultationForm,
    ConsultationPlace,
    ConsultationStatus,
    CooperationPartner,
    CorrectionKind,
    CounterpartCategory,
    ExtraConsultationKind,
    LengthUnit,
    MassUnit,
    PersonnelCategory,
    ProgrammeConsultation,
    ReferralTarget,
    ServiceArea,
    Sex,
    Theme,
    norwegian_label,
)
from contracts.events.diagnoses import DiagnosisCodeLists, default_code_lists, load_code_lists
from contracts.events.hst import (
    PROGRAMME_BY_SERVICE_AREA,
    HstConsultation,
    Length,
    Mass,
    Measurements,
    ThemeAssessment,
)
from contracts.events.identifiers import NationalIdKind, ParsedNationalId, parse_national_id
from contracts.events.kad import Counterpart, Diagnosis, KadAdmission, KadDischarge
from contracts.events.parse import EVENT_TYPES, Event, encode_event, parse_event

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "EARLIEST_EVENT_TIME",
    "EVENT_TYPES",
    "NORWEGIAN_LABELS",
    "PROGRAMME_BY_SERVICE_AREA",
    "SCHEMA_VERSIONS",
    "Assessment",
    "BreastfeedingStatus",
    "CodeSystem",
    "ConsultationForm",
    "ConsultationPlace",
    "ConsultationStatus",
    "CooperationPartner",
    "CorrectionKind",
    "Counterpart",
    "CounterpartCategory",
    "Diagnosis",
    "DiagnosisCodeLists",
    "Environment",
    "Event",
    "EventBase",
    "ExtraConsultationKind",
    "HstConsultation",
    "KadAdmission",
    "KadDischarge",
    "Length",
    "LengthUnit",
    "Mass",
    "MassUnit",
    "Measurements",
    "NationalIdKind",
    "ParsedNationalId",
    "Person",
    "PersonnelCategory",
    "ProgrammeConsultation",
    "ReferralTarget",
    "ServiceArea",
    "ServiceUnit",
    "Sex",
    "Theme",
    "ThemeAssessment",
    "ValidationRules",
    "default_code_lists",
    "encode_event",
    "load_code_lists",
    "norwegian_label",
    "parse_event",
    "parse_national_id",
]
