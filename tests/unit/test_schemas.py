"""The published contract stays generated from the models: schemas, reference page, rules."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import orjson
import pytest

from contracts.events import EVENT_TYPES, SCHEMA_VERSIONS, encode_event
from contracts.events.code_sources import CODE_SOURCES
from contracts.events.codes import CounterpartCategory, Sex, norwegian_label
from contracts.events.reference import (
    _CODE_LISTS,
    REFERENCE_PAGE,
    RULES,
    SCHEMA_DIRECTORY,
    contract_reference,
    json_schemas,
    render_schema,
    schema_file_name,
)
from contracts.synth import generate_events, generate_lines

EVENTS_PACKAGE = Path(__file__).resolve().parents[2] / "contracts" / "events"
REGENERATE = "run `python -m contracts.events.reference` and commit the result"


def test_checked_in_schemas_equal_the_generated_ones() -> None:
    """contracts/schemas/*.json is exactly what the models generate, and nothing else."""
    generated = json_schemas()
    on_disk = {path.name for path in SCHEMA_DIRECTORY.glob("*.json")}
    assert on_disk == set(generated), REGENERATE
    for name, schema in generated.items():
        text = (SCHEMA_DIRECTORY / name).read_text(encoding="utf-8")
        assert text == render_schema(schema), f"{name} is out of date: {REGENERATE}"


def test_there_is_one_schema_per_event_type_and_version() -> None:
    assert set(json_schemas()) == {
        schema_file_name(event_type, version)
        for event_type in EVENT_TYPES
        for version in SCHEMA_VERSIONS
    }


def test_the_reference_page_is_up_to_date() -> None:
    """docs/CONTRACTS.md equals what the models generate."""
    assert REFERENCE_PAGE.read_text(encoding="utf-8") == contract_reference(), REGENERATE


def test_the_reference_page_holds_the_national_bus_table_row_by_row() -> None:
    """Every row of docs/NATIONAL_BUS.md's property table, under its own heading."""
    bus = (REFERENCE_PAGE.parent / "NATIONAL_BUS.md").read_text(encoding="utf-8")
    table = bus.split("## Properties and behaviour\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) > 10
    page = REFERENCE_PAGE.read_text(encoding="utf-8").split("## On the national bus\n", 1)[1]
    for row in rows:
        assert row in page, row


def test_the_schemas_are_valid_json_schema() -> None:
    for schema in json_schemas().values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_generated_event_validates_against_its_schema() -> None:
    """What the models accept, the published schema accepts too (vendors can pre-check)."""
    validators = {
        event_type: jsonschema.Draft202012Validator(json_schemas()[schema_file_name(event_type)])
        for event_type in EVENT_TYPES
    }
    for event in generate_events(400, seed=31, corrections=0.2):
        document = orjson.loads(encode_event(event))
        validators[event.event_type].validate(document)


def test_the_schema_refuses_what_the_structure_forbids() -> None:
    """Unknown fields, a missing event_type and unknown codes fail the schema as well."""
    schema = json_schemas()[schema_file_name("kad.admission")]
    validator = jsonschema.Draft202012Validator(schema)
    line = next(
        line for line in generate_lines(50, seed=2, kinds=["kad"]) if b'"kad.admission"' in line
    )
    document = orjson.loads(line)
    assert validator.is_valid(document)
    for broken in (
        document | {"extra": 1},
        {key: value for key, value in document.items() if key != "event_type"},
        document | {"correction": "undo"},
        document | {"schema_version": 2},
    ):
        assert not validator.is_valid(broken)


def _rules_raised_in_source() -> set[str]:
    pattern = re.compile(r"""(?:rule_error\(\s*|rule=)"([a-z0-9-]+)\"""")
    found: set[str] = set()
    for path in EVENTS_PACKAGE.glob("*.py"):
        found |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_rule_the_code_raises_is_documented() -> None:
    """Each rule name in contracts/events is in RULES, hence on the reference page."""
    raised = _rules_raised_in_source()
    assert len(raised) > 40
    assert raised - set(RULES) == set()
    page = contract_reference()
    for rule in RULES:
        assert f"`{rule}`" in page


def test_every_code_has_its_meaning_and_norwegian_label_on_the_page() -> None:
    page = contract_reference()
    for enum in _CODE_LISTS:
        for member in enum:
            meaning = member.name.lower().replace("_", " ")
            assert f"| `{member.value}` | {meaning} | {norwegian_label(member)} |" in page


def test_every_code_list_names_its_source_or_that_none_was_found() -> None:
    """A national list where one was found (sex: Volven 3101), else the plain statement
    that the values are slugs; never a list without either."""
    page = contract_reference()
    assert set(CODE_SOURCES) == set(_CODE_LISTS)
    for enum in _CODE_LISTS:
        section = page.split(f"### {enum.__name__}\n", 1)[1].split("\n### ", 1)[0]
        assert "**Source:**" in section
        national = CODE_SOURCES[enum].national
        if national is None:
            assert "**National list:** none found; the values are the contract's slugs." in section
        else:
            assert f"**National list:** {national}." in section
    assert CODE_SOURCES[Sex].national is not None
    assert CODE_SOURCES[CounterpartCategory].national is None  # Volven 7300: no values found
    assert "## Code changes and cut-off dates" in page
    assert "| Sex | `person.sex` | `female` | `2` | 2027-07-01T00:00:00+02:00 |" in page


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_field_is_on_the_page(event_type: str) -> None:
    page = contract_reference()
    for name in EVENT_TYPES[event_type].model_fields:
        assert f"| `{name}` |" in page
