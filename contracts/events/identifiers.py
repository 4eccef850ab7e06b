"""Norwegian identifiers: national identity numbers, organisation numbers, HER-ids, municipalities.

The check-digit arithmetic is python-stdnum's (``stdnum.no.fodselsnummer``,
``stdnum.no.orgnr``); this module adds what the register needs on top:

- the kind of a national id: an ordinary birth number, a D-number (day + 40), or a
  **synthetic test identity** (month + 40, as NAV's test persons, or month + 80, as
  Skatteetaten's Tenor test persons). stdnum reads month + 40 as an H-number and does
  not know month + 80 at all, so the month is normalised here before its date is read.
  Real H-numbers (help numbers) share the month + 40 form; they are not official
  identities and are treated as synthetic, so production refuses them as well.
- the organisation numbers that pass mod-11 but are known junk (``999999999`` ...).
- the municipality numbers in use since 2017, and on an event's date
  (:mod:`contracts.events.municipalities`).

Every check raises :class:`contracts.errors.ContractViolation` with a stable ``rule``
name and a description that never contains the value checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum, unique

from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.no import fodselsnummer, orgnr

from contracts.errors import ContractViolation
from contracts.events.municipalities import municipalities

__all__ = [
    "JUNK_ORG_NUMBERS",
    "NationalIdKind",
    "ParsedNationalId",
    "check_her_id",
    "check_municipality",
    "check_municipality_in_use",
    "check_org_number",
    "municipality_names",
    "parse_national_id",
    "synthetic_national_id",
]

_DIGITS = frozenset("0123456789")

#: Organisation numbers that pass the mod-11 check but are placeholders, seen in the
#: register's data-quality reports ("999 999 999") or typed by people testing forms.
JUNK_ORG_NUMBERS: frozenset[str] = frozenset(
    {str(digit) * 9 for digit in range(10)} | {"123456789", "987654321", "012345678"}
)

_HER_ID_MAX = 2**31 - 1


@unique
class NationalIdKind(StrEnum):
    """What an 11-digit national identity number is."""

    BIRTH_NUMBER = "birth-number"
    """Fødselsnummer, issued by the National Population Register."""
    D_NUMBER = "d-number"
    """D-nummer (day + 40), for people without a birth number."""
    SYNTHETIC = "synthetic"
    """Test identity (month + 40 or month + 80): never a real person."""


@dataclass(frozen=True, slots=True)
class ParsedNationalId:
    """The facts a valid national id states about its holder."""

    kind: NationalIdKind
    birth_date: date
    is_d_number: bool


def _violation(description: str, *, rule: str) -> ContractViolation:
    return ContractViolation(description, rule=rule)


def parse_national_id(value: str, *, today: date) -> ParsedNationalId:
    """Check an 11-digit national id and return its kind and birth date.

    Raises :class:`ContractViolation` with rule ``national-id-format`` (not 11 digits),
    ``national-id-checksum`` (either mod-11 check digit wrong), ``national-id-birth-date``
    (no valid date, FH-number, unknown century) or ``national-id-future`` (born after
    ``today``). Whether a synthetic id is acceptable is the caller's decision.
    """
    if len(value) != 11 or not _DIGITS.issuperset(value):
        raise _violation("a national id must be exactly 11 digits", rule="national-id-format")
    if value[9] != fodselsnummer.calc_check_digit1(value) or value[
        10
    ] != fodselsnummer.calc_check_digit2(value):
        raise _violation(
            "the national id fails the mod-11 check digits", rule="national-id-checksum"
        )
    month = int(value[2:4])
    if month > 80:
        kind, normalised = NationalIdKind.SYNTHETIC, f"{value[:2]}{month - 80:02d}{value[4:]}"
    elif month > 40:
        kind, normalised = NationalIdKind.SYNTHETIC, f"{value[:2]}{month - 40:02d}{value[4:]}"
    else:
        kind, normalised = NationalIdKind.BIRTH_NUMBER, value
    is_d_number = int(value[0]) >= 4
    if is_d_number and kind is NationalIdKind.BIRTH_NUMBER:
        kind = NationalIdKind.D_NUMBER
    try:
        birth_date = fodselsnummer.get_birth_date(normalised)
    except StdnumValidationError:
        raise _violation(
            "the national id does not encode a valid birth date", rule="national-id-birth-date"
        ) from None
    if birth_date > today:
        raise _violation(
            "the national id encodes a birth date in the future", rule="national-id-future"
        )
    return ParsedNationalId(kind=kind, birth_date=birth_date, is_d_number=is_d_number)


def check_org_number(value: str) -> str:
    """Return ``value`` if it is a usable organisation number (Enhetsregisteret).

    Raises :class:`ContractViolation`: ``org-number-format`` (not 9 digits),
    ``org-number-checksum`` (fails mod-11), ``org-number-junk`` (a known placeholder).
    """
    if len(value) != 9 or not _DIGITS.issuperset(value):
        raise _violation(
            "an organisation number must be exactly 9 digits", rule="org-number-format"
        )
    if value in JUNK_ORG_NUMBERS:
        raise _violation("the organisation number is a known placeholder", rule="org-number-junk")
    # The format is checked above, so stdnum's checksum alone (without its input cleaning).
    if orgnr.checksum(value) != 0:
        raise _violation(
            "the organisation number fails the mod-11 check", rule="org-number-checksum"
        )
    return value


def check_her_id(value: int) -> int:
    """Return ``value`` if it can be a HER-id (Adresseregisteret): a positive 32-bit integer.

    Raises :class:`ContractViolation` with rule ``her-id-range``.
    """
    if not 0 < value <= _HER_ID_MAX:
        raise _violation("a HER-id must be a positive integer below 2^31", rule="her-id-range")
    return value


def municipality_names() -> dict[str, str]:
    """The municipality numbers in use today (4 digits) and their names."""
    return {n: m.name for n, m in municipalities().items() if m.current}


def check_municipality(value: str) -> str:
    """Return ``value`` if it is a municipality number in use in some year since 2017
    (whether it was in use on the event's date is :func:`check_municipality_in_use`).

    Raises :class:`ContractViolation`: ``municipality-format`` (not 4 digits) or
    ``municipality-unknown`` (on the list of no year since 2017).
    """
    if len(value) != 4 or not _DIGITS.issuperset(value):
        raise _violation(
            "a municipality number must be exactly 4 digits", rule="municipality-format"
        )
    if value not in municipalities():
        raise _violation(
            "the municipality number is on the list of no year since 2017",
            rule="municipality-unknown",
        )
    return value


def check_municipality_in_use(value: str, on: date) -> str:
    """Return ``value`` if it was in use on ``on`` (a known number, see
    :func:`check_municipality`).

    Raises :class:`ContractViolation` with rule ``municipality-not-in-use``.
    """
    known = municipalities().get(value)
    if known is None or not known.in_use(on.year):
        raise _violation(
            "the municipality number was not in use on the event's date (municipal "
            "changes take effect on 1 January: use the number of the event's year)",
            rule="municipality-not-in-use",
        )
    return value


def _individual_range(birth_year: int) -> range:
    """Individual numbers (digits 7-9) that encode the birth century."""
    if 1900 <= birth_year <= 1999:
        return range(0, 500)
    if 2000 <= birth_year <= 2039:
        return range(500, 1000)
    raise ValueError("synthetic national ids are made for birth years 1900-2039")


def synthetic_national_id(birth_date: date, *, female: bool, serial: int) -> str:
    """A valid synthetic test identity (Tenor form: month + 80) for ``birth_date``.

    ``serial`` picks among the individual numbers of the birth century (any integer;
    taken modulo the range), so different serials give different ids. The sex digit
    (the ninth) is even for ``female``. Never a real person's number: real numbers have
    months 01-12. Raises ``ValueError`` for birth years outside 1900-2039.
    """
    individuals = _individual_range(birth_date.year)
    stem = f"{birth_date.day:02d}{birth_date.month + 80:02d}{birth_date.year % 100:02d}"
    for step in range(len(individuals)):
        individual = individuals[(serial + step) % len(individuals)]
        if (individual % 2 == 0) != female:
            continue
        number = f"{stem}{individual:03d}"
        first = fodselsnummer.calc_check_digit1(number)
        if len(first) != 1:
            continue
        second = fodselsnummer.calc_check_digit2(number + first)
        if len(second) != 1:
            continue
        return number + first + second
    raise AssertionError("unreachable: every century range holds valid individual numbers")
