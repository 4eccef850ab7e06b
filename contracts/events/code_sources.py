"""Where each code list of the contract comes from, for docs/CONTRACTS.md.

For every list: the national code list whose values go on the wire, where one was found,
or the statement that none was (then the wire values are the contract's own English
slugs, the Norwegian terms are the source's, and a later move to national values goes
through :mod:`contracts.events.migrations`). Codes are never made up here: a list whose
national values could not be read from a source we can cite keeps its slugs, and says so.

Searched (December 2026): the seeds (the working groups' reports for HST and KAD/ØHD and
the register's own documents), volven.no as cited by them, Helsedirektoratet's and FHI's
pages, and public code repositories (HL7 Norway's FHIR code systems).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from contracts.events.codes import (
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
)

__all__ = ["CODE_SOURCES", "CodeSource", "code_source"]

_HST_PROPOSAL = (
    "The working group's proposal for HST reporting to KPR (Helsedirektoratet; the seed "
    "report's tables)"
)
_NO_NATIONAL_LIST = "No national code list with code values was found; the wire values are slugs."


@dataclass(frozen=True)
class CodeSource:
    """``national``: the national list whose values are on the wire (None: slugs).
    ``source``: where the meanings and Norwegian terms come from. ``note``: what is
    missing or to be checked."""

    national: str | None
    source: str
    note: str = ""


CODE_SOURCES: Mapping[type[StrEnum], CodeSource] = MappingProxyType(
    {
        CorrectionKind: CodeSource(
            None,
            "The register's continuous-reporting correction codes N / M / T / C "
            "(docs/DOMAIN.md); each slug's letter is in its Norwegian term.",
            "The letters are the register's, not a Volven list; the slugs stay.",
        ),
        Sex: CodeSource(
            "Volven 3101 Kjønn (OID 2.16.578.1.12.4.1.1.3101)",
            "volven.no; the values 0, 1, 2, 9 as published in public implementations of "
            "the list (two independent code bases agree).",
            "Replaces the version 1 slugs female / male / unknown: see "
            "[Code changes and cut-off dates](#code-changes-and-cut-off-dates).",
        ),
        CodeSystem: CodeSource(
            None,
            "The names of the two diagnosis code systems (ICPC-2, ICD-10); the codes "
            "themselves are checked against the lists in contracts/data.",
            "Volven numbers the systems themselves (ICD-10: 7110); this field names which "
            "one a code belongs to, so the names stay.",
        ),
        CounterpartCategory: CodeSource(
            None,
            'Volven 7300 "Ut til" (OID 2.16.578.1.12.4.1.1.7300), by meaning: the KAD/ØHD '
            "working group names it for both referring unit and discharged-to.",
            "The list's code values could not be read from any source we can cite "
            "(volven.no itself, cited by the seed, was not available; no public copy "
            "found), so the categories keep their slugs. Moving to the 7300 values is a "
            "code migration with a cut-off, once they are confirmed.",
        ),
        ServiceArea: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        ProgrammeConsultation: CodeSource(
            None,
            "The national guideline's consultation programme (helsestasjons- og "
            "skolehelsetjenesten) and " + _HST_PROPOSAL + ".",
            "The seed proposes a new national list for the programme consultations; it is "
            "not published with code values.",
        ),
        ConsultationForm: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        ConsultationPlace: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        PersonnelCategory: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        ConsultationStatus: CodeSource(
            None,
            _HST_PROPOSAL + ' ("Statuskode per konsultasjon").',
            "Proposed as a new national list; not published with code values.",
        ),
        BreastfeedingStatus: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        Theme: CodeSource(
            None,
            _HST_PROPOSAL + ": the 18 themes, numbered 1-18 (the number is in each "
            "Norwegian term).",
            "The seed asks for the themes to be published on Volven (today under OID 9508 "
            "Helseundersøkelse, to be updated); until then the slugs stay.",
        ),
        Assessment: CodeSource(
            None,
            _HST_PROPOSAL + ' ("Vurderingskoder pr tema").',
            "Proposed as a new national list; not published with code values.",
        ),
        ExtraConsultationKind: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        ReferralTarget: CodeSource(None, _HST_PROPOSAL + ".", _NO_NATIONAL_LIST),
        CooperationPartner: CodeSource(
            None,
            _HST_PROPOSAL + " (the partners it names for cross-disciplinary cooperation).",
            "The seed asks whether a list for the partners is needed; none exists.",
        ),
        LengthUnit: CodeSource(None, "SI unit symbols (UCUM agrees for cm and mm).", ""),
        MassUnit: CodeSource(None, "SI unit symbols (UCUM agrees for kg and g).", ""),
    }
)


def code_source(code_list: type[StrEnum]) -> CodeSource:
    """The source of ``code_list`` (``KeyError`` for a list without one: a bug here)."""
    return CODE_SOURCES[code_list]
