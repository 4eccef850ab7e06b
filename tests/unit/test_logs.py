"""Structured logs: one JSON object per line, allow-listed fields, nothing personal."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from contracts.errors import SignatureInvalid
from kpr.logs import JsonFormatter, configure_logging, redact

NATIONAL_ID = "01017012345"  # synthetic: the shape of a national id, not a real person


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """A logger ``kpr.test`` writing JSON lines into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kpr.test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_time_level_logger_message_and_extras(
    output: io.StringIO,
) -> None:
    """The allow-listed extras travel as top-level fields beside the four fixed ones."""
    logging.getLogger("kpr.test").info(
        "delivery %s", "committed", extra={"message_id": "m-1", "event_id": "e-1", "reason": None}
    )
    [entry] = lines(output)
    assert entry["level"] == "info"
    assert entry["logger"] == "kpr.test"
    assert entry["message"] == "delivery committed"
    assert entry["message_id"] == "m-1"
    assert entry["event_id"] == "e-1"
    assert "reason" not in entry  # None is left out, not written as null
    assert str(entry["time"]).endswith("+00:00")


def test_extras_not_on_the_allow_list_are_dropped(output: io.StringIO) -> None:
    """A careless ``extra={"person": ...}`` cannot put a person into the log."""
    logging.getLogger("kpr.test").warning(
        "oops", extra={"person": {"national_id": NATIONAL_ID}, "birth_date": "1970-01-01"}
    )
    [entry] = lines(output)
    assert set(entry) == {"time", "level", "logger", "message"}
    assert NATIONAL_ID not in output.getvalue()


def test_an_eleven_digit_run_is_redacted_wherever_it_appears(output: io.StringIO) -> None:
    """Message text and allow-listed fields alike lose anything shaped like a national id."""
    logging.getLogger("kpr.test").info("got %s", NATIONAL_ID, extra={"message_id": NATIONAL_ID})
    assert NATIONAL_ID not in output.getvalue()
    [entry] = lines(output)
    assert entry["message"] == "got [redacted]"
    # Shorter and longer digit runs (HER-ids, org numbers, timestamps in ms) are kept.
    assert redact("her 8133973 org 310000019 ms 1750000000123") == (
        "her 8133973 org 310000019 ms 1750000000123"
    )


def test_a_library_exception_is_logged_as_its_class_and_stack_never_its_text(
    output: io.StringIO,
) -> None:
    """pydantic quotes the rejected input in its message; that text must not reach the log."""

    class Person(BaseModel):
        national_id: int

    try:
        Person.model_validate({"national_id": f"x{NATIONAL_ID}"})
    except ValidationError:
        logging.getLogger("kpr.test").exception("validation failed")
    [entry] = lines(output)
    assert entry["exc_type"] == "pydantic_core._pydantic_core.ValidationError"
    assert "exc_message" not in entry
    assert "test_logs.py" in str(entry["stack"])
    assert NATIONAL_ID not in output.getvalue()


def test_our_own_exception_text_is_kept(output: io.StringIO) -> None:
    """Our exception texts are written by us and safe; they help the operator."""
    try:
        raise SignatureInvalid("the message digest does not match")
    except SignatureInvalid:
        logging.getLogger("kpr.test").exception("rejected")
    [entry] = lines(output)
    assert entry["exc_message"] == "the message digest does not match"


def test_configure_logging_routes_everything_to_one_json_handler() -> None:
    """Calling it twice leaves one handler: no doubled lines."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    try:
        configure_logging(stream=buffer)
        configure_logging(stream=buffer)
        logging.getLogger("kpr.anything").info("hello", extra={"count": 3})
        assert [(e["message"], e["count"]) for e in lines(buffer)] == [("hello", 3)]
        assert logging.getLogger("aio_pika").getEffectiveLevel() == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
