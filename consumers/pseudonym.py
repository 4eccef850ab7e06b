"""Keyed pseudonyms: the national id is replaced on receipt, before anything is stored.

``pseudonym = base32(HMAC-SHA256(key, national_id))[:32]`` (160 bits). Without the key
the pseudonym cannot be reversed by enumerating the (small) space of valid ids; with
it, an operator computes the pseudonym of a given id to look a person up.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["MIN_KEY_BYTES", "Pseudonymiser", "load_or_create_key"]

MIN_KEY_BYTES = 32
_PREFIX = "p1-"
_PSEUDONYM_BYTES = 20


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def pseudonym(self, national_id: str) -> str:
        digest = hmac.digest(self._key, national_id.encode("ascii"), "sha256")
        # The first 20 bytes are exactly the first 32 base32 characters (160 bits), and
        # the pure-Python encoder then walks 4 groups instead of 7 (once per message).
        return _PREFIX + base64.b32encode(digest[:_PSEUDONYM_BYTES]).decode("ascii").lower()

    def mac(self, data: bytes) -> str:
        """A keyed digest of content (used to compare payloads without exposing them)."""
        return hmac.digest(self._key, data, "sha256").hex()

    def __repr__(self) -> str:
        return "Pseudonymiser(key=<hidden>)"

    @classmethod
    def from_hex(cls, key_hex: str) -> Pseudonymiser:
        return cls(bytes.fromhex(key_hex.strip()))

    @classmethod
    def from_file(cls, path: Path) -> Pseudonymiser:
        return cls.from_hex(path.read_text(encoding="ascii"))


def load_or_create_key(path: Path) -> Pseudonymiser:
    """For the demo and tests: a random key kept in a 0600 file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(MIN_KEY_BYTES))
    return Pseudonymiser.from_file(path)
