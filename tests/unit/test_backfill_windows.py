"""The back-fill's two windows, against an in-memory publisher that confirms late.

``max_in_flight`` bounds the publishes awaiting a confirm; ``max_resend`` bounds how far
a published line may lie above the checkpoint as written (what a resume re-sends). The
checkpoint is written on a clock, not on every confirm batch. The broker itself is in
tests/integration/test_backfill.py (SIGKILL and resume).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import orjson
import pytest

from contracts.errors import Reason
from contracts.events import Environment, parse_event
from contracts.pki import PkiDir
from contracts.synth import generate_lines
from contracts.topology import KPR_HER_IDS
from producers.backfill import (
    CHECKPOINT_INTERVAL_S,
    BackfillReport,
    Checkpoint,
    RejectLog,
    backfill,
)
from producers.sealer import SealedMessage, Sealer, message_id_for

LINES = 300


class CountingCheckpoint(Checkpoint):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes = 0

    def write(self, line: int) -> None:
        super().write(line)
        self.writes += 1


class LateConfirms:
    """Confirms each publish after a short delay; notes what the windows looked like."""

    def __init__(self, line_of: dict[str, int], checkpoint: Checkpoint) -> None:
        self._line_of = line_of
        self._checkpoint = checkpoint
        self.in_flight = 0
        self.most_in_flight = 0
        self.furthest_above_checkpoint = 0
        self.published: list[str] = []
        #: How many were in flight as each publish began (itself included).
        self.in_flight_at_start: list[int] = []

    async def publish(self, sealed: SealedMessage) -> None:
        self.in_flight += 1
        self.in_flight_at_start.append(self.in_flight)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        above = self._line_of[sealed.message_id] - self._checkpoint.read()
        self.furthest_above_checkpoint = max(self.furthest_above_checkpoint, above)
        try:
            await asyncio.sleep(0.002)
            self.published.append(sealed.message_id)
        finally:
            self.in_flight -= 1


@pytest.fixture(scope="module")
def sealer(dev_pki: PkiDir) -> Sealer:
    return Sealer(
        dev_pki.sender.signing_identity,
        dev_pki.register.encryption_certificate,
        recipient_her_id=KPR_HER_IDS["test"],
    )


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    lines = generate_lines(LINES, seed=8)
    path = tmp_path_factory.mktemp("backfill") / "extract.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    line_of = {
        message_id_for(parse_event(line, environment=Environment.TEST)): number
        for number, line in enumerate(lines)
    }
    return path, line_of


async def run_backfill(
    sealer: Sealer,
    extract: tuple[Path, dict[str, int]],
    checkpoint: CountingCheckpoint,
    *,
    max_in_flight: int,
    max_resend: int,
) -> tuple[BackfillReport, LateConfirms]:
    path, line_of = extract
    publisher = LateConfirms(line_of, checkpoint)
    report = await backfill(
        path,
        sealer=sealer,
        publisher=publisher,
        checkpoint=checkpoint,
        environment=Environment.TEST,
        max_in_flight=max_in_flight,
        max_resend=max_resend,
    )
    return report, publisher


@pytest.mark.parametrize(("max_in_flight", "max_resend"), [(8, 8), (8, 40), (32, 1024)])
async def test_both_windows_hold_and_every_line_is_published_once(
    sealer: Sealer,
    extract: tuple[Path, dict[str, int]],
    tmp_path: Path,
    max_in_flight: int,
    max_resend: int,
) -> None:
    checkpoint = CountingCheckpoint(tmp_path / "cp")
    report, publisher = await run_backfill(
        sealer, extract, checkpoint, max_in_flight=max_in_flight, max_resend=max_resend
    )
    assert report.published == LINES
    assert sorted(publisher.published) == sorted(extract[1])
    assert checkpoint.read() == LINES
    assert 1 < publisher.most_in_flight <= max_in_flight
    assert publisher.furthest_above_checkpoint < max_resend


class TrickledConfirms(LateConfirms):
    """Confirms one publish at a time, oldest first, every half millisecond."""

    def __init__(self, line_of: dict[str, int], checkpoint: Checkpoint) -> None:
        super().__init__(line_of, checkpoint)
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def publish(self, sealed: SealedMessage) -> None:
        self.in_flight += 1
        self.in_flight_at_start.append(self.in_flight)
        confirmed = asyncio.get_running_loop().create_future()
        self._waiting.append(confirmed)
        try:
            await confirmed
            self.published.append(sealed.message_id)
        finally:
            self.in_flight -= 1

    async def confirm_one_at_a_time(self) -> None:
        while True:
            await asyncio.sleep(0.0005)
            if self._waiting:
                self._waiting.popleft().set_result(None)


async def test_a_full_confirm_window_takes_more_only_once_a_quarter_of_it_is_free(
    sealer: Sealer, extract: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    """Sealing and publishing go in bursts, not one line per confirm: with confirms
    arriving one by one, the publish after one that filled the window of 8 begins with
    at most 6 in flight (itself included)."""
    path, line_of = extract
    checkpoint = CountingCheckpoint(tmp_path / "cp")
    publisher = TrickledConfirms(line_of, checkpoint)
    confirming = asyncio.create_task(publisher.confirm_one_at_a_time())
    try:
        report = await backfill(
            path,
            sealer=sealer,
            publisher=publisher,
            checkpoint=checkpoint,
            environment=Environment.TEST,
            max_in_flight=8,
            max_resend=1024,
        )
    finally:
        confirming.cancel()
    assert report.published == LINES
    seen = publisher.in_flight_at_start
    after_full = [seen[n + 1] for n in range(len(seen) - 1) if seen[n] == 8]
    assert after_full, "the window never filled: the test proves nothing"
    assert max(after_full) <= 6, after_full


async def test_the_checkpoint_is_written_on_a_clock_not_per_confirm(
    sealer: Sealer, extract: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    """A small confirm window with a wide re-send window: writes follow the interval."""
    checkpoint = CountingCheckpoint(tmp_path / "cp")
    started = time.monotonic()
    await run_backfill(sealer, extract, checkpoint, max_in_flight=4, max_resend=1024)
    intervals = (time.monotonic() - started) / CHECKPOINT_INTERVAL_S
    assert checkpoint.writes <= intervals + 2
    assert checkpoint.writes < LINES / 4


async def test_a_resend_window_smaller_than_the_confirm_window_is_refused(
    sealer: Sealer, extract: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    checkpoint = CountingCheckpoint(tmp_path / "cp")
    with pytest.raises(ValueError, match="max_resend"):
        await run_backfill(sealer, extract, checkpoint, max_in_flight=16, max_resend=8)
    assert checkpoint.writes == 0


def test_the_command_refuses_a_resend_bound_below_the_confirm_window(tmp_path: Path) -> None:
    extract = tmp_path / "extract.jsonl"
    extract.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "kpr", "backfill", str(extract),
         "--checkpoint", str(tmp_path / "cp"), "--max-in-flight", "16", "--max-resend", "8"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--max-resend must be at least --max-in-flight" in result.stderr
    assert not (tmp_path / "cp").exists()


async def test_invalid_lines_are_listed_by_number_and_rule_never_by_content(
    sealer: Sealer, tmp_path: Path
) -> None:
    """Blank lines are skipped quietly; every invalid line is in the reject log with its
    line number and why, and nothing of its content (the national id least of all)."""
    good = generate_lines(3, seed=9)
    wrong_check_digit = orjson.loads(good[0])
    national_id = wrong_check_digit["person"]["national_id"]
    wrong_check_digit["person"]["national_id"] = national_id[:-1] + str(
        (int(national_id[-1]) + 1) % 10
    )
    lines = [
        good[0],
        b"{not json",
        b"",
        orjson.dumps(wrong_check_digit),
        good[1],
        b'{"schema_version": 1, "event_type": "kad.unknown"}',
        good[2],
    ]
    path = tmp_path / "extract.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    line_of = {
        message_id_for(parse_event(line, environment=Environment.TEST)): number
        for number, line in enumerate(lines)
        if line in good
    }
    checkpoint = CountingCheckpoint(tmp_path / "cp")
    rejects = RejectLog(tmp_path / "rejects.jsonl")

    report = await backfill(
        path,
        sealer=sealer,
        publisher=LateConfirms(line_of, checkpoint),
        checkpoint=checkpoint,
        environment=Environment.TEST,
        rejects=rejects,
    )
    rejects.close()
    rejects.close()

    assert report.published == 3
    assert report.skipped_invalid == 4
    written = rejects.path.read_bytes()
    entries = [orjson.loads(line) for line in written.splitlines()]
    assert [entry["line"] for entry in entries] == [2, 4, 6]
    assert entries[0]["reason"] == "not-json"
    assert entries[1]["reason"] == Reason.INVALID_CONTRACT.value
    assert entries[1]["field"] == "person.national_id"
    assert entries[2]["rule"] == "unknown-event-type"
    assert national_id[:6].encode() not in written
    assert re.search(rb"\d{11}", written) is None
