"""The AppRec sender (consumers.apprecs) without a broker: what it skips, that a failing
broker is counted and never raised into the consumer, and the message it builds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from consumers.apprecs import AppRecDecision, AppRecSender, apprec_message
from contracts.addressregister import FileAddressRegister, PartyAddress
from contracts.apprec import AppRecMode, AppRecStatus, decode_apprec, encode_apprec
from contracts.envelope import CONTENT_TYPE
from contracts.errors import Reason
from contracts.pki import PkiDir
from contracts.topology import Topology
from contracts.wire import APP_PROPERTIES_HEADER, PROPERTIES_HEADER, bus_properties


class _Refusing:
    """A connection whose every channel fails, as a broker that is away."""

    def __init__(self) -> None:
        self.attempts = 0

    async def channel(self, **_: Any) -> Any:
        self.attempts += 1
        raise ConnectionError("broker away")


def _decision(status: AppRecStatus, sender: int | None = 90001, **changes: Any) -> AppRecDecision:
    fields: dict[str, Any] = {
        "status": status,
        "sender_her_id": sender,
        "original_message_id": str(uuid.uuid4()),
        "original_issued_at": datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
    }
    if status is AppRecStatus.REJECTED:
        fields |= {"reason": Reason.BAD_SIGNATURE, "description": "the signature does not verify"}
    return AppRecDecision(**(fields | changes))


def _register(pki: PkiDir) -> FileAddressRegister:
    certificate = pki.sender.encryption_certificate
    return FileAddressRegister({90001: PartyAddress(90001, certificate, "Testkommune EPJ")})


async def _run(pki: PkiDir, mode: AppRecMode, decisions: list[AppRecDecision]) -> list[Any]:
    counted: list[tuple[str, str]] = []
    sender = AppRecSender(
        _Refusing(),  # type: ignore[arg-type]
        topology=Topology(),
        signer=pki.register.signing_identity,
        address_register=_register(pki),
        mode=mode,
        observe=lambda status, outcome: counted.append((status, outcome)),
        drain_timeout_s=5.0,
    )
    async with sender:
        for decision in decisions:
            assert sender.submit(decision) is None  # returns at once, never raises
    return counted


async def test_unknown_senders_are_skipped_and_a_broker_failure_is_counted(
    dev_pki: PkiDir,
) -> None:
    counted = await _run(
        dev_pki,
        AppRecMode.ALL,
        [
            _decision(AppRecStatus.OK),
            _decision(AppRecStatus.REJECTED, sender=90002),  # not in the register
            _decision(AppRecStatus.REJECTED, sender=None),  # no HER-id to address
            _decision(AppRecStatus.OK, original_message_id=None),  # nothing to refer to
        ],
    )
    assert sorted(counted) == [
        ("ok", "failed"),  # sealed, then the broker was away: counted, not raised
        ("ok", "skipped"),
        ("rejected", "skipped"),
        ("rejected", "skipped"),
    ]


async def test_the_mode_chooses_what_gets_an_apprec(dev_pki: PkiDir) -> None:
    decisions = [_decision(AppRecStatus.OK), _decision(AppRecStatus.REJECTED, sender=90002)]
    assert await _run(dev_pki, AppRecMode.OFF, decisions) == []
    assert await _run(dev_pki, AppRecMode.REJECTIONS, decisions) == [("rejected", "skipped")]


async def test_submit_does_not_wait_for_sealing_or_the_broker(dev_pki: PkiDir) -> None:
    """A hundred submissions take no more than queueing them: the work is the workers'."""
    sender = AppRecSender(
        _Refusing(),  # type: ignore[arg-type]
        topology=Topology(),
        signer=dev_pki.register.signing_identity,
        address_register=_register(dev_pki),
        drain_timeout_s=0.0,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(100):
        sender.submit(_decision(AppRecStatus.OK))
    assert loop.time() - started < 0.05
    await sender.aclose()
    await sender.aclose()  # harmless twice


def test_the_message_carries_the_national_properties(dev_pki: PkiDir) -> None:
    decision = _decision(AppRecStatus.REJECTED)
    party = _register(dev_pki).party(90001)
    assert party is not None
    apprec = decision.apprec(register_her_id=8133973, party=party)
    assert decode_apprec(encode_apprec(apprec)) == apprec
    assert apprec.receiver_name == "Testkommune EPJ"
    message = apprec_message(apprec, b"sealed", register_her_id=8133973)
    headers = message.headers
    assert message.content_type == CONTENT_TYPE
    assert message.reply_to == "8133973_async"
    assert message.correlation_id == message.message_id  # as the library, asynchronous
    assert headers["fromHerId"] == "8133973"
    assert headers["toHerId"] == "90001"
    assert headers["X-MessageInfo-OriginalMsgId"] == decision.original_message_id
    assert headers["X-MessageInfo-MsgId"] == apprec.id
    assert {APP_PROPERTIES_HEADER, PROPERTIES_HEADER} <= set(headers)
    # What an AMQP 1.0 receiver reads there (on RabbitMQ 3.x): the packed sections.
    packed = bus_properties({k: v for k, v in headers.items() if k.startswith("x-amqp-1.0")})
    assert packed.subject == "APPREC"
    assert packed.from_her_id == 8133973
    assert packed.to_her_id == 90001
