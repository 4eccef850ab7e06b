"""AppRec v1.1 (contracts.apprec): what we write reads back, the library's sample reads,
the XML hardening holds, and every rejection reason has a KITH error code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from xml.etree.ElementTree import fromstring

import pytest

from contracts.apprec import (
    APPREC_MIG_VERSION,
    APPREC_NAMESPACE,
    ERROR_CODE_SYSTEM,
    AppRec,
    AppRecStatus,
    apprec_error,
    decode_apprec,
    encode_apprec,
)
from contracts.errors import MalformedMessage, Reason
from contracts.msghead import MESSAGE_TYPE

SAMPLE = Path(__file__).parents[1] / "data" / "helsenorge" / "MetadataTests_Apprec11.xml"
A = f"{{{APPREC_NAMESPACE}}}"
WHEN = datetime(2026, 12, 7, 10, 0, 1, tzinfo=UTC)
SENT = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)


def _apprec(status: AppRecStatus = AppRecStatus.OK, **changes: object) -> AppRec:
    fields: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "generated_at": WHEN,
        "sender_her_id": 8133973,
        "receiver_her_id": 90001,
        "receiver_name": "Testkommune EPJ",
        "status": status,
        "original_message_id": str(uuid.uuid4()),
        "original_issued_at": SENT,
    }
    if status is AppRecStatus.REJECTED:
        fields["errors"] = (apprec_error(Reason.BAD_SIGNATURE, "the signature does not verify"),)
    fields.update(changes)
    return AppRec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [AppRecStatus.OK, AppRecStatus.REJECTED])
def test_an_apprec_reads_back_as_written(status: AppRecStatus) -> None:
    apprec = _apprec(status)
    assert decode_apprec(encode_apprec(apprec)) == apprec


def test_the_document_has_the_kith_shape() -> None:
    apprec = _apprec(AppRecStatus.REJECTED)
    document = encode_apprec(apprec)
    assert document.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = fromstring(document)
    assert root.tag == f"{A}AppRec"
    # The XSD's sequence: MsgType, MIGversion, GenDate, Id, Sender, Receiver, Status,
    # Error*, OriginalMsgId.
    assert [child.tag.removeprefix(A) for child in root] == [
        "MsgType", "MIGversion", "GenDate", "Id", "Sender", "Receiver", "Status", "Error",
        "OriginalMsgId",
    ]  # fmt: skip
    assert root.find(f"{A}MsgType").get("V") == "APPREC"  # type: ignore[union-attr]
    assert root.findtext(f"{A}MIGversion") == APPREC_MIG_VERSION == "v1.1 2012-02-15"
    assert root.findtext(f"{A}GenDate") == "2026-12-07T10:00:01Z"
    status = root.find(f"{A}Status")
    assert status is not None
    assert status.attrib == {"V": "2", "DN": "Avvist"}
    error = root.find(f"{A}Error")
    assert error is not None
    assert error.attrib == {
        "V": "S01",
        "DN": "Feil på signatur",
        "S": ERROR_CODE_SYSTEM,
        "OT": "bad-signature: the signature does not verify",
    }
    sender = root.find(f"{A}Sender/{A}HCP/{A}Inst")
    assert sender is not None
    assert sender.findtext(f"{A}Id") == "8133973"
    assert sender.find(f"{A}TypeId").get("V") == "HER"  # type: ignore[union-attr]
    original = root.find(f"{A}OriginalMsgId")
    assert original is not None
    assert original.find(f"{A}MsgType").get("V") == MESSAGE_TYPE  # type: ignore[union-attr]
    assert original.findtext(f"{A}IssueDate") == "2026-12-07T10:00:00Z"
    assert original.findtext(f"{A}Id") == apprec.original_message_id


def test_the_library_sample_reads() -> None:
    """Helsenorge.Messaging's own AppRec 1.1 test file (tests/data/helsenorge/SOURCE.md)."""
    apprec = decode_apprec(SAMPLE.read_bytes())
    assert apprec.id == "C829A5F9-5BBF-4376-A37F-ADE4B399916C"
    assert apprec.status is AppRecStatus.OK
    assert apprec.errors == ()
    assert apprec.sender_her_id == 56704  # the Inst, not its HCPerson 258521
    assert apprec.receiver_her_id == 59  # the Inst, not its Dept 90998
    assert apprec.original_message_id == "de1a95c0-4d0c-11e7-9598-0800200c9a66"
    assert apprec.original_message_type == "DIALOG_HELSEFAGLIG"
    # .NET's seven fractional digits, and a time without zone (read as UTC)
    assert apprec.generated_at == datetime(2020, 9, 14, 14, 1, 45, 467, tzinfo=UTC)
    assert apprec.original_issued_at == datetime(2017, 6, 12, 9, 35, 22, tzinfo=UTC)


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_a_kith_error_code(reason: Reason) -> None:
    error = apprec_error(reason, "a description of ours")
    assert error.code_system == ERROR_CODE_SYSTEM
    assert error.code[:1] in {"E", "S", "T", "X"}
    assert error.name
    assert error.original_text == f"{reason.value}: a description of ours"


def test_the_original_text_is_one_bounded_line() -> None:
    error = apprec_error(Reason.INVALID_CONTRACT, "line one\nline two " + "x" * 1000)
    assert error.original_text is not None
    assert "\n" not in error.original_text
    assert len(error.original_text) == 500


def test_status_and_errors_must_agree() -> None:
    with pytest.raises(ValueError, match="at least one error"):
        _apprec(AppRecStatus.REJECTED, errors=())
    with pytest.raises(ValueError, match="no error"):
        _apprec(AppRecStatus.OK, errors=(apprec_error(Reason.MALFORMED, ""),))
    with pytest.raises(ValueError, match="time zone"):
        _apprec(generated_at=datetime(2026, 12, 7))


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"<AppRec", "well-formed"),
        (b'<AppRec xmlns="http://www.kith.no/xmlstds/apprec/2004-11-21"/>', "v1.1"),
        (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]>'
            b'<AppRec xmlns="http://www.kith.no/xmlstds/apprec/2012-02-15">&e;</AppRec>',
            "DTD",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b"<a>&e;</a>",
            "DTD",
        ),
    ],
)
def test_what_is_not_an_apprec_is_malformed(document: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        decode_apprec(document)


def test_a_status_outside_8258_is_malformed() -> None:
    document = encode_apprec(_apprec()).replace(b'V="1" DN="OK"', b'V="9" DN="?"')
    with pytest.raises(MalformedMessage, match="8258"):
        decode_apprec(document)


def test_an_apprec_holds_no_personal_data() -> None:
    """Only ids, HER-ids, times, organisation names and our own texts: no element a
    person's identity could go in (MsgHead's Patient has no counterpart here)."""
    document = encode_apprec(_apprec(AppRecStatus.REJECTED))
    tags = {element.tag.removeprefix(A) for element in fromstring(document).iter()}
    assert tags == {
        "AppRec", "MsgType", "MIGversion", "GenDate", "Id", "Sender", "Receiver", "HCP",
        "Inst", "Name", "TypeId", "Status", "Error", "OriginalMsgId", "IssueDate",
    }  # fmt: skip
