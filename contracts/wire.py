"""The national bus's message properties, read from whichever AMQP form carried them.

Pure: a mapping of broker headers in, :class:`BusProperties` out; no I/O.

Helsenorge.Messaging (NHN's reference library for EPJ vendors) sends over AMQP 1.0 with
*string* application-properties ``fromHerId``, ``toHerId``, ``applicationTimeStamp``
(``yyyy-MM-ddTHH:mm:ssK``) and ``cpaId``, and the message function as the 1.0 ``subject``.
On RabbitMQ 3.x an AMQP 0-9-1 consumer (ours) receives such a message with those
sections packed, still AMQP 1.0 encoded, in two headers:

- ``x-amqp-1.0-app-properties``: the application-properties section (descriptor 0x74);
- ``x-amqp-1.0-properties``: the properties section (0x73): message-id, user-id, to,
  subject, reply-to, correlation-id, content-type, ...

They are decoded with python-qpid-proton's codec (not by hand). A plain 0-9-1 header of
the same name wins over the packed one; HER-ids may be integers or strings of digits.
Every value here is unsigned routing metadata: what the letter inside binds (the signed
sender) is what counts, so a property that cannot be read is ``None``, never an error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from proton import Data, DataException, Described, symbol, ulong

__all__ = [
    "APP_PROPERTIES_HEADER",
    "MAX_PACKED_SECTION_BYTES",
    "PROPERTIES_HEADER",
    "BusProperties",
    "Wire",
    "application_timestamp",
    "bus_properties",
    "pack_application_properties",
    "pack_properties",
]

APP_PROPERTIES_HEADER: Final = "x-amqp-1.0-app-properties"
PROPERTIES_HEADER: Final = "x-amqp-1.0-properties"
#: A packed section larger than this is not decoded (the whole message is at most 1 MB).
MAX_PACKED_SECTION_BYTES: Final = 64 * 1024

_APPLICATION_PROPERTIES: Final = 0x74
_PROPERTIES: Final = 0x73
_SUBJECT_INDEX: Final = 3
_MAX_HER_ID_DIGITS: Final = 9


@enum.unique
class Wire(enum.StrEnum):
    """How the properties arrived: a metrics label, never personal."""

    AMQP_0_9_1 = "amqp-0-9-1"
    AMQP_1_0 = "amqp-1.0"


@dataclass(frozen=True)
class BusProperties:
    from_her_id: int | None = None
    to_her_id: int | None = None
    application_timestamp: datetime | None = None
    cpa_id: str | None = None
    subject: str | None = None
    wire: Wire = Wire.AMQP_0_9_1


def bus_properties(headers: Mapping[str, Any] | None) -> BusProperties:
    """The national properties of a delivery, from its 0-9-1 headers or packed 1.0 sections."""
    headers = headers or {}
    packed = _section(headers.get(APP_PROPERTIES_HEADER), _APPLICATION_PROPERTIES)
    properties = _section(headers.get(PROPERTIES_HEADER), _PROPERTIES)
    application = packed if isinstance(packed, dict) else {}
    wire = Wire.AMQP_1_0 if packed is not None or properties is not None else Wire.AMQP_0_9_1

    def value(name: str) -> Any:
        plain = headers.get(name)
        return plain if plain is not None else application.get(name)

    subject = None
    if isinstance(properties, list) and len(properties) > _SUBJECT_INDEX:
        subject = _text(properties[_SUBJECT_INDEX])
    return BusProperties(
        from_her_id=_her_id(value("fromHerId")),
        to_her_id=_her_id(value("toHerId")),
        application_timestamp=_timestamp(value("applicationTimeStamp")),
        cpa_id=_text(value("cpaId")),
        subject=subject if subject is not None else _text(headers.get("subject")),
        wire=wire,
    )


def application_timestamp(when: datetime) -> str:
    """``when`` as .NET's ``yyyy-MM-ddTHH:mm:ssK`` writes a UTC time (``...Z``)."""
    if when.tzinfo is None:
        raise ValueError("an application timestamp needs an aware datetime")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pack_application_properties(properties: Mapping[str, str]) -> bytes:
    """An application-properties section as RabbitMQ packs it (for tests and tools)."""
    data = Data()
    section: Any = dict(properties)  # proton types its maps invariantly
    data.put_object(Described(ulong(_APPLICATION_PROPERTIES), section))
    return bytes(data.encode())


def pack_properties(
    *,
    message_id: str,
    subject: str,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    content_type: str | None = None,
) -> bytes:
    """A properties section (message-id, user-id, to, subject, reply-to, correlation-id,
    content-type). On RabbitMQ 3.x it *replaces* the 0-9-1 properties for an AMQP 1.0
    receiver, so everything that receiver reads must be in it."""
    fields: list[Any] = [message_id, None, None, subject, reply_to, correlation_id]
    fields.append(symbol(content_type) if content_type is not None else None)
    while fields and fields[-1] is None:
        fields.pop()
    data = Data()
    data.put_object(Described(ulong(_PROPERTIES), fields))
    return bytes(data.encode())


def _section(raw: object, descriptor: int) -> object | None:
    """The value of a packed section with ``descriptor``; ``None`` if absent or unreadable."""
    if not isinstance(raw, bytes | bytearray) or not raw or len(raw) > MAX_PACKED_SECTION_BYTES:
        return None
    data = Data()
    try:
        data.decode(bytes(raw))
        data.rewind()
        if data.next() is None:
            return None
        decoded = data.get_object()
    except (DataException, ValueError, TypeError, KeyError, OverflowError):
        return None
    if not isinstance(decoded, Described) or decoded.descriptor != descriptor:
        return None
    return decoded.value


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and value and len(value) <= 256:
        return str(value)
    return None


def _her_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 10**_MAX_HER_ID_DIGITS else None
    text = _text(value)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    if len(text) > _MAX_HER_ID_DIGITS or int(text) == 0:
        return None
    return int(text)


def _timestamp(value: object) -> datetime | None:
    """``yyyy-MM-ddTHH:mm:ssK`` (.NET's round-trip time with offset); aware only."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
