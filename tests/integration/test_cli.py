"""The command line as operators and scripts use it: synth -> produce -> consume -> pathways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from support import environment_of, pipeline_settings

from contracts import PkiDir, ensure_dev_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


def _kpr(
    args: list[str], env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kpr", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=180,
        check=False,
    )


def test_synth_produce_consume_and_look_a_person_up(
    amqp_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    """Each command exits 0; the summary counts what was produced; a person is found by
    national id through the pseudonym key, and the id itself is in no output."""
    env = environment_of(pipeline_settings(amqp_url, pki, tmp_path))
    events_file = tmp_path / "events.jsonl"

    synth = _kpr(["synth", "--count", "50", "--seed", "5", "--out", str(events_file)], env)
    produce = _kpr(["produce", str(events_file)], env)
    consume = _kpr(["consume", "--until-idle", "1.5"], env)
    summary = _kpr(["pathways", "summary", "--json"], env)

    for step in (synth, produce, consume, summary):
        assert step.returncode == 0, step.stderr.decode()[-1500:]
    assert b"confirmed 50" in produce.stdout
    counts = orjson.loads(summary.stdout)
    assert set(counts) >= {
        "events_committed",
        "persons",
        "stays",
        "stays_incomplete",
        "consultations",
    }
    assert counts["events_committed"] == 50

    lines = [orjson.loads(line) for line in events_file.read_bytes().splitlines()]
    national_id = lines[0]["person"]["national_id"]
    person = _kpr(
        ["pathways", "person", "--national-id-stdin", "--json"], env, stdin=national_id.encode()
    )
    assert person.returncode == 0, person.stderr.decode()[-1500:]
    found = orjson.loads(person.stdout)
    mine = [line for line in lines if line["person"]["national_id"] == national_id]
    consultations = sum(len(p["consultations"]) for p in found["programmes"])
    stays = {line["stay_id"] for line in mine if line["event_type"].startswith("kad.")}
    assert consultations == sum(1 for line in mine if line["event_type"] == "hst.consultation")
    assert len(found["stays"]) == len(stays)
    for output in (produce, consume, summary, person):
        assert national_id.encode() not in output.stdout + output.stderr
