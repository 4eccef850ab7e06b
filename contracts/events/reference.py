"""The published form of the contract: JSON Schemas and the reference page, from the models.

``python -m contracts.events.reference`` rewrites ``contracts/schemas/*.json`` and
``docs/CONTRACTS.md``; tests fail when the checked-in files differ from what the models
generate, so the models stay the single source.

:data:`RULES` names every validation rule with its meaning; a test checks that every
rule the code can raise is listed here, so the page is complete.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from contracts.events._common import (
    CLOCK_SKEW,
    CURRENT_SCHEMA_VERSION,
    Person,
    ServiceUnit,
)
from contracts.events.code_sources import code_source
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
    norwegian_label,
)
from contracts.events.hst import (
    HEAD_CIRCUMFERENCE_RANGE_CM,
    HEIGHT_RANGE_CM,
    PROGRAMME_BY_SERVICE_AREA,
    WEIGHT_RANGE_KG,
    HstConsultation,
    Length,
    Mass,
    Measurements,
    ThemeAssessment,
)
from contracts.events.kad import Counterpart, Diagnosis, KadAdmission, KadDischarge
from contracts.events.migrations import MIGRATIONS
from contracts.events.parse import EVENT_TYPES

__all__ = [
    "RULES",
    "SCHEMA_DIRECTORY",
    "contract_reference",
    "json_schemas",
    "main",
    "schema_file_name",
]

_REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIRECTORY: Final = Path(__file__).resolve().parents[1] / "schemas"
REFERENCE_PAGE: Final = _REPO / "docs" / "CONTRACTS.md"
#: The national-bus comparison, written once there and copied into the reference page.
NATIONAL_BUS_PAGE: Final = _REPO / "docs" / "NATIONAL_BUS.md"
_NATIONAL_BUS_TABLE_HEADING: Final = "## Properties and behaviour"
_JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

#: Every rule a ContractViolation can carry, with what it means.
RULES: Final[dict[str, str]] = {
    # parsing and structure
    "not-json": "The event bytes are not JSON.",
    "not-an-object": "The event is JSON but not an object.",
    "required": "A required field is missing (the field names which).",
    "unknown-field": "A field the contract does not name (data minimisation: refused).",
    "unknown-event-type": "event_type is not kad.admission, kad.discharge or hst.consultation.",
    "unknown-schema-version": "schema_version is not one the receiver knows "
    "(raised as UnknownSchemaVersion).",
    "not-allowed-value": "A fixed value (such as schema_version) has another value.",
    "not-in-code-list": "A coded field holds a value outside its code list.",
    # retired code values (see "Code changes and cut-off dates")
    **{
        migration.rule: f"A retired {migration.code_list.__name__} value (in "
        f"{migration.field}) in an event received from "
        f"{migration.retired_from.date().isoformat()} on; the message names its replacement."
        for migration in MIGRATIONS
    },
    "time-without-offset": "A date-time has no UTC offset.",
    "string-type": "A text field holds another JSON type.",
    "string-too-short": "A text field is empty or shorter than its minimum.",
    "string-too-long": "A text field is longer than its maximum.",
    "string-pattern-mismatch": "A text field does not have the required form.",
    "too-short": "A list has fewer entries than its minimum.",
    "too-long": "A list has more entries than its maximum.",
    "int-type": "An integer field holds another JSON type (also a string or boolean).",
    "int-parsing": "An integer field does not hold an integer.",
    "int-from-float": "An integer field holds a fraction.",
    "float-type": "A number field holds another JSON type.",
    "float-parsing": "A number field does not hold a number.",
    "bool-type": "A yes/no field holds another JSON type.",
    "bool-parsing": "A yes/no field does not hold true or false.",
    "model-type": "A field that must be an object holds another JSON type.",
    "tuple-type": "A field that must be a list holds another JSON type.",
    "uuid-type": "An id is not a UUID string.",
    "datetime-type": "A date or time is not an ISO 8601 string.",
    "date-from-datetime-inexact": "A date holds a time of day.",
    "greater-than": "A number is not above its minimum.",
    "greater-than-equal": "A number is below its minimum.",
    "less-than-equal": "A number is above its maximum.",
    "finite-number": "A number is NaN or infinite.",
    "uuid-parsing": "An id is not a UUID.",
    "datetime-from-date-parsing": "A date-time is not an ISO 8601 date-time.",
    "datetime-parsing": "A date-time is not an ISO 8601 date-time.",
    "date-from-datetime-parsing": "A date is not an ISO 8601 date.",
    # identifiers
    "national-id-format": "The national id is not exactly 11 digits.",
    "national-id-checksum": "The national id fails one of the two mod-11 check digits.",
    "national-id-birth-date": "The national id encodes no valid birth date (also FH-numbers).",
    "national-id-future": "The national id encodes a birth date after today.",
    "synthetic-id-in-production": "A synthetic test identity (month + 40 or + 80) outside "
    "the test environment (KPR_ENVIRONMENT=test).",
    "birth-date-mismatch": "birth_date differs from the date in the national id.",
    "org-number-format": "The organisation number is not exactly 9 digits.",
    "org-number-checksum": "The organisation number fails the mod-11 check.",
    "org-number-junk": "The organisation number is a known placeholder (999999999, ...).",
    "her-id-range": "The HER-id is not a positive integer below 2^31.",
    "municipality-format": "The municipality number is not exactly 4 digits.",
    "municipality-unknown": "The municipality number is on the list of no year since 2017.",
    "municipality-not-in-use": "The municipality number was not in use on the event's date "
    "(changes take effect on 1 January; contracts/data/SOURCE-municipalities.md).",
    "municipality-repeated": "A service municipality is listed twice.",
    # envelope
    "revision-original": "An original event does not have revision 1.",
    "revision-correction": "A correction does not have revision 2 or higher.",
    "correction-link-required": "A replace, supplement or cancel lacks corrects_event_id.",
    "correction-link-forbidden": "An original names an event it corrects.",
    "correction-self-reference": "A correction names its own event id as the one it corrects.",
    # times
    "time-before-2017": "A time before 2017-01-01 (Norwegian time).",
    "time-in-future": f"A time later than now (a clock skew of {CLOCK_SKEW} is allowed).",
    "before-birth": "A consultation or admission before the person's birth date.",
    "discharge-before-admission": "discharged_at is before admitted_at.",
    # diagnoses
    "diagnosis-unknown-code": "The code is not on the stated system's code list.",
    "diagnosis-wrong-system": "The code belongs to the other code system than the one stated.",
    # HST
    "programme-not-in-service-area": "The programme consultation is not one of the service "
    "area's (table below).",
    "pregnancy-week-required": "An antenatal consultation lacks the pregnancy week.",
    "pregnancy-week-forbidden": "A pregnancy week on a consultation that is not antenatal.",
    "pregnancy-week-range": "The pregnancy week is outside 4-44.",
    "place-form-mismatch": "place is remote while the form is attended, or the reverse.",
    "personnel-required": "A completed consultation names no personnel category.",
    "personnel-repeated": "A personnel category is listed twice.",
    "content-without-completed-consultation": "Measurements, breastfeeding or themes on a "
    "consultation that was not completed.",
    "measurements-empty": "measurements is present but holds no value.",
    "measurement-range": "A measurement outside its plausible range (after unit conversion).",
    "breastfeeding-age": "Breastfeeding status for a child older than 12 completed months.",
    "theme-repeated": "A theme is assessed twice in one consultation.",
    "assessment-detail-required": "extra-consultation, referred or cooperation without "
    "its sub-choice.",
    "assessment-detail-forbidden": "A sub-choice that belongs to another assessment code.",
    "cooperation-partner-repeated": "A cooperation partner is listed twice.",
}

_MODELS_IN_ORDER: Final[tuple[type[BaseModel], ...]] = (
    KadAdmission,
    KadDischarge,
    HstConsultation,
    Person,
    ServiceUnit,
    Diagnosis,
    Counterpart,
    Measurements,
    Length,
    Mass,
    ThemeAssessment,
)
_CODE_LISTS: Final[tuple[type[StrEnum], ...]] = (
    CorrectionKind,
    Sex,
    CodeSystem,
    CounterpartCategory,
    ServiceArea,
    ProgrammeConsultation,
    ConsultationForm,
    ConsultationPlace,
    PersonnelCategory,
    ConsultationStatus,
    BreastfeedingStatus,
    Theme,
    Assessment,
    ExtraConsultationKind,
    ReferralTarget,
    CooperationPartner,
    LengthUnit,
    MassUnit,
)


def schema_file_name(event_type: str, version: int = CURRENT_SCHEMA_VERSION) -> str:
    """``kad.admission`` -> ``kad.admission.v1.json``."""
    return f"{event_type}.v{version}.json"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every event type of the current version, by file name."""
    result = {}
    for event_type, model in EVENT_TYPES.items():
        schema = model.model_json_schema(mode="validation")
        name = schema_file_name(event_type)
        schema = {
            "$schema": _JSON_SCHEMA_DIALECT,
            "$id": f"urn:kpr-stream:contract:{name.removesuffix('.json')}",
            **schema,
        }
        schema["$comment"] = (
            "Generated from contracts.events; do not edit. The schema states structure, "
            "types, code lists and forms. Check digits, the code and municipality lists, "
            "time limits and cross-field rules are checked by contracts.events.parse_event "
            "and listed in docs/CONTRACTS.md."
        )
        result[name] = schema
    return result


