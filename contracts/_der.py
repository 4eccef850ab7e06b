"""A minimal, strict, bounded DER reader: tag-length-value walking and a few primitives.

Only what :mod:`contracts._cms` needs to read the exact CMS shapes we accept: low tag
numbers, definite minimal lengths, children that fill their parent exactly. Whatever
falls outside that raises :class:`NotRecognised`; the caller then hands the input to
the general (asn1crypto) reader, which decides. No recursion: the callers walk a fixed
structure, so the depth is bounded by the code, and every length is checked against
the enclosing element before anything is sliced.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "NotRecognised",
    "Reader",
    "read_integer",
    "read_time",
    "whole",
]

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
CONTEXT_0 = 0xA0
CONTEXT_1 = 0xA1
CONTEXT_2 = 0xA2
CONTEXT_0_PRIMITIVE = 0x80

_MAX_LENGTH_OCTETS = 4  # 4 GiB: far above MAX_MESSAGE_BYTES, checked against the buffer anyway


class NotRecognised(Exception):
    """The input is not one of the shapes the fast reader knows (not necessarily invalid)."""


class Reader:
    """The children of one constructed element, ``data[start:end]``, read in order."""

    __slots__ = ("_data", "_end", "_position")

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data = data
        self._position = start
        self._end = end

    def peek(self) -> int | None:
        """The tag of the next child, or ``None`` at the end."""
        return self._data[self._position] if self._position < self._end else None

    def next(self, tag: int) -> tuple[int, int]:
        """(start, end) of the next child's contents; it must carry ``tag``."""
        data, position, end = self._data, self._position, self._end
        if position + 2 > end or data[position] != tag:
            raise NotRecognised
        first = data[position + 1]
        if first < 0x80:
            start = position + 2
            length = first
        else:
            octets = first & 0x7F
            if octets == 0 or octets > _MAX_LENGTH_OCTETS or position + 2 + octets > end:
                raise NotRecognised  # indefinite (BER) or absurd length
            length = int.from_bytes(data[position + 2 : position + 2 + octets], "big")
            if length < 0x80 or data[position + 2] == 0:
                raise NotRecognised  # not the minimal encoding: not DER
            start = position + 2 + octets
        stop = start + length
        if stop > end:
            raise NotRecognised
        self._position = stop
        return start, stop

    def element(self, tag: int) -> bytes:
        """The next child as a whole TLV (tag and length included)."""
        begin = self._position
        _, stop = self.next(tag)
        return self._data[begin:stop]

    def value(self, tag: int) -> bytes:
        """The next child's contents."""
        start, stop = self.next(tag)
        return self._data[start:stop]

    def enter(self, tag: int) -> Reader:
        """A reader over the next (constructed) child's children."""
        start, stop = self.next(tag)
        return Reader(self._data, start, stop)

    def any_element(self) -> tuple[int, bytes]:
        """(tag, whole TLV) of the next child, whatever its tag."""
        tag = self.peek()
        if tag is None or tag & 0x1F == 0x1F:
            raise NotRecognised
        return tag, self.element(tag)

    def done(self) -> None:
        """Require that every child has been read."""
        if self._position != self._end:
            raise NotRecognised


def whole(data: bytes, tag: int) -> Reader:
    """A reader over the children of ``data``, which must be exactly one element ``tag``."""
    outer = Reader(data, 0, len(data))
    inner = outer.enter(tag)
    outer.done()
    return inner


def read_integer(contents: bytes) -> int:
    """A DER INTEGER's value (two's complement, minimal)."""
    if not contents:
        raise NotRecognised
    if len(contents) > 1 and (
        (contents[0] == 0 and contents[1] < 0x80) or (contents[0] == 0xFF and contents[1] >= 0x80)
    ):
        raise NotRecognised
    return int.from_bytes(contents, "big", signed=True)


def read_time(tag: int, contents: bytes) -> datetime:
    """UTCTime ``YYMMDDHHMMSSZ`` (RFC 5280 window) or GeneralizedTime ``YYYYMMDDHHMMSSZ``."""
    if not contents.endswith(b"Z") or not contents[:-1].isdigit():
        raise NotRecognised
    text = contents.decode("ascii")
    if tag == UTC_TIME and len(contents) == 13:
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:]
    elif tag == GENERALIZED_TIME and len(contents) == 15:
        year = int(text[:4])
        rest = text[4:]
    else:
        raise NotRecognised
    try:
        return datetime(
            year,
            int(rest[0:2]),
            int(rest[2:4]),
            int(rest[4:6]),
            int(rest[6:8]),
            int(rest[8:10]),
            tzinfo=UTC,
        )
    except ValueError:
        raise NotRecognised from None
