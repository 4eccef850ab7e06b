"""KITH AppRec v1.1, the application receipt the register sends for every message it decided.

Pure: no I/O. An AppRec tells the sender's EPJ that its message was taken (status 1, OK) or
refused (status 2, Avvist, with one ``Error`` per reason). It is an ordinary business
message on the national bus: signed, encrypted to the receiver, sent to its ``_async``
queue (see :mod:`consumers.apprecs`)::

    <AppRec xmlns="http://www.kith.no/xmlstds/apprec/2012-02-15">
      <MsgType V="APPREC"/>
      <MIGversion>v1.1 2012-02-15</MIGversion>
      <GenDate>2026-12-07T10:00:01Z</GenDate>
      <Id>{a fresh GUID}</Id>
      <Sender><HCP><Inst>
        <Name>Kommunalt pasient- og brukerregister</Name><Id>{register HER-id}</Id>
        <TypeId V="HER" DN="HER-id"/>
      </Inst></HCP></Sender>
      <Receiver><HCP><Inst>... {the original sender's HER-id} ...</Inst></HCP></Receiver>
      <Status V="2" DN="Avvist"/>
      <Error V="S01" DN="Feil på signatur" S="2.16.578.1.12.4.1.1.8221"
             OT="bad-signature: the signature does not verify"/>
      <OriginalMsgId>
        <MsgType V="KPR_HENDELSE" DN="Hendelse til Kommunalt pasient- og brukerregister"/>
        <IssueDate>2026-12-07T10:00:00Z</IssueDate>
        <Id>{the original message id}</Id>
      </OriginalMsgId>
    </AppRec>

Code systems (KITH/Volven): ``Status`` is kodeverk 8258 "Status for mottak av melding"
(:data:`STATUS_CODE_SYSTEM`: 1 OK, 2 Avvist, 3 OK, feil i delmelding); ``Error`` is kodeverk
8221 "Feilmelding for applikasjonskvittering" (:data:`ERROR_CODE_SYSTEM`). ``Status``,
``MsgType`` and ``TypeId`` are of the KITH type CS (``V`` and ``DN`` only, as in
Helsenorge.Messaging's sample ``MetadataTests_Apprec11.xml``), so 8258 is not written as an
attribute; ``Error`` is a CV, which carries ``S`` and the original text ``OT``: there our
own reason code and description (:mod:`contracts.errors`), never anything from the message.

No personal data: ids, HER-ids, times, names of organisations and our own texts only.
Parsed with defusedxml, DTDs and entities forbidden, as :mod:`contracts.msghead`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from contracts.errors import MalformedMessage, Reason
from contracts.msghead import MESSAGE_TYPE, MESSAGE_TYPE_NAME
from contracts.wire import application_timestamp

__all__ = [
    "APPREC_MESSAGE_TYPE",
    "APPREC_MIG_VERSION",
    "APPREC_NAMESPACE",
    "ERROR_CODE_SYSTEM",
    "STATUS_CODE_SYSTEM",
    "AppRec",
    "AppRecError",
    "AppRecMode",
    "AppRecStatus",
    "apprec_error",
    "decode_apprec",
    "encode_apprec",
]

APPREC_NAMESPACE: Final = "http://www.kith.no/xmlstds/apprec/2012-02-15"
APPREC_MESSAGE_TYPE: Final = "APPREC"
APPREC_MIG_VERSION: Final = "v1.1 2012-02-15"
#: Kodeverk 8258 "Status for mottak av melding" (the values of ``Status/@V``).
STATUS_CODE_SYSTEM: Final = "2.16.578.1.12.4.1.1.8258"
#: Kodeverk 8221 "Feilmelding for applikasjonskvittering" (``Error/@S``).
ERROR_CODE_SYSTEM: Final = "2.16.578.1.12.4.1.1.8221"
REGISTER_NAME: Final = "Kommunalt pasient- og brukerregister"
#: The longest original text we write: ours are one line, but a bound keeps it so.
MAX_ORIGINAL_TEXT: Final = 500

_A = f"{{{APPREC_NAMESPACE}}}"


@enum.unique
class AppRecStatus(enum.StrEnum):
    """``Status/@V`` (kodeverk 8258)."""

    OK = "1"
    REJECTED = "2"
    OK_ERROR_IN_PART = "3"  # never sent by us (one event per message), but read

    @property
    def display_name(self) -> str:
        return _STATUS_NAMES[self]


@enum.unique
class AppRecMode(enum.StrEnum):
    """Which decisions the register sends an AppRec for (``KPR_APPREC``)."""

    ALL = "all"  # committed (and duplicate: a resend whose first AppRec may be lost) and refused
    REJECTIONS = "rejections"
    OFF = "off"

    def sends(self, status: AppRecStatus) -> bool:
        if self is AppRecMode.OFF:
            return False
        return self is AppRecMode.ALL or status is not AppRecStatus.OK


_STATUS_NAMES: Final = {
    AppRecStatus.OK: "OK",
    AppRecStatus.REJECTED: "Avvist",
    AppRecStatus.OK_ERROR_IN_PART: "OK, feil i delmelding",
}

# Kodeverk 8221, the codes we use. A sender's EPJ acts on these; our own reason code, in
# OT, says precisely what failed.
_ERROR_NAMES: Final = {
    "E21": "Mottaker finnes ikke",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "S03": "Tilbaketrukket sertifikat",
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "T99": "Annen feil på format",
    "X99": "Annen feil",
}
_ERROR_OF_REASON: Final = {
    Reason.MALFORMED: "T01",
    Reason.TOO_LARGE: "T99",
    Reason.UNSUPPORTED_ALGORITHM: "T10",
    # unreadable to us: encrypted to another certificate, or damaged on the way
    Reason.UNDECRYPTABLE: "T01",
    Reason.BAD_SIGNATURE: "S01",
    Reason.UNTRUSTED_CERTIFICATE: "S02",
    Reason.EXPIRED_CERTIFICATE: "S02",
    Reason.REVOKED_CERTIFICATE: "S03",
    Reason.SENDER_NOT_AUTHORISED: "X99",
    Reason.WRONG_RECIPIENT: "E21",
    Reason.INVALID_CONTRACT: "T02",
    Reason.UNKNOWN_SCHEMA_VERSION: "T10",
    Reason.CONFLICTING_DUPLICATE: "X99",
    Reason.RETRIES_EXHAUSTED: "X99",
    Reason.DELIVERY_LIMIT: "X99",
}


@dataclass(frozen=True)
class AppRecError:
    """One ``Error``: a code of kodeverk 8221, its name, and our original text."""

    code: str
    name: str
    original_text: str | None = None
    code_system: str = ERROR_CODE_SYSTEM


def apprec_error(reason: Reason, description: str) -> AppRecError:
    """The ``Error`` for one of our rejection reasons; ``OT`` is ``"{reason}: {description}"``
    (both ours, never personal: see :mod:`contracts.errors`)."""
    code = _ERROR_OF_REASON[reason]
    text = f"{reason.value}: {description}" if description else reason.value
    return AppRecError(code, _ERROR_NAMES[code], " ".join(text.split())[:MAX_ORIGINAL_TEXT])


@dataclass(frozen=True)
class AppRec:
    """What an AppRec v1.1 says, as we write it and as we read one back."""

    id: str
    generated_at: datetime
    sender_her_id: int
    receiver_her_id: int
    status: AppRecStatus
    original_message_id: str
    original_issued_at: datetime
    original_message_type: str = MESSAGE_TYPE
    original_message_type_name: str | None = MESSAGE_TYPE_NAME
    errors: tuple[AppRecError, ...] = ()
    sender_name: str = REGISTER_NAME
    receiver_name: str = ""

    def __post_init__(self) -> None:
        if self.status is AppRecStatus.REJECTED and not self.errors:
            raise ValueError("a rejecting AppRec names at least one error")
        if self.status is AppRecStatus.OK and self.errors:
            raise ValueError("an OK AppRec names no error")
        for when in (self.generated_at, self.original_issued_at):
            if when.tzinfo is None:
                raise ValueError("AppRec times need a time zone")


def encode_apprec(apprec: AppRec) -> bytes:
    """The AppRec as a UTF-8 document with an XML declaration."""
    # Plain names and an xmlns attribute: ElementTree would otherwise invent ns0: prefixes.
    root = Element("AppRec", xmlns=APPREC_NAMESPACE)
    SubElement(root, "MsgType", V=APPREC_MESSAGE_TYPE, DN="Applikasjonskvittering")
    SubElement(root, "MIGversion").text = APPREC_MIG_VERSION
    SubElement(root, "GenDate").text = application_timestamp(apprec.generated_at)
    SubElement(root, "Id").text = apprec.id
    _party(SubElement(root, "Sender"), apprec.sender_name, apprec.sender_her_id)
    receiver_name = apprec.receiver_name or f"HER-id {apprec.receiver_her_id}"
    _party(SubElement(root, "Receiver"), receiver_name, apprec.receiver_her_id)
    SubElement(root, "Status", V=apprec.status.value, DN=apprec.status.display_name)
    for error in apprec.errors:
        attributes = {"V": error.code, "DN": error.name, "S": error.code_system}
        if error.original_text:
            attributes["OT"] = error.original_text
        SubElement(root, "Error", attributes)
    original = SubElement(root, "OriginalMsgId")
    kind = {"V": apprec.original_message_type}
    if apprec.original_message_type_name:
        kind["DN"] = apprec.original_message_type_name
    SubElement(original, "MsgType", kind)
    SubElement(original, "IssueDate").text = application_timestamp(apprec.original_issued_at)
    SubElement(original, "Id").text = apprec.original_message_id
    document: bytes = tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _party(parent: Element, name: str, her_id: int) -> None:
    inst = SubElement(SubElement(parent, "HCP"), "Inst")
    SubElement(inst, "Name").text = name
    SubElement(inst, "Id").text = str(her_id)
    SubElement(inst, "TypeId", V="HER", DN="HER-id")


def decode_apprec(data: bytes) -> AppRec:
    """An AppRec v1.1 read back; anything else is :class:`MalformedMessage`."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise MalformedMessage("the AppRec declares a DTD or entities; none are allowed") from None
    except (ParseError, ValueError):
        raise MalformedMessage("the AppRec is not well-formed XML") from None
    if root.tag != f"{_A}AppRec":
        raise MalformedMessage("the XML is not an AppRec v1.1 (namespace 2012-02-15)")
    if _one(root, "MsgType").get("V") != APPREC_MESSAGE_TYPE:
        raise MalformedMessage(f"the AppRec's MsgType is not {APPREC_MESSAGE_TYPE}")
    try:
        status = AppRecStatus(_one(root, "Status").get("V", ""))
    except ValueError:
        raise MalformedMessage("the AppRec's Status is not one of kodeverk 8258") from None
    errors = tuple(
        AppRecError(
            code=element.get("V", ""),
            name=element.get("DN", ""),
            original_text=element.get("OT"),
            code_system=element.get("S", ""),
        )
        for element in root.findall(f"{_A}Error")
    )
    original = _one(root, "OriginalMsgId")
    original_type = _one(original, "MsgType")
    sender_name, sender_her_id = _inst(_one(root, "Sender"))
    receiver_name, receiver_her_id = _inst(_one(root, "Receiver"))
    try:
        return AppRec(
            id=_text(root, "Id"),
            generated_at=_datetime(_text(root, "GenDate")),
            sender_her_id=sender_her_id,
            sender_name=sender_name,
            receiver_her_id=receiver_her_id,
            receiver_name=receiver_name,
            status=status,
            errors=errors,
            original_message_type=original_type.get("V", ""),
            original_message_type_name=original_type.get("DN"),
            original_issued_at=_datetime(_text(original, "IssueDate")),
            original_message_id=_text(original, "Id"),
        )
    except ValueError as error:
        raise MalformedMessage(f"the AppRec is not consistent: {error}") from None