def render_schema(schema: dict[str, Any]) -> str:
    """The checked-in text of a schema: stable key order, 2-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- the reference page ----------------------------------------------------------------


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        parts = [_type_of(part) for part in schema["anyOf"] if part.get("type") != "null"]
        nullable = any(part.get("type") == "null" for part in schema["anyOf"])
        return " or ".join(parts) + (" or null" if nullable else "")
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if kind == "array":
        items = f"list of {_type_of(schema.get('items', {}))}"
        if "minItems" in schema or "maxItems" in schema:
            items += f" ({schema.get('minItems', 0)}-{schema.get('maxItems', '')} entries)"
        return items
    detail = []
    if "format" in schema:
        detail.append(str(schema["format"]))
    if "pattern" in schema:
        detail.append(f"`{schema['pattern']}`")
    for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
        if key in schema:
            detail.append(f"{label} {schema[key]}")
    if "minLength" in schema or "maxLength" in schema:
        detail.append(f"length {schema.get('minLength', 0)}-{schema.get('maxLength', '')}")
    return str(kind) + (f" ({', '.join(detail)})" if detail else "")


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _model_section(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    lines = [f"### {model.__name__}", "", _cell(schema.get("description", "")), ""]
    lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        description = prop.get("description", "")
        if not description and "anyOf" in prop:
            description = next((p["description"] for p in prop["anyOf"] if "description" in p), "")
        if not description:
            reference = prop.get("$ref") or next(
                (p["$ref"] for p in prop.get("anyOf", []) if "$ref" in p), ""
            )
            definition = schema.get("$defs", {}).get(str(reference).rsplit("/", 1)[-1], {})
            description = str(definition.get("description", "")).split("\n\n")[0]
        flag = "yes" if name in required else "no"
        lines.append(f"| `{name}` | {_cell(_type_of(prop))} | {flag} | {_cell(description)} |")
    return [*lines, ""]


def _code_list_section(enum: type[StrEnum]) -> list[str]:
    doc = _cell((enum.__doc__ or "").strip().split("\n\n")[0])
    source = code_source(enum)
    national = (
        f"**National list:** {source.national}."
        if source.national
        else "**National list:** none found; the values are the contract's slugs."
    )
    lines = [f"### {enum.__name__}", "", doc, "", national, "", f"**Source:** {source.source}"]
    if source.note:
        lines += ["", _cell(source.note)]
    lines += ["", "| value | meaning | Norwegian term |", "|---|---|---|"]
    for member in enum:
        meaning = member.name.lower().replace("_", " ")
        lines.append(f"| `{member.value}` | {meaning} | {_cell(norwegian_label(member))} |")
    return [*lines, ""]


def _migration_section() -> list[str]:
    lines = [
        "## Code changes and cut-off dates",
        "",
        "When a code list moves to new values, an EPJ vendor sees this: until the cut-off "
        "the old values are still accepted, read as the new ones and stored as the new "
        "ones; from the cut-off on, an event that carries an old value is refused "
        "(dead-lettered, and the receipt says so) with the change's own rule, whose "
        "message names the value to send instead. The time that counts is when the "
        "register receives the event, not the event's clinical date: a back-fill of old "
        "events sent after the cut-off must use the new values. The back-fill producer "
        "applies the same check before it sends (the line is listed in its reject log "
        "with the rule).",
        "",
        "| code list | field | old value | new value | refused from | rule | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for migration in MIGRATIONS:
        for old, new in migration.renamed.items():
            lines.append(
                f"| {migration.code_list.__name__} | `{migration.field}` | `{old}` | "
                f"`{new.value}` | {migration.retired_from.isoformat()} | `{migration.rule}` "
                f"| {_cell(migration.reason)} |"
            )
    return [*lines, ""]


def _national_bus_section() -> list[str]:
    """The property-by-property table of docs/NATIONAL_BUS.md (an installed package,
    without the docs beside it, says where to find it instead)."""
    lines = ["## On the national bus", ""]
    if not NATIONAL_BUS_PAGE.is_file():
        return [*lines, "See docs/NATIONAL_BUS.md in the source repository.", ""]
    text = NATIONAL_BUS_PAGE.read_text(encoding="utf-8")
    _, found, rest = text.partition(f"\n{_NATIONAL_BUS_TABLE_HEADING}\n")
    if not found:
        raise ValueError(f"{NATIONAL_BUS_PAGE.name} has no '{_NATIONAL_BUS_TABLE_HEADING}' section")
    table = [line for line in rest.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    lines += [
        "Each property and behaviour of NHN's Helsenorge.Messaging, what the register does "
        "with it, and the test that proves it (file names in the first column are in that "
        "repository):",
        "",
        *table,
        "",
    ]
    return lines


def contract_reference() -> str:
    """The text of ``docs/CONTRACTS.md``."""
    lines = [
        "# Event contract reference",
        "",
        "<!-- Generated by `python -m contracts.events.reference` from contracts/events; "
        "do not edit by hand. tests/unit/test_schemas.py fails when it is out of date. -->",
        "",
        "For EPJ vendors and operators: every event, field, code and rule that the KPR "
        f"stream accepts. Schema version **{CURRENT_SCHEMA_VERSION}**. Events are JSON "
        "objects (UTF-8), one per message, told apart by `event_type`. The JSON Schemas "
        "are in `contracts/schemas/`; they state structure and code lists, while check "
        "digits, code-list membership, time limits and cross-field rules are listed under "
        "[Rules](#rules).",
        "",
        "## Conventions",
        "",
        "- Times are ISO 8601 with a UTC offset (`2024-03-01T10:15:00+01:00`); dates are "
        "`YYYY-MM-DD`. Nothing before 2017-01-01 (Norwegian time), nothing in the future.",
        "- Unknown fields are refused: send only what the contract names.",
        "- The national id appears in `person.national_id` and nowhere else; `stay_id` and "
        "free text must not contain it. Error messages never repeat field values.",
        "- Corrections follow the register's N/M/T/C pattern: an original (`original`, "
        "revision 1) and later `replace`, `supplement` or `cancel` events (revision 2, 3, "
        "...) that name the original in `corrects_event_id`. The record key is the "
        "original's `event_id`.",
        "- A receiver accepts the schema versions it knows and refuses others with "
        "`unknown-schema-version`.",
        "- Synthetic test identities (month + 40, month + 80) are accepted only where "
        "`KPR_ENVIRONMENT=test`; production is the default. Real H-numbers share the "
        "month + 40 form and are refused in production too.",
        "- Diagnoses: ICPC-2 and ICD-10 lists valid from 2026-01-01 (navikt/diagnosekoder, "
        "MIT; see `contracts/data/SOURCE.md`). ICD-10 with or without the dot, stored "
        "without; ICPC-2 process codes `-30` ... `-69` (optionally with a chapter "
        "letter) by pattern.",
        "- Measurements carry their unit; plausible ranges after conversion: height "
        f"{HEIGHT_RANGE_CM[0]:g}-{HEIGHT_RANGE_CM[1]:g} cm, weight "
        f"{WEIGHT_RANGE_KG[0]:g}-{WEIGHT_RANGE_KG[1]:g} kg, head circumference "
        f"{HEAD_CIRCUMFERENCE_RANGE_CM[0]:g}-{HEAD_CIRCUMFERENCE_RANGE_CM[1]:g} cm.",
        "- Coded fields carry the national code values where a national list was found "
        "(sex: Volven 3101); elsewhere the contract's English slugs. Each code list below "
        'names its source, or says that no national list was found (the KAD "Ut til" '
        "categories follow Volven 7300 by meaning; its values could not be confirmed). "
        "Old values are retired on a stated date: "
        "[Code changes and cut-off dates](#code-changes-and-cut-off-dates).",
        "- On the wire, each event travels sealed (CMS) with the national bus's message "
        "properties; how each Helsenorge.Messaging property and behaviour is met, and the "
        "test that proves it: [On the national bus](#on-the-national-bus), copied from "
        "[NATIONAL_BUS.md](NATIONAL_BUS.md), which has the MsgHead profile too.",
        "",
        "## Events and their parts",
        "",
    ]
    for model in _MODELS_IN_ORDER:
        lines += _model_section(model)
    lines += ["## Programme consultations per service area", ""]
    lines += ["| service area | programme consultations |", "|---|---|"]
    for area, allowed in PROGRAMME_BY_SERVICE_AREA.items():
        ordered = [f"`{p.value}`" for p in ProgrammeConsultation if p in allowed]
        lines.append(f"| `{area.value}` | {', '.join(ordered)} |")
    lines += ["", "## Code lists", ""]
    for enum in _CODE_LISTS:
        lines += _code_list_section(enum)
    lines += _migration_section()
    lines += _national_bus_section()
    lines += [
        "## Rules",
        "",
        "Every refusal names the field (dotted path, list positions from 0) and one of "
        "these rules.",
        "",
        "| rule | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{rule}` | {_cell(meaning)} |" for rule, meaning in RULES.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the schemas and the reference page from the models."""
    del argv
    SCHEMA_DIRECTORY.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (SCHEMA_DIRECTORY / name).write_text(render_schema(schema), encoding="utf-8")
    REFERENCE_PAGE.write_text(contract_reference(), encoding="utf-8")
    print(f"wrote {len(EVENT_TYPES)} schemas and {REFERENCE_PAGE.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
