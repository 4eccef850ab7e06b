"""Code values that changed on the wire, and until when the old ones are accepted.

When a code list moves to other values (slugs to a national code list), an EPJ vendor
needs time to ship the change, and the register must not silently accept the old values
for ever. So each change is a :class:`CodeMigration`: the old value -> the new one, and a
cut-off. An event *received* before the cut-off (the receiver's clock when it validates
the event, ``parse_event(now=...)``) may still carry the old value: it is read as the new
one, and stored as the new one. From the cut-off on, the old value is refused with the
migration's own rule (``sex-code-retired``), not with a generic "not in the code list",
so a vendor's error log says what happened and what to send instead. The receipt time
and not the event's clinical time decides: a back-fill of 2019 sent after the cut-off
must use the new values too.

The migrations are rendered in docs/CONTRACTS.md ("Code changes and cut-off dates").
Pure data and one pure function; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from zoneinfo import ZoneInfo

from contracts.errors import ContractViolation
from contracts.events.codes import Sex

__all__ = ["MIGRATIONS", "SEX_TO_VOLVEN_3101", "CodeMigration"]

_OSLO = ZoneInfo("Europe/Oslo")


@dataclass(frozen=True)
class CodeMigration:
    """One code list's move to new values. ``renamed`` maps each retired value to its
    replacement; events received from ``retired_from`` on are refused with ``rule``."""

    code_list: type[StrEnum]
    field: str
    renamed: Mapping[str, StrEnum]
    retired_from: datetime
    rule: str
    reason: str

    def current(self, value: object, received_at: datetime) -> object:
        """``value`` as the code list has it now: a retired value received before the
        cut-off becomes its replacement; after it, :class:`ContractViolation` with
        :attr:`rule`. Any other value is returned as it is, for the list to judge."""
        if not isinstance(value, str) or value not in self.renamed:
            return value
        if received_at >= self.retired_from:
            replacement = self.renamed[value].value
            raise ContractViolation(
                f"the value was retired on {self.retired_from.date().isoformat()}; "
                f"send the {self.code_list.__name__} code {replacement!r} instead",
                field=self.field,
                rule=self.rule,
            )
        return self.renamed[value]


#: Schema version 1 sent sex as English slugs; the national list is Volven 3101.
SEX_TO_VOLVEN_3101 = CodeMigration(
    code_list=Sex,
    field="person.sex",
    renamed=MappingProxyType({"female": Sex.FEMALE, "male": Sex.MALE, "unknown": Sex.UNKNOWN}),
    retired_from=datetime(2027, 7, 1, tzinfo=_OSLO),
    rule="sex-code-retired",
    reason="sex moves from English slugs to the national code list Volven 3101 (Kjønn)",
)

#: Every migration, oldest first.
MIGRATIONS: tuple[CodeMigration, ...] = (SEX_TO_VOLVEN_3101,)