def _one(parent: Element, name: str) -> Element:
    found = parent.findall(f"{_A}{name}")
    if len(found) != 1:
        raise MalformedMessage(f"the AppRec needs exactly one {name} here, found {len(found)}")
    return found[0]


def _text(parent: Element, name: str) -> str:
    text = (_one(parent, name).text or "").strip()
    if not text:
        raise MalformedMessage(f"the AppRec's {name} is empty")
    return text


def _inst(party: Element) -> tuple[str, int]:
    """The institution's name and HER-id (``Inst/Id`` with ``TypeId/@V="HER"``): the
    communication party. A ``Dept`` or ``HCPerson`` below it is not ours to read."""
    inst = _one(_one(party, "HCP"), "Inst")
    if _one(inst, "TypeId").get("V") != "HER":
        raise MalformedMessage("the AppRec's Inst is not identified by a HER-id")
    her_id = _text(inst, "Id")
    if not her_id.isascii() or not her_id.isdigit() or int(her_id) == 0:
        raise MalformedMessage("the AppRec's Inst/Id is not a HER-id")
    return (_one(inst, "Name").text or "").strip(), int(her_id)


def _datetime(text: str) -> datetime:
    """xs:dateTime; one without a zone (the library's samples have them) is read as UTC."""
    try:
        # .NET writes seven fractional digits; Python's reader takes at most six.
        head, dot, tail = text.partition(".")
        if dot:
            digits = len(tail) - len(tail.lstrip("0123456789"))
            tail = tail[:6] + tail[digits:] if digits > 6 else tail
        when = datetime.fromisoformat(head + dot + tail)
    except ValueError:
        raise MalformedMessage("an AppRec time is not an xs:dateTime") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
