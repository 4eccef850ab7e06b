"""The letter as KITH MsgHead v1.2: what the national bus's EPJ systems send. Pure: no I/O.

MsgHead carries what :mod:`contracts.letter` binds (message id, creation time, sender and
receiver by HER-id, the sender's organisation number) in its own elements, and the KPR
event, unchanged JSON, as a base64 attachment (profile ``kpr-msghead-1``)::

    <MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">
      <MsgInfo>
        <Type V="KPR_HENDELSE" DN="Hendelse til Kommunalt pasient- og brukerregister"/>
        <MIGversion>v1.2 2006-05-24</MIGversion>
        <GenDate>2026-12-07T10:00:00Z</GenDate>
        <MsgId>{message id, = the AMQP message-id}</MsgId>
        <Sender><Organisation>
          <OrganisationName>...</OrganisationName>
          <Ident><Id>{org number}</Id><TypeId V="ENH" S="2.16.578.1.12.4.1.1.9051"/></Ident>
          <Ident><Id>{sender HER-id}</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9051"/></Ident>
        </Organisation></Sender>
        <Receiver><Organisation>... {register HER-id, type HER} ...</Organisation></Receiver>
      </MsgInfo>
      <Document><RefDoc>
        <IssueDate V="..."/><MsgType V="A" DN="Vedlegg"/>
        <MimeType>application/json</MimeType><Description>kpr-event</Description>
        <Content><Base64Container xmlns="http://www.kith.no/xmlstds/base64container">
          {the event's JSON, base64}
        </Base64Container></Content>
      </RefDoc></Document>
    </MsgHead>

As in Helsenorge's samples, an ``Organisation`` may hold a sub-organisation: the sender's
and receiver's HER-id is the innermost one (the communication party in the address
register); the organisation number is the first ``ENH`` ident. A ``Patient`` element is
ignored: the person is the event's, validated there, and never kept from the head.

The XML is read with defusedxml, DTDs forbidden: an entity expansion bomb or an external
entity is :class:`~contracts.errors.MalformedMessage` at once, never a hang or a fetch.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Final
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

import orjson
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pydantic import ValidationError

from contracts.errors import MalformedMessage

__all__ = [
    "BASE64_NAMESPACE",
    "MESSAGE_TYPE",
    "MESSAGE_TYPE_NAME",
    "MSGHEAD_NAMESPACE",
    "decode_msghead",
    "encode_msghead",
    "is_xml",
]

MSGHEAD_NAMESPACE: Final = "http://www.kith.no/xmlstds/msghead/2006-05-24"
BASE64_NAMESPACE: Final = "http://www.kith.no/xmlstds/base64container"
MESSAGE_TYPE: Final = "KPR_HENDELSE"
MESSAGE_TYPE_NAME: Final = "Hendelse til Kommunalt pasient- og brukerregister"
_MIG_VERSION: Final = "v1.2 2006-05-24"
_IDENT_SYSTEM: Final = "2.16.578.1.12.4.1.1.9051"
_EVENT_MIME_TYPE: Final = "application/json"

_M = f"{{{MSGHEAD_NAMESPACE}}}"
_B = f"{{{BASE64_NAMESPACE}}}"


def is_xml(content: bytes) -> bool:
    """Whether signed content is XML (a MsgHead) rather than a JSON letter."""
    return content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"


def encode_msghead(
    *,
    message_id: str,
    sender_her_id: int,
    sender_org_number: str,
    sender_name: str,
    recipient_her_id: int,
    event_json: bytes,
    created_at: datetime,
) -> bytes:
    """A MsgHead v1.2 document (UTF-8, with an XML declaration) around ``event_json``."""
    when = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Plain names and xmlns attributes: ElementTree would otherwise invent ns0: prefixes.
    head = Element("MsgHead", xmlns=MSGHEAD_NAMESPACE)
    info = SubElement(head, "MsgInfo")
    SubElement(info, "Type", V=MESSAGE_TYPE, DN=MESSAGE_TYPE_NAME)
    SubElement(info, "MIGversion").text = _MIG_VERSION
    SubElement(info, "GenDate").text = when
    SubElement(info, "MsgId").text = message_id
    sender = SubElement(SubElement(info, "Sender"), "Organisation")
    SubElement(sender, "OrganisationName").text = sender_name
    _ident(sender, sender_org_number, "ENH", "Organisasjonsnummeret i Enhetsregisteret")
    _ident(sender, str(sender_her_id), "HER", "HER-id")
    receiver = SubElement(SubElement(info, "Receiver"), "Organisation")
    SubElement(receiver, "OrganisationName").text = "Kommunalt pasient- og brukerregister"
    _ident(receiver, str(recipient_her_id), "HER", "HER-id")
    document = SubElement(SubElement(head, "Document"), "RefDoc")
    SubElement(document, "IssueDate", V=when)
    SubElement(document, "MsgType", V="A", DN="Vedlegg")
    SubElement(document, "MimeType").text = _EVENT_MIME_TYPE
    SubElement(document, "Description").text = "kpr-event"
    content = SubElement(document, "Content")
    SubElement(content, "Base64Container", xmlns=BASE64_NAMESPACE).text = base64.b64encode(
        event_json
    ).decode()
    document_bytes: bytes = tostring(head, encoding="utf-8", xml_declaration=True)
    return document_bytes


def _ident(parent: Element, value: str, kind: str, name: str) -> None:
    ident = SubElement(parent, "Ident")
    SubElement(ident, "Id").text = value
    SubElement(ident, "TypeId", V=kind, DN=name, S=_IDENT_SYSTEM)


def decode_msghead(data: bytes) -> dict[str, object]:
    """The letter's fields from a MsgHead, for :class:`contracts.letter.Letter`; anything
    that is not a KPR MsgHead of this profile is :class:`MalformedMessage`."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise MalformedMessage("the MsgHead declares a DTD or entities; none are allowed") from None
    except (ParseError, ValueError):
        raise MalformedMessage("the signed content is not well-formed XML") from None
    if root.tag != f"{_M}MsgHead":
        raise MalformedMessage("the signed XML is not a MsgHead v1.2 (namespace 2006-05-24)")
    info = _one(root, "MsgInfo")
    kind = _one(info, "Type").get("V")
    if kind != MESSAGE_TYPE:
        raise MalformedMessage(f"the MsgHead's message type is not {MESSAGE_TYPE}")
    sender = _one(_one(info, "Sender"), "Organisation")
    receiver = _one(_one(info, "Receiver"), "Organisation")
    return {
        "message_id": _text(_one(info, "MsgId"), "MsgId"),
        "created_at": _datetime(_text(_one(info, "GenDate"), "GenDate")),
        "sender": {"her_id": _her_id(sender), "org_number": _first_ident(sender, "ENH")},
        "recipient_her_id": _her_id(receiver),
        "event": _event(_one(_one(root, "Document"), "RefDoc")),
    }


