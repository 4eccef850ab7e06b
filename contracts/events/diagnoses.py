"""Diagnosis code lists (ICPC-2, ICD-10) and the check of one stated (system, code) pair.

The lists ship as package data (``contracts/data/ICPC2.json``, ``ICD10.json``, from
navikt/diagnosekoder, MIT, see ``contracts/data/SOURCE.md``). They change every January:
:func:`load_code_lists` reads a newer year's files from a directory, and the result can be
passed to :func:`contracts.events.parse_event` (``code_lists=``) without touching the
package.

Accepted forms:

- ICD-10 with or without the dot (``J18.9`` or ``J189``); stored without it, as the list is.
- ICPC-2 diagnosis and symptom codes from the list (``R74``).
- ICPC-2 process codes 30-69, which the list leaves out, by pattern: ``-30`` ... ``-69``,
  or with a chapter letter (``A-30``, ``A30``); stored as ``-30`` or ``A30``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum, unique
from functools import cache
from pathlib import Path

from contracts.errors import ContractViolation
from contracts.events._data import read_package_data

__all__ = [
    "ICD10_FILE",
    "ICPC2_FILE",
    "CodeSystem",
    "DiagnosisCodeLists",
    "default_code_lists",
    "load_code_lists",
    "normalise_diagnosis_code",
]

ICPC2_FILE = "ICPC2.json"
ICD10_FILE = "ICD10.json"

_ICPC2_CHAPTERS = frozenset("ABDFHKLNPRSTUWXYZ")
_DIGITS = frozenset("0123456789")


@unique
class CodeSystem(StrEnum):
    """The diagnosis code system a code is stated in: always stated, per code."""

    ICPC2 = "ICPC-2"
    """International Classification of Primary Care, 2nd ed. (GPs, legevakt)."""
    ICD10 = "ICD-10"
    """International Classification of Diseases, 10th revision (hospitals)."""


@dataclass(frozen=True, slots=True)
class DiagnosisCodeLists:
    """The valid codes of each system, as frozensets for constant-time lookups."""

    icpc2: frozenset[str]
    icd10: frozenset[str]
    texts: dict[tuple[CodeSystem, str], str]

    def codes(self, system: CodeSystem) -> frozenset[str]:
        return self.icpc2 if system is CodeSystem.ICPC2 else self.icd10

    def text(self, system: CodeSystem, code: str) -> str | None:
        """The Norwegian text of a listed code, or ``None`` (process codes, unknown codes)."""
        return self.texts.get((system, code))


def _parse_list(
    text: str, system: CodeSystem
) -> tuple[frozenset[str], dict[tuple[CodeSystem, str], str]]:
    rows = json.loads(text)
    texts = {(system, str(row["code"])): str(row["text"]) for row in rows}
    return frozenset(code for _, code in texts), texts


def _build(icpc2_text: str, icd10_text: str) -> DiagnosisCodeLists:
    icpc2, icpc2_texts = _parse_list(icpc2_text, CodeSystem.ICPC2)
    icd10, icd10_texts = _parse_list(icd10_text, CodeSystem.ICD10)
    return DiagnosisCodeLists(icpc2=icpc2, icd10=icd10, texts=icpc2_texts | icd10_texts)


def load_code_lists(directory: Path) -> DiagnosisCodeLists:
    """Read ``ICPC2.json`` and ``ICD10.json`` (``[{"code": ..., "text": ...}]``) from ``directory``.

    Raises ``OSError`` if a file is missing and ``ValueError`` / ``KeyError`` if one is
    not in that shape: a configuration error, found at start-up.
    """
    return _build(
        (directory / ICPC2_FILE).read_text(encoding="utf-8"),
        (directory / ICD10_FILE).read_text(encoding="utf-8"),
    )


@cache
def default_code_lists() -> DiagnosisCodeLists:
    """The lists shipped with the package, read once."""
    return _build(read_package_data(ICPC2_FILE), read_package_data(ICD10_FILE))


def _icpc2_process_code(code: str) -> str | None:
    """The stored form of an ICPC-2 process code (30-69), or ``None`` if it is not one."""
    letter = ""
    rest = code
    if rest and rest[0] in _ICPC2_CHAPTERS:
        letter, rest = rest[0], rest[1:]
    dashed = rest.startswith("-")
    if dashed:
        rest = rest[1:]
    if not (letter or dashed) or len(rest) != 2 or not _DIGITS.issuperset(rest):
        return None
    if not 30 <= int(rest) <= 69:
        return None
    return f"{letter}{rest}" if letter else f"-{rest}"


def _icd10_without_dot(code: str) -> str:
    if len(code) > 4 and code[3] == ".":
        return code[:3] + code[4:]
    return code


def normalise_diagnosis_code(system: CodeSystem, code: str, lists: DiagnosisCodeLists) -> str:
    """Return the stored form of ``code`` if it is valid in ``system``.

    Raises :class:`ContractViolation` with rule ``diagnosis-wrong-system`` when the code is
    unknown in the stated system but valid in the other one, and ``diagnosis-unknown-code``
    otherwise.
    """
    candidate = code.strip().upper()
    if system is CodeSystem.ICD10:
        stored = _icd10_without_dot(candidate)
        if stored in lists.icd10:
            return stored
        if candidate in lists.icpc2 or _icpc2_process_code(candidate) is not None:
            raise ContractViolation(
                "the code is an ICPC-2 code but is stated as ICD-10",
                rule="diagnosis-wrong-system",
            )
    else:
        if candidate in lists.icpc2:
            return candidate
        process = _icpc2_process_code(candidate)
        if process is not None:
            return process
        if _icd10_without_dot(candidate) in lists.icd10:
            raise ContractViolation(
                "the code is an ICD-10 code but is stated as ICPC-2",
                rule="diagnosis-wrong-system",
            )
    raise ContractViolation(
        f"the code is not on the {system.value} code list", rule="diagnosis-unknown-code"
    )
