"""National ids, D-numbers, synthetic test ids, organisation numbers, HER-ids, municipalities."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.no import fodselsnummer, orgnr

from contracts.errors import ContractViolation
from contracts.events.identifiers import (
    JUNK_ORG_NUMBERS,
    NationalIdKind,
    check_her_id,
    check_municipality,
    check_municipality_in_use,
    check_org_number,
    municipality_names,
    parse_national_id,
    synthetic_national_id,
)
from contracts.events.municipalities import municipality_today, number_in_use, numbers_covered_by

TODAY = date(2026, 1, 1)
# An ordinary-form number for someone born in 1855 (individual numbers 500-749 with a year
# >= 54 mean the 1800s): valid, but no living person; the tests use no real identities.
BORN_1855 = "15105560017"


def _with_check_digits(first_nine: str) -> str | None:
    """The full 11-digit number for nine digits, or None if no valid check digits exist."""
    first = fodselsnummer.calc_check_digit1(first_nine)
    second = fodselsnummer.calc_check_digit2(first_nine + first)
    if len(first) != 1 or len(second) != 1:
        return None
    return first_nine + first + second


def _rule(call: object) -> str:
    assert callable(call)
    with pytest.raises(ContractViolation) as caught:
        call()
    return caught.value.rule


def test_an_ordinary_birth_number_states_its_birth_date() -> None:
    """Day, month and the century from the individual number: 1855-10-15."""
    assert fodselsnummer.is_valid(BORN_1855)
    parsed = parse_national_id(BORN_1855, today=TODAY)
    assert parsed.kind is NationalIdKind.BIRTH_NUMBER
    assert parsed.birth_date == date(1855, 10, 15)
    assert not parsed.is_d_number


def test_d_numbers_add_40_to_the_day() -> None:
    number = _with_check_digits("551055600")
    assert number is not None
    parsed = parse_national_id(number, today=TODAY)
    assert parsed.kind is NationalIdKind.D_NUMBER
    assert parsed.is_d_number
    assert parsed.birth_date == date(1855, 10, 15)


@pytest.mark.parametrize("month_offset", [40, 80])
def test_synthetic_ids_add_40_or_80_to_the_month(month_offset: int) -> None:
    """NAV (month + 40) and Tenor (month + 80) test identities are recognised as synthetic."""
    candidates = (_with_check_digits(f"15{10 + month_offset}55{s}") for s in range(600, 700))
    number = next(n for n in candidates if n is not None)
    parsed = parse_national_id(number, today=TODAY)
    assert parsed.kind is NationalIdKind.SYNTHETIC
    assert parsed.birth_date == date(1855, 10, 15)


def test_stdnum_alone_does_not_know_tenor_ids() -> None:
    """Why the wrapper exists: stdnum rejects month + 80 and reads month + 40 as a real H-number."""
    tenor = synthetic_national_id(date(1986, 10, 15), female=True, serial=1)
    assert not fodselsnummer.is_valid(tenor)
    assert parse_national_id(tenor, today=TODAY).kind is NationalIdKind.SYNTHETIC


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("1510556001", "national-id-format"),
        ("151055600171", "national-id-format"),
        ("1510556001a", "national-id-format"),
        ("151055 60017", "national-id-format"),
        ("15105560027", "national-id-checksum"),
        ("15105560018", "national-id-checksum"),
    ],
)
def test_malformed_national_ids_are_refused(value: str, rule: str) -> None:
    assert _rule(lambda: parse_national_id(value, today=TODAY)) == rule


def test_impossible_dates_and_fh_numbers_are_refused() -> None:
    """31 February, day >= 80 (FH-numbers) and month 13 do not encode a birth date."""
    checked = 0
    for day_month in ("3102", "8510", "1513", "0000"):
        for serial in range(600, 610):
            number = _with_check_digits(f"{day_month}55{serial}")
            if number is None:
                continue
            assert _rule(lambda n=number: parse_national_id(n, today=TODAY)) == (
                "national-id-birth-date"
            )
            checked += 1
            break
    assert checked == 4


def test_a_birth_date_after_today_is_refused() -> None:
    number = synthetic_national_id(date(2030, 5, 5), female=False, serial=3)
    assert _rule(lambda: parse_national_id(number, today=TODAY)) == "national-id-future"
    assert parse_national_id(number, today=date(2030, 5, 5)).birth_date == date(2030, 5, 5)


@given(
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)),
    female=st.booleans(),
    serial=st.integers(min_value=0, max_value=10_000),
)
def test_every_generated_synthetic_id_is_valid_and_synthetic(
    birth: date, female: bool, serial: int
) -> None:
    """Property: the generator's ids pass both check digits, state the birth date and the sex."""
    number = synthetic_national_id(birth, female=female, serial=serial)
    parsed = parse_national_id(number, today=TODAY)
    assert parsed.kind is NationalIdKind.SYNTHETIC
    assert parsed.birth_date == birth
    assert (int(number[8]) % 2 == 0) == female


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_any_eleven_digits_either_parse_or_give_a_named_rule(value: str) -> None:
    """Property: no input makes the parser crash; the outcome agrees with stdnum's check digits."""
    valid = value[9] == fodselsnummer.calc_check_digit1(value) and value[
        10
    ] == fodselsnummer.calc_check_digit2(value)
    if not valid:
        with pytest.raises(ContractViolation) as caught:
            parse_national_id(value, today=TODAY)
        assert caught.value.rule in {"national-id-checksum", "national-id-format"}
        assert value not in caught.value.description
        return
    try:
        parsed = parse_national_id(value, today=TODAY)
    except ContractViolation as error:
        rule = error.rule
        assert rule.startswith("national-id-")
    else:
        assert value[9] == fodselsnummer.calc_check_digit1(value)
        assert value[10] == fodselsnummer.calc_check_digit2(value)
        assert parsed.birth_date <= TODAY


