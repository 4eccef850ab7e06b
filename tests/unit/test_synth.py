"""The synthetic data generator and ``kpr synth``."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from contracts.errors import ContractViolation
from contracts.events import (
    ConsultationStatus,
    CorrectionKind,
    Environment,
    HstConsultation,
    KadAdmission,
    KadDischarge,
    NationalIdKind,
    ProgrammeConsultation,
    ServiceArea,
    encode_event,
    parse_event,
    parse_national_id,
)
from contracts.synth import (
    DEFAULT_UNIT_ORG_NUMBERS,
    DEFAULT_UNTIL,
    generate_events,
    generate_lines,
)
from kpr.commands import synth as synth_command

TEST = Environment.TEST


def test_the_same_seed_gives_the_same_bytes() -> None:
    """Deterministic: equal arguments give equal output; another seed gives other output."""
    first = generate_lines(300, seed=42, corrections=0.1, duplicates=0.05, defects=0.1)
    assert first == generate_lines(300, seed=42, corrections=0.1, duplicates=0.05, defects=0.1)
    assert first != generate_lines(300, seed=43, corrections=0.1, duplicates=0.05, defects=0.1)


def test_exactly_count_events_are_generated() -> None:
    for count in (0, 1, 2, 17, 250):
        assert len(generate_events(count, seed=count)) == count


def test_generated_events_are_valid_in_test_and_refused_in_production() -> None:
    """Every line is a valid event with a synthetic identity, which production refuses."""
    for line in generate_lines(200, seed=1, corrections=0.2, duplicates=0.1):
        event = parse_event(line, environment=TEST)
        assert parse_national_id(event.person.national_id, today=date.today()).kind is (
            NationalIdKind.SYNTHETIC
        )
        with pytest.raises(ContractViolation) as caught:
            parse_event(line)
        assert caught.value.rule == "synthetic-id-in-production"


def test_defaults_use_the_dev_pki_sender_and_test_units() -> None:
    """Sender HER-id 90001 and org 310000000; units from the configurable test set."""
    events = generate_events(300, seed=3)
    assert {e.sender_her_id for e in events} == {90001}
    assert {e.sender_org_number for e in events} == {"310000000"}
    assert {e.reporting_unit_org_number for e in events} <= set(DEFAULT_UNIT_ORG_NUMBERS)
    custom = generate_events(50, seed=3, unit_org_numbers=["310000078"], sender_her_id=77)
    assert {e.reporting_unit_org_number for e in custom} == {"310000078"}
    assert {e.sender_her_id for e in custom} == {77}


def test_times_lie_in_the_register_period() -> None:
    for event in generate_events(500, seed=9):
        assert datetime(2016, 12, 31, 23, tzinfo=UTC) <= event.clinical_time <= DEFAULT_UNTIL
        assert event.registered_at <= DEFAULT_UNTIL


def test_kinds_choose_the_event_families() -> None:
    kad = Counter(e.event_type for e in generate_events(200, seed=4, kinds=["kad"]))
    hst = Counter(e.event_type for e in generate_events(200, seed=4, kinds=["hst"]))
    both = Counter(e.event_type for e in generate_events(600, seed=4))
    assert set(kad) == {"kad.admission", "kad.discharge"}
    assert set(hst) == {"hst.consultation"}
    assert set(both) == {"kad.admission", "kad.discharge", "hst.consultation"}
    with pytest.raises(ValueError, match="kinds"):
        generate_events(1, seed=1, kinds=["iplos"])


def test_stays_and_programmes_look_real() -> None:
    """KAD stays pair up; children follow the programme with gaps and non-completed visits."""
    events = generate_events(2000, seed=8)
    admissions = {e.stay_id for e in events if isinstance(e, KadAdmission)}
    discharges = {e.stay_id for e in events if isinstance(e, KadDischarge)}
    assert len(admissions & discharges) > 0.8 * len(discharges)
    consultations = [e for e in events if isinstance(e, HstConsultation)]
    areas = Counter(e.service_area for e in consultations)
    assert set(areas) == set(ServiceArea)
    statuses = Counter(e.status for e in consultations)
    assert statuses[ConsultationStatus.COMPLETED] > 0.8 * len(consultations)
    assert statuses[ConsultationStatus.DID_NOT_ATTEND] > 0
    programmes = Counter(e.programme_consultation for e in consultations)
    assert programmes[ProgrammeConsultation.WEEKS_6] > 0
    assert programmes[ProgrammeConsultation.ANTENATAL] > 0
    assert any(e.measurements is not None for e in consultations)
    assert any(e.breastfeeding is not None for e in consultations)
    assert any(e.themes for e in consultations)
    assert any(len(e.service_municipalities) > 1 for e in events if isinstance(e, KadAdmission))


def test_corrections_and_duplicates_come_in_the_asked_shares() -> None:
    events = generate_events(2000, seed=12, corrections=0.1, duplicates=0.1)
    corrections = [e for e in events if e.correction is not CorrectionKind.ORIGINAL]
    assert 0.05 * len(events) < len(corrections) < 0.15 * len(events)
    ids = {e.event_id for e in events}
    assert all(c.corrects_event_id in ids for c in corrections)
    encoded = Counter(encode_event(e) for e in events)
    duplicates = sum(n - 1 for n in encoded.values())
    assert 0.05 * len(events) < duplicates < 0.15 * len(events)
    assert not any(
        e.correction is not CorrectionKind.ORIGINAL for e in generate_events(300, seed=12)
    )


def test_defects_break_one_named_rule_each() -> None:
    """With --defects about that share of lines is refused, each with a named rule."""
    lines = generate_lines(1000, seed=5, defects=0.1)
    rules: Counter[str] = Counter()
    for line in lines:
        try:
            parse_event(line, environment=TEST)
        except ContractViolation as error:
            rules[error.rule] += 1
    assert 50 < sum(rules.values()) < 150
    assert {"national-id-checksum", "org-number-junk", "time-in-future"} <= set(rules)


def test_kpr_synth_writes_json_lines(tmp_path: Path) -> None:
    """The command writes --count lines, each a JSON object, equal to the library output."""
    out = tmp_path / "events.jsonl"
    parser = argparse.ArgumentParser()
    register_into = parser.add_subparsers(dest="command")
    synth_command.register(register_into)
    args = parser.parse_args(
        [
            "synth",
            "--count",
            "40",
            "--seed",
            "6",
            "--out",
            str(out),
            "--kinds",
            "kad,hst",
            "--corrections",
            "0.1",
            "--duplicates",
            "0.05",
        ]
    )
    assert args.handler(args) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 40
    assert all(isinstance(orjson.loads(line), dict) for line in lines)
    assert lines == generate_lines(40, seed=6, corrections=0.1, duplicates=0.05)


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--count", "-1"],
        ["synth", "--defects", "1.5"],
        ["synth", "--kinds", "iplos"],
        ["synth", "--unit-org-numbers", "999999999"],
    ],
)
def test_kpr_synth_refuses_bad_arguments(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    synth_command.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(argv)
    assert caught.value.code == 2


def test_kpr_synth_reports_an_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kpr.cli import main

    assert main(["synth", "--count", "2", "--out", str(tmp_path / "no" / "x.jsonl")]) == 3
    assert f"no folder {tmp_path / 'no'}" in capsys.readouterr().err


def test_kpr_synth_runs_from_the_kpr_command_line(tmp_path: Path) -> None:
    """`kpr synth` is wired into the CLI and writes to the given file."""
    from kpr.cli import main

    out = tmp_path / "e.jsonl"
    assert main(["synth", "--count", "5", "--seed", "1", "--out", str(out)]) == 0
    assert out.read_bytes().splitlines() == generate_lines(5, seed=1)
