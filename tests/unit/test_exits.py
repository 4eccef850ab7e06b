"""The exit-code table: the code, ``kpr --help`` and docs/OPERATIONS.md say the same, and
every failure class lands on a code of the table with one line and no traceback."""

from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path

import pytest

import contracts.errors as errors
from kpr.cli import build_parser, main
from kpr.exits import EXIT_CODES, explain, run_command
from kpr.lifecycle import Interrupted

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def _subclasses(root: type) -> list[type]:
    found = []
    for item in vars(errors).values():
        if isinstance(item, type) and issubclass(item, root) and item is not root:
            found.append(item)
    return found


def test_the_operations_table_is_the_code_table() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("## Exit codes and error messages", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE))
    assert {int(code): meaning for code, meaning in rows.items()} == EXIT_CODES


def test_kpr_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning[:40])}", shown, flags=re.MULTILINE)


def test_kpr_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert re.fullmatch(r"kpr-stream \S+\n", capsys.readouterr().out)


@pytest.mark.parametrize("kind", _subclasses(errors.OperatorError), ids=lambda kind: kind.__name__)
def test_every_operator_error_has_its_own_code_of_the_table(kind: type) -> None:
    code, message = explain(kind("the thing at fault", "what to do"))
    assert code == kind.exit_code
    assert code in EXIT_CODES
    assert code not in (0, 1, 2, 70)
    assert message == "the thing at fault (what to do)"


@pytest.mark.parametrize("kind", _subclasses(errors.Rejected), ids=lambda kind: kind.__name__)
def test_every_rejection_has_a_code_of_the_table(kind: type) -> None:
    error = kind() if kind is errors.DecryptionFailed else kind("why")
    code, message = explain(error)
    assert code == kind.exit_code
    assert code in (3, 4, 5, 6)
    assert message.startswith(f"rejected ({kind.reason})")


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (Interrupted(signal.SIGTERM), 143, "SIGTERM"),
        (Interrupted(signal.SIGINT), 130, "SIGINT"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (errors.StoreUnavailable("the pathway store cannot commit now"), 10, "commit now"),
        (errors.CrlUnavailable("crl.pem is past nextUpdate"), 1, "nextUpdate"),
        (errors.ConfirmTimeout("no confirm"), 1, "try again"),
        (sqlite3.DatabaseError("file is not a database"), 10, "not a database"),
        (FileNotFoundError(2, "No such file or directory", "/x/y.jsonl"), 3, "/x/y.jsonl"),
        (PermissionError(13, "Permission denied", "/root/z"), 3, "Permission denied"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
         3, "UTF-8"),
        (RuntimeError("an invariant broke"), 70, "bug in kpr-stream"),
        (ValueError(""), 70, "ValueError"),
    ],
)  # fmt: skip
def test_foreign_failures_land_on_a_named_code(error: BaseException, code: int, words: str) -> None:
    got, message = explain(error)
    assert got == code
    assert words in message
    assert "\n" not in message


def test_a_bug_is_one_line_and_its_traceback_only_under_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.delenv("KPR_DEBUG", raising=False)
    assert run_command("demo", broken) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert err.startswith("kpr demo: error: internal error: ZeroDivisionError: division by zero")
    monkeypatch.setenv("KPR_DEBUG", "1")
    assert run_command("demo", broken) == 70
    assert "Traceback" in capsys.readouterr().err


def test_a_command_that_returns_keeps_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command("x", lambda: 1) == 1
    assert run_command("x", lambda: 0) == 0
    assert capsys.readouterr().err == ""