def test_default_test_org_numbers_are_valid() -> None:
    for value in ("310000000", "310000027", "310000035", "310000043", "310000051"):
        assert check_org_number(value) == value
        assert orgnr.is_valid(value)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("999999999", "org-number-junk"),
        ("000000000", "org-number-junk"),
        ("123456789", "org-number-junk"),
        ("310000001", "org-number-checksum"),
        ("99999999", "org-number-format"),
        ("999 999 999", "org-number-format"),
        ("Oslo kommune", "org-number-format"),
    ],
)
def test_bad_org_numbers_are_refused(value: str, rule: str) -> None:
    assert _rule(lambda: check_org_number(value)) == rule


def test_junk_list_holds_numbers_that_pass_mod_11() -> None:
    """The junk list matters because some placeholders pass the checksum (999999999 does)."""
    assert orgnr.is_valid("999999999")
    assert "999999999" in JUNK_ORG_NUMBERS


@pytest.mark.parametrize("value", [1, 90001, 2**31 - 1])
def test_her_ids_are_positive(value: int) -> None:
    assert check_her_id(value) == value


@pytest.mark.parametrize("value", [0, -5, 2**31])
def test_her_ids_outside_the_range_are_refused(value: int) -> None:
    assert _rule(lambda: check_her_id(value)) == "her-id-range"


def test_the_current_municipality_list_is_the_one_since_2024() -> None:
    """357 municipalities in use today; Haram (re-established 2024) in; every number that
    was in use since 2017 is known, format errors are told apart."""
    names = municipality_names()
    assert len(names) == 357
    assert names["4601"] == "Bergen"
    assert names["1580"] == "Haram"
    assert all(len(number) == 4 and number.isdigit() for number in names)
    assert check_municipality("4601") == "4601"
    assert check_municipality("3024") == "3024"  # Bærum 2020-2023: known, judged by date
    assert check_municipality("1201") == "1201"  # Bergen until 2019
    assert _rule(lambda: check_municipality("0000")) == "municipality-unknown"
    assert _rule(lambda: check_municipality("1301")) == "municipality-unknown"
    assert _rule(lambda: check_municipality("301")) == "municipality-format"
    assert _rule(lambda: check_municipality("03O1")) == "municipality-format"


@pytest.mark.parametrize(
    ("number", "in_use", "not_in_use", "today"),
    [
        ("0301", [2017, 2020, 2024, 2026], [], "0301"),  # Oslo: unchanged
        ("1201", [2017, 2019], [2020, 2024], "4601"),  # Bergen: renumbered in the 2020 merge
        ("4601", [2020, 2026], [2017, 2019], "4601"),
        ("1247", [2019], [2020], "4627"),  # Askøy: renumbered 2020
        ("1507", [2020, 2023], [2019, 2024], "1508"),  # Ålesund 2020-2023, split 2024
        ("1580", [2024], [2023], "1580"),  # Haram, split off Ålesund 2024
        ("1534", [2019], [2020, 2024], "1508"),  # Haram before the 2020 merge
        ("3001", [2020, 2023], [2019, 2024], "3101"),  # Halden: new county number 2024
        ("1601", [2017], [2018], "5001"),  # Trondheim: Trøndelag formed 2018
    ],
)
def test_a_municipality_number_is_in_use_for_its_years_and_counts_under_todays(
    number: str, in_use: list[int], not_in_use: list[int], today: str
) -> None:
    for year in in_use:
        assert check_municipality_in_use(number, date(year, 6, 1)) == number
    for year in not_in_use:
        rule = _rule(lambda year=year: check_municipality_in_use(number, date(year, 6, 1)))
        assert rule == "municipality-not-in-use"
    assert municipality_today(number) == today
    assert number in numbers_covered_by(today)


def test_todays_number_maps_back_to_the_one_in_use_on_a_date() -> None:
    assert number_in_use("4601", date(2018, 3, 1)) == "1201"
    assert number_in_use("4626", date(2019, 3, 1)) == "1259"  # Øygarden, not Fjell or Sund
    assert number_in_use("1580", date(2022, 3, 1)) == "1507"  # Haram inside Ålesund then
    assert number_in_use("0301", date(2017, 3, 1)) == "0301"
    assert number_in_use("3101", date(2026, 3, 1)) == "3101"
    assert numbers_covered_by("4601") == {"1201", "4601"}
