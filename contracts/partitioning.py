"""The partition key: which partition queue a person's events go to, without naming the person.

Producer and consumer agree on this. The producer puts :func:`partition_token` of the
person's national id in the message header :data:`PARTITION_HEADER`; the broker's
consistent-hash exchange (``kpr.partitions``, argument ``hash-header``) hashes that header
onto one of the partition queues, so all events of one person land in one queue and are
handled by that queue's single active consumer.

The header travels in clear on the broker (and in the management UI, in dead letters,
in broker logs), so the token must not identify anyone:

* it is a **keyed** hash, ``HMAC-SHA256(partition_key, national_id)``: without the key,
  the small space of valid national ids cannot be enumerated against it;
* it is **truncated** to :data:`TOKEN_HEX_CHARS` hex characters (32 bits): many ids share
  one token, so even with the key a token points to a crowd, never to one person;
* the key is the producer's own (``KPR_PARTITION_KEY_FILE``), not the register's pseudonym
  key, which the producer must never hold; a token is therefore unrelated to the pseudonym
  in the register.

The token decides only *where* a message is queued; nothing downstream trusts it (the
consumer takes the person from the signed, encrypted content), so a wrong or missing
token can cost ordering and balance, never correctness.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "DEV_PARTITION_KEY",
    "MIN_PARTITION_KEY_BYTES",
    "PARTITION_HEADER",
    "TOKEN_HEX_CHARS",
    "parse_partition_key",
    "partition_token",
]

PARTITION_HEADER = "kprPartitionKey"
TOKEN_HEX_CHARS = 8
MIN_PARTITION_KEY_BYTES = 16
# Domain separation: the same key bytes used elsewhere never yield the same digests.
_CONTEXT = b"kpr-partition-v1\x00"

# For Environment.TEST only (tests, demo): public, so it protects nothing.
DEV_PARTITION_KEY = b"kpr-dev-partition-key-not-secret"


def parse_partition_key(text: str) -> bytes:
    """The key from its hex text (surrounding whitespace ignored).

    Raises ``ValueError`` if the text is not hex or the key is shorter than
    :data:`MIN_PARTITION_KEY_BYTES`; the message never repeats the text.
    """
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError("the partition key is not hex") from None
    if len(key) < MIN_PARTITION_KEY_BYTES:
        raise ValueError(f"the partition key must be at least {MIN_PARTITION_KEY_BYTES} bytes")
    return key


def partition_token(national_id: str, key: bytes) -> str:
    """The routing token for a person: :data:`TOKEN_HEX_CHARS` lower-case hex characters.

    Stable for the same id and key, different under another key. Raises ``ValueError``
    for a key shorter than :data:`MIN_PARTITION_KEY_BYTES` (never mentioning the id).
    """
    if len(key) < MIN_PARTITION_KEY_BYTES:
        raise ValueError(f"the partition key must be at least {MIN_PARTITION_KEY_BYTES} bytes")
    digest = hmac.new(key, _CONTEXT + national_id.encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:TOKEN_HEX_CHARS]
