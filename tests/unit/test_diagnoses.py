"""ICPC-2 and ICD-10 code lists: shipped, complete, checked per stated system, replaceable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import ContractViolation
from contracts.events.diagnoses import (
    CodeSystem,
    default_code_lists,
    load_code_lists,
    normalise_diagnosis_code,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "diagnosis-codes"
PACKAGE_DATA = Path(__file__).resolve().parents[2] / "contracts" / "data"
LISTS = default_code_lists()


def _rule(system: CodeSystem, code: str) -> str:
    with pytest.raises(ContractViolation) as caught:
        normalise_diagnosis_code(system, code, LISTS)
    return caught.value.rule


def test_the_shipped_lists_are_complete_and_attributed() -> None:
    """708 ICPC-2 and 19,634 ICD-10 codes, with the MIT licence and the source note beside them."""
    assert len(LISTS.icpc2) == 708
    assert len(LISTS.icd10) == 19_634
    assert "NAV IT" in (PACKAGE_DATA / "LICENSE").read_text(encoding="utf-8")
    assert "navikt/diagnosekoder" in (PACKAGE_DATA / "SOURCE.md").read_text(encoding="utf-8")
    assert LISTS.text(CodeSystem.ICPC2, "R74") is not None


def test_the_package_data_equals_the_shared_source() -> None:
    """The shipped files are byte-for-byte copies of the shared code lists."""
    if not SHARED.is_dir():
        pytest.fail(f"shared code lists not found at {SHARED}")
    for name in ("ICPC2.json", "ICD10.json", "LICENSE", "SOURCE.md"):
        assert (PACKAGE_DATA / name).read_bytes() == (SHARED / name).read_bytes()


@pytest.mark.parametrize(
    ("system", "given", "stored"),
    [
        (CodeSystem.ICD10, "J18.9", "J189"),
        (CodeSystem.ICD10, "J189", "J189"),
        (CodeSystem.ICD10, "j18.9", "J189"),
        (CodeSystem.ICD10, "A33", "A33"),
        (CodeSystem.ICPC2, "R74", "R74"),
        (CodeSystem.ICPC2, "r74", "R74"),
        (CodeSystem.ICPC2, "-30", "-30"),
        (CodeSystem.ICPC2, "-69", "-69"),
        (CodeSystem.ICPC2, "A-31", "A31"),
        (CodeSystem.ICPC2, "K45", "K45"),
    ],
)
def test_valid_codes_are_stored_in_list_form(system: CodeSystem, given: str, stored: str) -> None:
    """ICD-10 with or without the dot; ICPC-2 process codes -30..-69 by pattern."""
    assert normalise_diagnosis_code(system, given, LISTS) == stored


@pytest.mark.parametrize(
    ("system", "code", "rule"),
    [
        (CodeSystem.ICPC2, "J189", "diagnosis-wrong-system"),
        (CodeSystem.ICPC2, "J18.9", "diagnosis-wrong-system"),
        (CodeSystem.ICD10, "-30", "diagnosis-wrong-system"),
        (CodeSystem.ICD10, "K77", "diagnosis-wrong-system"),
        (CodeSystem.ICPC2, "-29", "diagnosis-unknown-code"),
        (CodeSystem.ICPC2, "-70", "diagnosis-unknown-code"),
        (CodeSystem.ICPC2, "30", "diagnosis-unknown-code"),
        (CodeSystem.ICPC2, "R00", "diagnosis-unknown-code"),
        (CodeSystem.ICD10, "J18.", "diagnosis-unknown-code"),
        (CodeSystem.ICD10, "ZZZ9", "diagnosis-unknown-code"),
    ],
)
def test_invalid_codes_give_a_named_rule(system: CodeSystem, code: str, rule: str) -> None:
    assert _rule(system, code) == rule


def test_a_newer_years_lists_can_be_loaded_from_a_directory(tmp_path: Path) -> None:
    """Next January's lists load from a directory and change what is valid."""
    (tmp_path / "ICPC2.json").write_text(json.dumps([{"code": "R74", "text": "x"}]), "utf-8")
    (tmp_path / "ICD10.json").write_text(json.dumps([{"code": "U099", "text": "y"}]), "utf-8")
    newer = load_code_lists(tmp_path)
    assert normalise_diagnosis_code(CodeSystem.ICD10, "U09.9", newer) == "U099"
    with pytest.raises(ContractViolation):
        normalise_diagnosis_code(CodeSystem.ICPC2, "R81", newer)


def test_a_missing_list_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ICPC2"):
        load_code_lists(tmp_path)
