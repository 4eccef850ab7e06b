"""Bytes or a mapping to an event and back, with schema-version dispatch.

``parse_event`` is the one way in: it reads ``schema_version`` first and refuses versions
this code does not know (:class:`UnknownSchemaVersion`), then validates the event against
that version's models. Every failure is a :class:`ContractViolation` whose ``field`` is the
dotted path of the first offending field and whose ``rule`` is the stable rule name; the
description lists every violation found (field, rule, why), never a value.

``encode_event`` is deterministic (sorted keys, orjson) so equal events encode to equal
bytes, and ``parse_event(encode_event(e)) == e`` for every valid event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Final

import orjson
from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from contracts.errors import ContractViolation, UnknownSchemaVersion
from contracts.events._common import SCHEMA_VERSIONS, Environment, ValidationRules
from contracts.events.diagnoses import DiagnosisCodeLists
from contracts.events.hst import HstConsultation
from contracts.events.kad import KadAdmission, KadDischarge

__all__ = ["EVENT_TYPES", "Event", "encode_event", "event_adapter", "parse_event"]

Event = Annotated[KadAdmission | KadDischarge | HstConsultation, Field(discriminator="event_type")]
"""Any event, told apart by ``event_type``."""

EVENT_TYPES: Final[dict[str, type[KadAdmission | KadDischarge | HstConsultation]]] = {
    "kad.admission": KadAdmission,
    "kad.discharge": KadDischarge,
    "hst.consultation": HstConsultation,
}

_ADAPTERS: Final[dict[int, TypeAdapter[KadAdmission | KadDischarge | HstConsultation]]] = {
    1: TypeAdapter(Event),
}
assert frozenset(_ADAPTERS) == SCHEMA_VERSIONS

# Pydantic's own error types, renamed to the contract's rule vocabulary.
_RULE_NAMES: Final[dict[str, str]] = {
    "missing": "required",
    "extra_forbidden": "unknown-field",
    "union_tag_invalid": "unknown-event-type",
    "union_tag_not_found": "required",
    "literal_error": "not-allowed-value",
    "enum": "not-in-code-list",
    "timezone_aware": "time-without-offset",
}
# A last guard: no run of 11 digits (a national id) ever leaves in a description.
_ELEVEN_DIGITS: Final = re.compile(r"\d{11}")
# Field names come from the input too (an unknown key could be anything, even a national
# id): only plain names pass through into `field`; others are replaced.
_PLAIN_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_LONG_DIGIT_RUN: Final = re.compile(r"\d{6}")
_MAX_LISTED = 10


def event_adapter(
    schema_version: int,
) -> TypeAdapter[KadAdmission | KadDischarge | HstConsultation]:
    """The validator of one known schema version (``KeyError`` for an unknown one)."""
    return _ADAPTERS[schema_version]


def _safe_part(part: str | int) -> str:
    if isinstance(part, int):
        return str(part)
    if _PLAIN_NAME.fullmatch(part) and not _LONG_DIGIT_RUN.search(part):
        return part
    return "<unnamed>"


def _field_and_rule(error: ErrorDetails) -> tuple[str, str]:
    parts = list(error["loc"])
    if parts and parts[0] in EVENT_TYPES:
        parts = parts[1:]  # the discriminated union's tag, not a field
    location = [_safe_part(part) for part in parts]
    context = error.get("ctx") or {}
    refinement = context.get("field")
    if isinstance(refinement, str) and refinement:
        location.append(refinement)
    error_type = error["type"]
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        location = ["event_type"]
    rule = _RULE_NAMES.get(error_type, error_type.replace("_", "-"))
    return ".".join(location), rule


def _violation(error: ValidationError) -> ContractViolation:
    details = error.errors(include_url=False, include_input=False)
    described = []
    for detail in details[:_MAX_LISTED]:
        field, rule = _field_and_rule(detail)
        described.append(f"{field or '(event)'}: {detail['msg']} [{rule}]")
    if len(details) > _MAX_LISTED:
        described.append(f"... and {len(details) - _MAX_LISTED} more")
    first_field, first_rule = _field_and_rule(details[0])
    description = _ELEVEN_DIGITS.sub("<redacted>", "; ".join(described))
    return ContractViolation(
        f"the event breaks the contract: {description}", field=first_field, rule=first_rule
    )


def _load(data: bytes | bytearray | memoryview | Mapping[str, object]) -> Mapping[str, object]:
    if isinstance(data, Mapping):
        return data
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ContractViolation("the event is not valid JSON", rule="not-json") from None
    if not isinstance(raw, dict):
        raise ContractViolation("the event is not a JSON object", rule="not-an-object")
    return raw


def parse_event(
    data: bytes | bytearray | memoryview | Mapping[str, object],
    *,
    environment: Environment = Environment.PRODUCTION,
    code_lists: DiagnosisCodeLists | None = None,
    now: datetime | None = None,
) -> KadAdmission | KadDischarge | HstConsultation:
    """Validate one event (JSON bytes or an already decoded mapping).

    ``environment`` decides whether synthetic test identities pass; ``code_lists``
    replaces the shipped diagnosis lists; ``now`` fixes the clock (tz-aware).

    Raises :class:`UnknownSchemaVersion` for a ``schema_version`` not in
    :data:`SCHEMA_VERSIONS` and :class:`ContractViolation` for every other breach.
    """
    raw = _load(data)
    version = raw.get("schema_version")
    if version is None:
        raise ContractViolation(
            "the event has no schema_version", field="schema_version", rule="required"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version not in _ADAPTERS:
        known = ", ".join(str(v) for v in sorted(SCHEMA_VERSIONS))
        raise UnknownSchemaVersion(
            f"the event's schema_version is not one this side knows (known: {known})",
            field="schema_version",
            rule="unknown-schema-version",
        )
    rules = ValidationRules(environment=environment, code_lists=code_lists, now=now)
    try:
        return _ADAPTERS[version].validate_python(raw, context=rules.context())
    except ValidationError as error:
        raise _violation(error) from None


def encode_event(event: KadAdmission | KadDischarge | HstConsultation) -> bytes:
    """The event as compact JSON with sorted keys: equal events give equal bytes."""
    return orjson.dumps(event.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