def _one(parent: Element, name: str) -> Element:
    found = parent.findall(f"{_M}{name}")
    if len(found) != 1:
        raise MalformedMessage(f"the MsgHead needs exactly one {name} here, found {len(found)}")
    return found[0]


def _text(element: Element, name: str) -> str:
    text = (element.text or "").strip()
    if not text:
        raise MalformedMessage(f"the MsgHead's {name} is empty")
    return text


def _datetime(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedMessage("the MsgHead's GenDate is not an xs:dateTime") from None
    if when.tzinfo is None:
        raise MalformedMessage("the MsgHead's GenDate has no time zone")
    return when


def _idents(organisation: Element, kind: str) -> list[str]:
    values = []
    for ident in organisation.findall(f"{_M}Ident"):
        type_id = ident.find(f"{_M}TypeId")
        if type_id is not None and type_id.get("V") == kind:
            values.append(_text(_one(ident, "Id"), "Ident/Id"))
    return values


def _first_ident(organisation: Element, kind: str) -> str:
    current: Element | None = organisation
    while current is not None:
        found = _idents(current, kind)
        if found:
            return found[0]
        current = current.find(f"{_M}Organisation")
    raise MalformedMessage(f"the MsgHead's organisation has no {kind} ident")


def _her_id(organisation: Element) -> str:
    """The innermost organisation's HER-id (the communication party)."""
    her_id = None
    current: Element | None = organisation
    while current is not None:
        found = _idents(current, "HER")
        if len(found) > 1:
            raise MalformedMessage("an organisation in the MsgHead has two HER-ids")
        if found:
            her_id = found[0]
        current = current.find(f"{_M}Organisation")
    if her_id is None:
        raise MalformedMessage("the MsgHead's organisation has no HER-id")
    return her_id


def _event(document: Element) -> object:
    mime = document.find(f"{_M}MimeType")
    if mime is None or (mime.text or "").strip() != _EVENT_MIME_TYPE:
        raise MalformedMessage(f"the MsgHead's RefDoc is not {_EVENT_MIME_TYPE}")
    container = _one(document, "Content").find(f"{_B}Base64Container")
    if container is None:
        raise MalformedMessage("the MsgHead's RefDoc holds no Base64Container")
    try:
        raw = base64.b64decode("".join((container.text or "").split()), validate=True)
        return orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError, ValidationError):
        raise MalformedMessage("the MsgHead's attachment is not a base64 JSON event") from None
