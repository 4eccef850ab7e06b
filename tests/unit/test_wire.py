"""The national bus's properties, from 0-9-1 headers and from RabbitMQ's packed AMQP 1.0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.wire import (
    APP_PROPERTIES_HEADER,
    MAX_PACKED_SECTION_BYTES,
    PROPERTIES_HEADER,
    BusProperties,
    Wire,
    bus_properties,
    pack_application_properties,
    pack_properties,
)

# Captured from RabbitMQ 3.10 with its rabbitmq_amqp1_0 plugin: what an aio-pika consumer
# received after python-qpid-proton sent to /exchange/NHNTest/8133973_async with the
# properties Helsenorge.Messaging sets (not built by this project's code).
CAPTURED_APP_PROPERTIES = (
    b"\x00St\xd1\x00\x00\x00\x86\x00\x00\x00\x08\xa1\tfromHerId\xa1\x0590001\xa1\x07toHerId"
    b"\xa1\x078133973\xa1\x14applicationTimeStamp\xa1\x192026-12-07T10:00:00+01:00\xa1\x05cpaId"
    b"\xa1$00000000-0000-0000-0000-000000000000"
)
CAPTURED_PROPERTIES = (
    b"\x00Ss\xc0v\x07\xa1\x07abc-123@@\xa1\x15DIALOG_INNBYGGER_TEST\xa1\x0b90001_async\xa1\x06"
    b"corr-1\xa3<application/pkcs7-mime; smime-type=signed-and-enveloped-data"
)


def test_the_packed_sections_rabbitmq_delivers_are_read_as_helsenorge_sent_them() -> None:
    read = bus_properties(
        {APP_PROPERTIES_HEADER: CAPTURED_APP_PROPERTIES, PROPERTIES_HEADER: CAPTURED_PROPERTIES}
    )
    assert read == BusProperties(
        from_her_id=90001,
        to_her_id=8133973,
        application_timestamp=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
        cpa_id="00000000-0000-0000-0000-000000000000",
        subject="DIALOG_INNBYGGER_TEST",
        wire=Wire.AMQP_1_0,
    )


@pytest.mark.parametrize("value", [90001, "90001", b"90001"])
def test_plain_headers_carry_her_ids_as_integers_or_digit_strings(value: object) -> None:
    read = bus_properties({"fromHerId": value, "toHerId": "8133973"})
    assert (read.from_her_id, read.to_her_id, read.wire) == (90001, 8133973, Wire.AMQP_0_9_1)


def test_a_plain_header_wins_over_the_packed_one() -> None:
    read = bus_properties({"fromHerId": 777, APP_PROPERTIES_HEADER: CAPTURED_APP_PROPERTIES})
    assert read.from_her_id == 777
    assert read.to_her_id == 8133973


@pytest.mark.parametrize(
    "value",
    [None, "", "0", 0, -5, True, "12a", "１２３", "1" * 10, 10**9, " 90001", 9.0, [90001], {}],
)
def test_what_is_not_a_her_id_reads_as_absent(value: object) -> None:
    assert bus_properties({"fromHerId": value}).from_her_id is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2026-12-07T10:00:00+01:00",
            datetime(2026, 12, 7, 10, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2026-12-07T09:00:00Z", datetime(2026, 12, 7, 9, tzinfo=UTC)),
        ("2026-12-07T10:00:00", None),  # no offset: ambiguous, not used
        ("yesterday", None),
        ("", None),
    ],
)
def test_application_timestamps_need_an_offset(text: str, expected: datetime | None) -> None:
    assert bus_properties({"applicationTimeStamp": text}).application_timestamp == expected


def test_our_packing_reads_back_and_matches_the_captured_form() -> None:
    properties = {
        "fromHerId": "90001",
        "toHerId": "8133973",
        "applicationTimeStamp": "2026-12-07T10:00:00+01:00",
        "cpaId": "00000000-0000-0000-0000-000000000000",
    }
    assert pack_application_properties(properties) == CAPTURED_APP_PROPERTIES
    packed = pack_properties(message_id="abc-123", subject="DIALOG_INNBYGGER_TEST")
    assert bus_properties({PROPERTIES_HEADER: packed}).subject == "DIALOG_INNBYGGER_TEST"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"garbage",
        CAPTURED_APP_PROPERTIES[:-3],
        b"\x00St@",  # a null section
        b"\xa1\x03abc",  # not a described section
        CAPTURED_PROPERTIES,  # the wrong section under this header
        b"\x00St\xd1\xff\xff\xff\xff",
        "a text, not bytes",
        b"\x00" * (MAX_PACKED_SECTION_BYTES + 1),
    ],
)
def test_an_unreadable_packed_section_is_absent_not_an_error(raw: object) -> None:
    read = bus_properties({APP_PROPERTIES_HEADER: raw})
    assert (read.from_her_id, read.to_her_id, read.cpa_id) == (None, None, None)


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_no_bytes_in_either_header_raise(app: bytes, properties: bytes) -> None:
    read = bus_properties({APP_PROPERTIES_HEADER: app, PROPERTIES_HEADER: properties})
    assert isinstance(read, BusProperties)
    assert read.from_her_id is None or 0 < read.from_her_id < 10**9
