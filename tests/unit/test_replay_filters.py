"""Reading dead-letter headers, selecting dead letters, and what a replayed copy carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pamqp import encode as pamqp_encode

from consumers.audit import AuditLog
from consumers.deadletter import (
    FAILURE_HEADERS,
    HEADER_ATTEMPT,
    HEADER_DEAD_LETTERED_AT,
    HEADER_DESCRIPTION,
    HEADER_REASON,
    HEADER_REPLAY_COUNT,
    HEADER_RETRY_HISTORY,
    HEADER_SENDER_HER_ID,
)
from consumers.dlq_filters import (
    DeadLetterInfo,
    DlqFilter,
    count_by_reason,
    describe,
    parse_time,
    replay_headers,
)
from consumers.receipts import Receipt
from contracts.errors import Reason
from contracts.wire import APP_PROPERTIES_HEADER, bus_properties, pack_application_properties

WHEN = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _ours(**extra: Any) -> dict[str, Any]:
    return {
        "fromHerId": 90001,
        "eventType": "kad.admission",
        HEADER_REASON: "sender-not-authorised",
        HEADER_DESCRIPTION: "organisation 310000000 may not report for 310000027",
        HEADER_DEAD_LETTERED_AT: WHEN.isoformat(),
        HEADER_SENDER_HER_ID: 90001,
        **extra,
    }


def _info(**changes: Any) -> DeadLetterInfo:
    base = describe(_ours(), message_id="m-1", size=10)
    return base.model_copy(update=changes)


def test_describe_reads_the_consumers_headers() -> None:
    """A consumer dead letter: reason, description, time, sender, type, replay count."""
    info = describe(_ours(**{HEADER_REPLAY_COUNT: 2}), message_id="m-1", size=1234)
    assert info.reason == "sender-not-authorised"
    assert info.description.startswith("organisation")
    assert info.dead_lettered_at == WHEN
    assert info.sender_her_id == 90001
    assert info.event_type == "kad.admission"
    assert info.replay_count == 2
    assert info.size == 1234


def test_describe_reads_a_broker_dead_letter_as_delivery_limit() -> None:
    """No x-kpr headers, x-death from the delivery limit: reason delivery-limit, the
    death's time, the sender from the producer's fromHerId header."""
    death_time = datetime(2025, 3, 1, 13, 0)  # the broker's timestamps carry no zone
    headers = {
        "fromHerId": 90001,
        "eventType": "hst.consultation",
        "x-first-death-reason": "delivery_limit",
        "x-death": [
            {
                "reason": "delivery_limit",
                "queue": "8133973_async",
                "count": 1,
                "time": death_time,
                "exchange": "kpr.events",
            }
        ],
    }
    info = describe(headers, message_id="m-2", size=5)
    assert info.reason == Reason.DELIVERY_LIMIT.value
    assert info.dead_lettered_at == death_time.replace(tzinfo=UTC)
    assert "8133973_async" in info.description
    assert info.sender_her_id == 90001
    assert info.event_type == "hst.consultation"
    assert info.broker_death_count == 1


def test_describe_uses_the_latest_broker_death_for_a_retried_then_poisoned_message() -> None:
    """A message that expired out of a delay queue first and then hit the delivery limit:
    the first death says 'expired', the latest (first in x-death) decides."""
    headers = {
        "x-first-death-reason": "expired",
        "x-death": [
            {"reason": "delivery_limit", "queue": "q_async", "count": 1},
            {"reason": "expired", "queue": "kpr.retry.0", "count": 1},
        ],
    }
    assert describe(headers, message_id="m", size=1).reason == "delivery-limit"


def test_describe_names_an_unknown_broker_reason() -> None:
    """Other broker reasons are shown, prefixed, rather than guessed into the vocabulary."""
    info = describe({"x-first-death-reason": "maxlen"}, message_id=None, size=0)
    assert info.reason == "broker-maxlen"
    assert info.message_id == ""
    assert info.dead_lettered_at is None


def test_the_empty_filter_matches_everything() -> None:
    """No criteria: every dead letter matches, even one without a time."""
    assert DlqFilter().matches(_info())
    assert DlqFilter().matches(_info(dead_lettered_at=None))


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (DlqFilter(reasons=frozenset({"sender-not-authorised", "malformed"})), True),
        (DlqFilter(reasons=frozenset({"malformed"})), False),
        (DlqFilter(sender_her_id=90001), True),
        (DlqFilter(sender_her_id=90002), False),
        (DlqFilter(event_type="kad.admission"), True),
        (DlqFilter(event_type="kad.discharge"), False),
        (DlqFilter(message_ids=frozenset({"m-1", "m-9"})), True),
        (DlqFilter(message_ids=frozenset({"m-9"})), False),
        (DlqFilter(since=WHEN), True),
        (DlqFilter(since=WHEN + timedelta(seconds=1)), False),
        (DlqFilter(until=WHEN + timedelta(seconds=1)), True),
        (DlqFilter(until=WHEN), False),
        (DlqFilter(reasons=frozenset({"sender-not-authorised"}), sender_her_id=90002), False),
    ],
)
def test_each_criterion_selects(selection: DlqFilter, expected: bool) -> None:
    """Each criterion holds or not on its own; several must all hold; since is inclusive,
    until exclusive."""
    assert selection.matches(_info()) is expected


def test_a_time_bound_excludes_a_letter_without_a_time() -> None:
    """A letter whose time is unknown cannot be said to fall inside a window."""
    assert not DlqFilter(since=WHEN - timedelta(days=1)).matches(_info(dead_lettered_at=None))


def test_parse_time_takes_a_time_without_a_zone_as_utc() -> None:
    """`--since 2025-03-01T12:00` means UTC, and compares with zoned header times."""
    assert parse_time("2025-03-01T12:00") == WHEN
    assert parse_time("2025-03-01T13:00+01:00") == WHEN
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_time("yesterday")


def test_the_filter_describes_itself_for_the_audit_log() -> None:
    """Only given criteria appear, as JSON-friendly values."""
    selection = DlqFilter(reasons=frozenset({"b", "a"}), since=WHEN)
    assert selection.as_dict() == {"reasons": ["a", "b"], "since": WHEN.isoformat()}
    assert DlqFilter().as_dict() == {}


def test_count_by_reason_orders_by_count_then_name() -> None:
    """The most frequent reason first."""
    infos = [_info(reason="b"), _info(reason="a"), _info(reason="b"), _info(reason="c")]
    assert list(count_by_reason(infos).items()) == [("b", 2), ("a", 1), ("c", 1)]


def test_a_replayed_copy_keeps_the_senders_headers_and_raises_the_count() -> None:
    """Failure headers and the broker's x-death family stay behind; fromHerId and the
    other sender headers travel; the replay count goes up by one."""
    headers = _ours(
        **{
            HEADER_REPLAY_COUNT: 1,
            HEADER_ATTEMPT: 3,
            HEADER_RETRY_HISTORY: ["..."],
            "x-death": [{"reason": "delivery_limit"}],
            "x-first-death-reason": "delivery_limit",
            "x-first-death-queue": "q",
            "x-last-death-reason": "delivery_limit",
            "x-delivery-count": 2,
        }
    )
    copy = replay_headers(headers)
    assert copy == {"fromHerId": 90001, "eventType": "kad.admission", HEADER_REPLAY_COUNT: 2}
    assert not FAILURE_HEADERS & copy.keys()
    assert replay_headers(None) == {HEADER_REPLAY_COUNT: 1}


def test_a_receipt_names_the_national_error_condition_and_holds_no_content() -> None:
    """The receipt JSON: ids, type, reason, national condition, our description, time."""
    receipt = Receipt.for_rejection(
        original_message_id="m-1",
        reason=Reason.SENDER_NOT_AUTHORISED,
        description="organisation 310000000 may not report for 310000027",
        event_id="e-1",
        event_type="kad.admission",
        rejected_at=WHEN,
    )
    assert receipt.error_condition == "abuse:spoofing-attack"
    assert set(receipt.model_dump()) == {
        "original_message_id",
        "event_id",
        "event_type",
        "reason",
        "error_condition",
        "description",
        "rejected_at",
    }
    assert b'"reason":"sender-not-authorised"' in receipt.to_json()


def test_the_audit_log_appends_one_json_line_per_action(tmp_path: Any) -> None:
    """Who, when, what, with which filters, which ids; earlier lines stay."""
    log = AuditLog(tmp_path / "sub" / "audit.jsonl", operator="ops")
    log.append("replay", filters={"reasons": ["malformed"]}, message_ids=["a", "b"], dry_run=False)
    log.append("purge", filters={}, message_ids=[])
    first, second = log.entries()
    assert first["operator"] == "ops"
    assert first["action"] == "replay"
    assert first["message_ids"] == ["a", "b"]
    assert first["filters"] == {"reasons": ["malformed"]}
    assert datetime.fromisoformat(first["at"]).tzinfo is not None
    assert second["action"] == "purge"
    assert len((tmp_path / "sub" / "audit.jsonl").read_bytes().splitlines()) == 2


def test_a_replay_keeps_the_partition_key_so_it_returns_to_its_partition() -> None:
    """The sender's partition header survives a replay; per-person order is kept."""
    from contracts.partitioning import PARTITION_HEADER

    carried = replay_headers({PARTITION_HEADER: "0a1b2c3d", "x-kpr-reason": "malformed"})
    assert carried[PARTITION_HEADER] == "0a1b2c3d"
    assert "x-kpr-reason" not in carried


def test_packed_amqp_1_0_sections_are_carried_in_a_form_pamqp_can_write_again() -> None:
    """pamqp reads a byte-array header as ``bytes`` but writes only ``bytearray``: the
    replayed copy of a 1.0 sender's message must still carry (and encode) its sections."""
    packed = pack_application_properties({"fromHerId": "90001"})
    copy = replay_headers({APP_PROPERTIES_HEADER: packed, "nested": {"raw": b"\x01"}})
    assert copy[APP_PROPERTIES_HEADER] == bytearray(packed)
    assert bus_properties(copy).from_her_id == 90001
    encoded = pamqp_encode.field_table(copy)  # raises TypeError on a bytes value
    assert bytes(packed) in encoded
