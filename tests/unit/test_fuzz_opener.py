"""10,000 seeded hostile messages through the consumer's open step, at every layer.

Issue 21's trial found 340 crashes in 3,000 mutations. This campaign sends 10,000 seeded
mutations of a real sealed event through :meth:`consumers.opener.Opener.open`, which is
what the consumer runs on a delivery. There are four layers, 2,500 inputs each:

- **envelope**: the EnvelopedData bytes themselves (flips, truncations, insertions).
- **signed**: the SignedData bytes before encryption, encrypted to the register.
- **certificates**: the embedded signer or CA certificate, edited bytewise or DER-aware.
- **structure**: DER-aware edits of the SignedData tree, re-encoded with correct lengths,
  so the parsers get well-formed DER with hostile meaning. The edits drop, duplicate,
  retag or swap a node, or put random content in a primitive one. Extensions,
  certificate sets and signer infos are all reached this way.

Each input must end either as a :class:`~contracts.errors.Rejected` (dead-lettered with a
reason on the first delivery) or, where the edit did not matter, as the original event
unchanged. It must also take under two seconds. An exception of any other kind would be
requeued until the delivery limit. The test prints the tally per layer, and a crash names
its layer, seed and exception.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from crypto_fixtures import dev_opener, envelope_inner, tlv
from cryptography.hazmat.primitives import serialization

from consumers.opener import Opener, VerifiedEvent
from contracts import envelope
from contracts.errors import Rejected
from contracts.events import Event
from contracts.letter import Party, encode_letter
from contracts.pki import PkiDir, org_number_of
from contracts.synth import generate_events

PER_LAYER = 2_500
TIME_BOUND_S = 2.0
OWN_HER_ID = 8133973
MESSAGE_ID = "fuzz-0001"


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(mutated))
        action = rng.choice(("flip", "truncate", "insert", "byte"))
        if action == "flip":
            mutated[where] ^= 1 << rng.randrange(8)
        elif action == "truncate":
            del mutated[where:]
        elif action == "insert":
            mutated[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            mutated[where] = rng.randrange(256)
        if not mutated:
            mutated = bytearray(b"\x30\x00")
    return bytes(mutated)


@dataclass
class Node:
    """One DER TLV: a constructed node has children, a primitive one content."""

    tag: int
    content: bytes = b""
    children: list[Node] | None = None

    def der(self) -> bytes:
        if self.children is None:
            return tlv(self.tag, self.content)
        return tlv(self.tag, b"".join(child.der() for child in self.children))

    def walk(self) -> list[tuple[Node, Node | None]]:
        """Every node with its parent, this one first."""
        found: list[tuple[Node, Node | None]] = [(self, None)]
        for child in self.children or ():
            found.extend((node, parent or self) for node, parent in child.walk())
        return found


def parse_der(data: bytes) -> Node:
    """DER with single-byte tags and definite lengths (what our own sealing writes)."""
    node, rest = _parse_one(data)
    assert not rest
    return node


def _parse_one(data: bytes) -> tuple[Node, bytes]:
    tag, first = data[0], data[1]
    if first < 0x80:
        length, header = first, 2
    else:
        size = first & 0x7F
        length, header = int.from_bytes(data[2 : 2 + size], "big"), 2 + size
    body, rest = data[header : header + length], data[header + length :]
    if not tag & 0x20:
        return Node(tag, body), rest
    children = []
    while body:
        child, body = _parse_one(body)
        children.append(child)
    return Node(tag, children=children), rest


def _mutate_tree(data: bytes, rng: random.Random) -> bytes:
    tree = parse_der(data)
    for _ in range(rng.randint(1, 3)):
        nodes = tree.walk()
        node, parent = nodes[rng.randrange(len(nodes))]
        action = rng.choice(("content", "duplicate", "drop", "retag", "swap"))
        siblings = parent.children if parent is not None and parent.children else None
        if action == "content" and node.children is None:
            node.content = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        elif action == "duplicate" and siblings is not None:
            siblings.insert(siblings.index(node), Node(node.tag, node.content, node.children))
        elif action == "drop" and siblings is not None:
            siblings.remove(node)
        elif action == "swap" and siblings is not None and len(siblings) > 1:
            other = rng.randrange(len(siblings))
            here = siblings.index(node)
            siblings[here], siblings[other] = siblings[other], siblings[here]
        else:
            # Keep the constructed bit so the tree still re-encodes; change the rest.
            node.tag = (rng.randrange(256) & ~0x20) | (node.tag & 0x20)
    return tree.der()


@dataclass
class Campaign:
    pki: PkiDir
    opener: Opener
    original: Event
    letter: bytes
    tally: dict[str, Counter[str]] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)

    @property
    def certificates(self) -> list[bytes]:
        identity = self.pki.sender.signing_identity
        return [
            c.public_bytes(serialization.Encoding.DER)
            for c in (identity.certificate, *identity.chain)
        ]

    def signed(self, certificates: list[bytes] | None = None) -> bytes:
        identity = self.pki.sender.signing_identity
        return envelope._sign(self.letter, identity, None, certificates or self.certificates)

    def sealed(self, inner: bytes) -> bytes:
        return envelope_inner(inner, self.pki.register.encryption_certificate)

    def run(self, layer: str, make: Callable[[random.Random], bytes]) -> None:
        tally = self.tally.setdefault(layer, Counter())
        for seed in range(PER_LAYER):
            rng = random.Random(f"{layer}-{seed}")
            try:
                message = make(rng)
            except (IndexError, AssertionError):  # an edit our own re-encoder cannot make
                tally["not built"] += 1
                continue
            started = time.perf_counter()
            try:
                opened = self.opener.open(message, message_id=MESSAGE_ID)
            except Rejected as rejection:
                tally[f"refused {rejection.reason.value}"] += 1
                outcome = "refused"
            except Exception as error:  # the failure this campaign exists to find
                self.crashes.append(f"{layer} seed {seed}: {type(error).__name__}: {error}")
                tally["crash"] += 1
                continue
            else:
                assert isinstance(opened, VerifiedEvent)
                if opened.event != self.original:
                    self.crashes.append(f"{layer} seed {seed}: opened with altered content")
                    tally["altered"] += 1
                    continue
                tally["opened unchanged"] += 1
                outcome = "opened"
            elapsed = time.perf_counter() - started
            if elapsed > TIME_BOUND_S:
                self.crashes.append(f"{layer} seed {seed}: {outcome} after {elapsed:.1f} s")


@pytest.fixture(scope="module")
def campaign(dev_pki: PkiDir) -> Campaign:
    [event] = generate_events(1, seed=2121)
    org = org_number_of(dev_pki.sender.signing_identity.certificate)
    assert org is not None
    letter = encode_letter(
        message_id=MESSAGE_ID,
        sender=Party(her_id=event.sender_her_id, org_number=org),
        recipient_her_id=OWN_HER_ID,
        event_json=event.model_dump_json().encode(),
    )
    opener = dev_opener(dev_pki, OWN_HER_ID)
    return Campaign(dev_pki, opener, event, letter)


@pytest.mark.slow
def test_ten_thousand_hostile_messages_are_each_refused_or_opened_unchanged(
    campaign: Campaign,
) -> None:
    """No input at any layer escapes as another exception, opens with altered content or
    takes over two seconds; the unedited message opens (the campaign is not vacuous)."""
    baseline = campaign.opener.open(campaign.sealed(campaign.signed()), message_id=MESSAGE_ID)
    assert baseline.event == campaign.original
    signed = campaign.signed()
    certificates = campaign.certificates

    def certificate_edit(rng: random.Random) -> bytes:
        edited = list(certificates)
        which = rng.randrange(len(edited))
        # Half bytewise, half DER-aware: the latter keeps the certificate set parseable,
        # so the edit reaches the certificate parser and the chain checks.
        mutate = _mutate_tree if rng.random() < 0.5 else _mutate_bytes
        edited[which] = mutate(edited[which], rng)
        return campaign.sealed(campaign.signed(edited))

    campaign.run("envelope", lambda rng: _mutate_bytes(campaign.sealed(signed), rng))
    campaign.run("signed", lambda rng: campaign.sealed(_mutate_bytes(signed, rng)))
    campaign.run("certificates", certificate_edit)
    campaign.run("structure", lambda rng: campaign.sealed(_mutate_tree(signed, rng)))

    for layer, tally in campaign.tally.items():
        print(layer, dict(tally.most_common()))
    assert not campaign.crashes, "\n".join(campaign.crashes[:20])
    total = sum(sum(t.values()) for t in campaign.tally.values())
    assert total == 4 * PER_LAYER
    built = total - sum(t["not built"] for t in campaign.tally.values())
    assert built >= 0.95 * total  # the structural edits mostly re-encode
    refused = sum(n for t in campaign.tally.values() for k, n in t.items() if k.startswith("ref"))
    assert refused > 0.5 * built


def test_the_der_tree_re_encodes_what_it_parsed(campaign: Campaign) -> None:
    """The structural fuzzer's own parser is exact: parse then encode gives the bytes back."""
    signed = campaign.signed()
    assert parse_der(signed).der() == signed
