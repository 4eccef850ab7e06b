"""The letter as KITH MsgHead v1.2: read and written, and hostile XML refused at once."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import xmlschema
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import MalformedMessage
from contracts.letter import LetterForm, Party, decode_letter, encode_letter
from contracts.msghead import BASE64_NAMESPACE, MSGHEAD_NAMESPACE, encode_msghead

EVENT = {"event_type": "kad.admission", "event_id": "0f7c3f4e-1d2a-4c6b-9b1e-5a8d7c6e5f40"}
WHEN = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _ours() -> bytes:
    return encode_msghead(
        message_id="4c1d8e2a-6b7f-4a90-8c3d-2e5f6a7b8c9d",
        sender_her_id=90001,
        sender_org_number="310000000",
        sender_name="Testkommune helsestasjon",
        recipient_her_id=8133973,
        event_json=orjson.dumps(EVENT),
        created_at=WHEN,
    )


def test_our_msghead_reads_back_as_the_letter_it_binds() -> None:
    letter = decode_letter(_ours())
    assert letter.form is LetterForm.MSGHEAD
    assert letter.message_id == "4c1d8e2a-6b7f-4a90-8c3d-2e5f6a7b8c9d"
    assert letter.created_at == WHEN
    assert letter.sender == Party(her_id=90001, org_number="310000000")
    assert letter.recipient_her_id == 8133973
    assert letter.event == EVENT


def test_the_json_letter_still_reads_and_says_so() -> None:
    letter = decode_letter(
        encode_letter(
            message_id="m-1",
            sender=Party(her_id=90001, org_number="310000000"),
            recipient_her_id=8133973,
            event_json=orjson.dumps(EVENT),
            created_at=WHEN,
        )
    )
    assert letter.form is LetterForm.JSON
    assert letter.event == EVENT


def test_a_json_letter_cannot_claim_a_form() -> None:
    raw = orjson.loads(
        encode_letter(
            message_id="m-1",
            sender=Party(her_id=90001, org_number="310000000"),
            recipient_her_id=8133973,
            event_json=orjson.dumps(EVENT),
        )
    )
    with pytest.raises(MalformedMessage, match="form"):
        decode_letter(orjson.dumps({**raw, "form": "msghead"}))


def _ident(value: str, kind: str) -> str:
    return (
        f'<Ident><Id>{value}</Id><TypeId DN="-" V="{kind}" S="2.16.578.1.12.4.1.1.9051"/></Ident>'
    )


def _library_shaped(**replace: str) -> bytes:
    """Modelled on Helsenorge.Messaging's Examples/SimpleSender/DIALOG_INNBYGGER_EKONTAKT.xml:
    a BOM and declaration, a comment, schemaLocation, nested organisations whose inner one
    is the communication party, a Patient element, GenDate with a fraction."""
    parts = {
        "type": "KPR_HENDELSE",
        "msgid": "0d77d041-f010-4ec8-9105-f3dda92fc320",
        "gendate": "2022-10-22T14:15:00.0Z",
        "attachment": base64.b64encode(orjson.dumps(EVENT)).decode(),
        "mime": "application/json",
        **replace,
    }
    return (
        '\ufeff<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!-- Eksempel: hodemelding med KPR-hendelse -->\n"
        f'<MsgHead xmlns="{MSGHEAD_NAMESPACE}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{MSGHEAD_NAMESPACE} MsgHead-v1_2.xsd">'
        "<MsgInfo>"
        f'<Type V="{parts["type"]}" DN="Hendelse til KPR"/>'
        "<MIGversion>v1.2 2006-05-24</MIGversion>"
        f"<GenDate>{parts['gendate']}</GenDate>"
        f"<MsgId>{parts['msgid']}</MsgId>"
        '<Ack DN="Ja" V="J"/>'
        "<Sender><Organisation><OrganisationName>Testkommune</OrganisationName>"
        f"{_ident('310000000', 'ENH')}{_ident('115851', 'HER')}"
        "<Organisation><OrganisationName>Helsestasjonen</OrganisationName>"
        f"{_ident('90001', 'HER')}"
        "</Organisation></Organisation></Sender>"
        "<Receiver><Organisation><OrganisationName>Helsedirektoratet</OrganisationName>"
        f"{_ident('8133973', 'HER')}"
        "</Organisation></Receiver>"
        "<Patient><FamilyName>Test</FamilyName><Ident><Id>13116900216</Id>"
        '<TypeId V="FNR" S="2.16.578.1.12.4.1.1.8116"/></Ident></Patient>'
        "</MsgInfo>"
        "<Document><RefDoc>"
        '<IssueDate V="2022-10-22T14:15:00.0Z"/><MsgType V="A" DN="Vedlegg"/>'
        f"<MimeType>{parts['mime']}</MimeType>"
        f'<Content><Base64Container xmlns="{BASE64_NAMESPACE}">\n{parts["attachment"]}\n'
        "</Base64Container></Content>"
        "</RefDoc></Document></MsgHead>"
    ).encode()


def test_a_msghead_shaped_as_the_library_samples_reads_with_the_inner_her_ids() -> None:
    letter = decode_letter(_library_shaped())
    assert letter.sender == Party(her_id=90001, org_number="310000000")
    assert letter.recipient_her_id == 8133973
    assert letter.created_at == datetime(2022, 10, 22, 14, 15, tzinfo=UTC)
    assert "13116900216" not in letter.model_dump_json()  # the head's Patient is not kept


def _billion_laughs() -> bytes:
    """Ten levels of ten references each: 10^10 "lol"s if an entity were ever expanded."""
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(entities)}]>'
        f'<MsgHead xmlns="{MSGHEAD_NAMESPACE}">&lol9;</MsgHead>'
    ).encode()


HOSTILE = {
    "billion laughs": _billion_laughs(),
    "external entity": (
        '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        f'<MsgHead xmlns="{MSGHEAD_NAMESPACE}">&x;</MsgHead>'
    ).encode(),
    "external parameter entity": (
        '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM "http://10.0.0.1/x.dtd"> %p;]>'
        f'<MsgHead xmlns="{MSGHEAD_NAMESPACE}"/>'
    ).encode(),
    "external DTD": (
        '<?xml version="1.0"?><!DOCTYPE MsgHead SYSTEM "http://10.0.0.1/msghead.dtd">'
        f'<MsgHead xmlns="{MSGHEAD_NAMESPACE}"/>'
    ).encode(),
    "not well formed": b"<MsgHead><MsgInfo></MsgHead>",
    "another namespace": b'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2004-11-21"/>',
    "no namespace": b"<MsgHead/>",
    "another message type": _library_shaped(type="DIALOG_INNBYGGER_EKONTAKT"),
    "an empty MsgId": _library_shaped(msgid=" "),
    "a GenDate without zone": _library_shaped(gendate="2022-10-22T14:15:00"),
    "a GenDate that is no date": _library_shaped(gendate="i går"),
    "an attachment not base64": _library_shaped(attachment="!!!not base64!!!"),
    "an attachment not JSON": _library_shaped(attachment=base64.b64encode(b"<x/>").decode()),
    "an attachment not an object": _library_shaped(attachment=base64.b64encode(b"[1]").decode()),
    "another MIME type": _library_shaped(mime="text/xml"),
    "two MsgIds": _library_shaped(msgid="a</MsgId><MsgId>b"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("document", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_or_foreign_xml_is_malformed_at_once(document: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_letter(document)


@given(st.binary(max_size=400))
def test_no_bytes_behind_a_tag_escape_as_another_error(tail: bytes) -> None:
    try:
        letter = decode_letter(b"<" + tail)
    except MalformedMessage:
        return
    assert letter.form is LetterForm.MSGHEAD  # only a whole KPR MsgHead gets this far


# The profile's schema (contracts/schemas/kpr-msghead-1.xsd) says what the reader reads.
SCHEMA = xmlschema.XMLSchema10(
    Path(__file__).resolve().parents[2] / "contracts" / "schemas" / "kpr-msghead-1.xsd"
)

#: Refused by the reader for what the schema can say too (structure, types, fixed values).
#: Left out: what only the reader checks (well-formedness, DTDs and entities, the
#: attachment's JSON).
SCHEMA_REFUSES = (
    "another namespace",
    "no namespace",
    "another message type",
    "an empty MsgId",
    "a GenDate without zone",
    "a GenDate that is no date",
    "an attachment not base64",
    "another MIME type",
    "two MsgIds",
)


@pytest.mark.parametrize("document", [_ours(), _library_shaped()], ids=["ours", "library"])
def test_what_we_write_and_the_library_shaped_sample_are_valid_to_the_profile(
    document: bytes,
) -> None:
    SCHEMA.validate(document.decode("utf-8-sig"))


@pytest.mark.parametrize("name", SCHEMA_REFUSES)
def test_the_profile_schema_refuses_what_the_reader_refuses(name: str) -> None:
    assert not SCHEMA.is_valid(HOSTILE[name].decode("utf-8-sig"))
