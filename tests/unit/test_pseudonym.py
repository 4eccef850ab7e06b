"""Keyed pseudonyms: stable for one key, unlinkable across keys, never the id itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from consumers.pseudonym import Pseudonymiser, load_or_create_key

KEY = bytes(range(32))
SYNTHETIC_ID = "01417012345"  # shape only; pseudonyms do not validate ids


def test_the_same_id_gets_the_same_pseudonym_under_one_key() -> None:
    """An operator with the key can find a person again."""
    assert Pseudonymiser(KEY).pseudonym(SYNTHETIC_ID) == Pseudonymiser(KEY).pseudonym(SYNTHETIC_ID)


def test_another_key_gives_an_unrelated_pseudonym() -> None:
    """Without the key, a pseudonym cannot be recomputed from a guessed id."""
    other = Pseudonymiser(bytes(reversed(KEY)))
    assert Pseudonymiser(KEY).pseudonym(SYNTHETIC_ID) != other.pseudonym(SYNTHETIC_ID)


def test_a_pseudonym_does_not_contain_the_id() -> None:
    """The plaintext id never leaks into what is stored."""
    pseudonym = Pseudonymiser(KEY).pseudonym(SYNTHETIC_ID)
    assert SYNTHETIC_ID not in pseudonym
    assert pseudonym.startswith("p1-")
    assert len(pseudonym) == 35


def test_the_pseudonym_is_the_documented_truncated_base32_of_the_hmac() -> None:
    """``p1-`` + base32(HMAC-SHA256(key, id))[:32], lower case: the form stored since the
    first release, so a store written before stays joinable."""
    digest = hmac.new(KEY, SYNTHETIC_ID.encode(), hashlib.sha256).digest()
    expected = "p1-" + base64.b32encode(digest).decode()[:32].lower()
    assert Pseudonymiser(KEY).pseudonym(SYNTHETIC_ID) == expected


def test_short_keys_are_refused() -> None:
    """A key under 256 bits is a configuration error, not a weak pseudonym."""
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Pseudonymiser(b"short")


def test_the_key_is_not_in_the_repr() -> None:
    """Logging the object does not log the key."""
    assert KEY.hex() not in repr(Pseudonymiser(KEY))


def test_a_created_key_file_is_private_and_reused(tmp_path: Path) -> None:
    """The demo's key file is 0600 and the second load gives the same pseudonyms."""
    path = tmp_path / "k" / "pseudonym.key"
    first = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path).pseudonym(SYNTHETIC_ID) == first.pseudonym(SYNTHETIC_ID)
