"""Hostile certificates inside a message: every one is a refusal, never a crash.

Anyone can encrypt to the register, so the certificate set of the SignedData is attacker
bytes until the signature and the chain say otherwise. Each case here edits the sender's
real certificate at the DER level (duplicate extensions, broken extension values, an
unknown version, odd serials) in the ways cryptography's builder refuses to make, embeds
it, and opens the message: the outcome must be a :class:`~contracts.errors.Rejected`
(dead-lettered on the first delivery with its reason), not some other exception that
would requeue the message until the delivery limit. A seeded mutation run does the same
for random edits of the embedded certificates.
"""

from __future__ import annotations

import base64
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from crypto_fixtures import envelope_inner, tlv
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts import envelope
from contracts import trust as trust_module
from contracts.envelope import MAX_EMBEDDED_CERTIFICATES, open_envelope
from contracts.errors import MalformedMessage, Rejected, UntrustedSigner
from contracts.pki import PkiDir
from contracts.trust import TrustStore


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


@dataclass
class Parts:
    """A certificate as DER pieces, so an edit can make what no builder would."""

    version: bytes
    serial: bytes
    middle: list[bytes]  # signature algorithm, issuer, validity, subject, key
    extensions: list[bytes]
    tail: list[bytes]  # outer signature algorithm and value, unchanged

    @classmethod
    def of(cls, certificate: x509.Certificate) -> Parts:
        asn1 = asn1_x509.Certificate.load(_der(certificate))
        tbs = asn1["tbs_certificate"]
        names = ("signature", "issuer", "validity", "subject", "subject_public_key_info")
        return cls(
            version=tbs["version"].dump(),
            serial=tbs["serial_number"].dump(),
            middle=[tbs[name].dump() for name in names],
            extensions=[extension.dump() for extension in tbs["extensions"]],
            tail=[asn1["signature_algorithm"].dump(), asn1["signature_value"].dump()],
        )

    def der(self) -> bytes:
        extensions = tlv(0xA3, tlv(0x30, b"".join(self.extensions)))
        tbs = tlv(0x30, self.version + self.serial + b"".join(self.middle) + extensions)
        return tlv(0x30, tbs + b"".join(self.tail))

    def index_of(self, oid: str) -> int:
        marker = core.ObjectIdentifier(oid).dump()
        return next(i for i, ext in enumerate(self.extensions) if marker in ext[:16])


Edit = Callable[[Parts], None]


def _extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = tlv(0x01, b"\xff") if critical else b""
    return tlv(0x30, core.ObjectIdentifier(oid).dump() + flag + tlv(0x04, value))


def _add(oid: str, value: bytes, *, critical: bool = False) -> Edit:
    def edit(parts: Parts) -> None:
        parts.extensions.append(_extension(oid, value, critical=critical))

    return edit


def _replace(oid: str, value: bytes) -> Edit:
    def edit(parts: Parts) -> None:
        parts.extensions[parts.index_of(oid)] = _extension(oid, value)

    return edit


def _duplicate(oid: str | None) -> Edit:
    def edit(parts: Parts) -> None:
        chosen = parts.extensions if oid is None else [parts.extensions[parts.index_of(oid)]]
        parts.extensions.extend(list(chosen))

    return edit


def _version(number: int) -> Edit:
    def edit(parts: Parts) -> None:
        parts.version = tlv(0xA0, _integer(number))

    return edit


def _serial(number: int) -> Edit:
    def edit(parts: Parts) -> None:
        parts.serial = _integer(number)

    return edit


KEY_USAGE, BASIC_CONSTRAINTS, AKI = "2.5.29.15", "2.5.29.19", "2.5.29.35"
HOSTILE_EDITS: dict[str, Edit] = {
    "duplicate keyUsage": _duplicate(KEY_USAGE),
    "every extension twice": _duplicate(None),
    # a SubjectAltName GeneralName that is a SET, and one iPAddress of 3 octets
    "malformed subjectAltName": _add("2.5.29.17", bytes.fromhex("30053103020100")),
    "subjectAltName with a 3-octet IP": _add("2.5.29.17", bytes.fromhex("30058703010203")),
    "nameConstraints with a 5-octet IP subtree": _add(
        "2.5.29.30", bytes.fromhex("300ba009300787050a000001ff"), critical=True
    ),
    "authorityInfoAccess that is an INTEGER": _add("1.3.6.1.5.5.7.1.1", bytes.fromhex("020101")),
    "authorityKeyIdentifier with trailing bytes": _replace(AKI, bytes.fromhex("30038001ff0101ff")),
    "keyUsage that is NULL": _replace(KEY_USAGE, bytes.fromhex("0500")),
    "basicConstraints truncated": _replace(BASIC_CONSTRAINTS, bytes.fromhex("3003")),
    "extension value empty": _replace(KEY_USAGE, b""),
    "version 5": _version(4),
    "version -1": _version(-1),
    "serial 0": _serial(0),
    "negative serial": _serial(-5),
    "serial of 21 octets": _serial(2**167),
}


def _edited(certificate: x509.Certificate, edit: Edit) -> bytes:
    parts = Parts.of(certificate)
    edit(parts)
    return parts.der()


def _message(pki: PkiDir, certificates_der: list[bytes]) -> bytes:
    signer = pki.sender.signing_identity
    inner = envelope._sign(b'{"hello": "register"}', signer, None, certificates_der)
    return envelope_inner(inner, pki.register.encryption_certificate)


def _outcome(pki: PkiDir, trust: TrustStore, message: bytes) -> object:
    try:
        return open_envelope(message, keys=[pki.register.decryption_key], trust=trust)
    except Rejected as rejection:
        return rejection


def test_the_unedited_certificates_open(dev_pki: PkiDir, trust: TrustStore) -> None:
    """The control: the same construction with the real certificates is accepted."""
    chain = [_der(c) for c in (dev_pki.sender.signing_identity.certificate,)]
    chain += [_der(c) for c in dev_pki.sender.signing_identity.chain]
    opened = _outcome(dev_pki, trust, _message(dev_pki, chain))
    assert isinstance(opened, envelope.OpenedEnvelope), opened
    # and the DER surgery without an edit gives back the very bytes
    assert Parts.of(dev_pki.sender.signing_identity.certificate).der() == chain[0]


@pytest.mark.parametrize("edit", list(HOSTILE_EDITS.values()), ids=list(HOSTILE_EDITS))
@pytest.mark.parametrize("position", ["signer", "beside the signer"])
def test_a_hostile_embedded_certificate_is_refused_not_a_crash(
    dev_pki: PkiDir, trust: TrustStore, edit: Edit, position: str
) -> None:
    signer = dev_pki.sender.signing_identity.certificate
    hostile = _edited(signer, edit)
    certificates = [hostile] if position == "signer" else [_der(signer), hostile]
    outcome = _outcome(dev_pki, trust, _message(dev_pki, certificates))
    assert isinstance(outcome, MalformedMessage | UntrustedSigner), outcome


def _loaded(der: bytes) -> x509.Certificate | None:
    """The edited certificate as cryptography loads it, or ``None`` if it will not (then
    only the opener's parse can meet it, which the test above covers)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        return None


def test_a_hostile_certificate_handed_to_the_trust_store_is_refused_not_a_crash(
    dev_pki: PkiDir,
) -> None:
    """The same edits, given to :class:`TrustStore` directly (as a signer, and as a
    configured intermediate): an :class:`UntrustedSigner`, never another exception. A
    configured certificate that cannot be read is left out of the pool and listed."""
    signer = dev_pki.sender.signing_identity.certificate
    (intermediate,) = dev_pki.intermediates
    judged = 0
    for name, edit in HOSTILE_EDITS.items():
        hostile_signer = _loaded(_edited(signer, edit))
        if hostile_signer is not None:
            judged += 1
            with pytest.raises(UntrustedSigner):
                dev_pki.trust_store().verify(hostile_signer, at=datetime.now(UTC))
        hostile_ca = _loaded(_edited(intermediate, edit))
        if hostile_ca is not None:
            judged += 1
            store = TrustStore([dev_pki.root], intermediates=[hostile_ca])
            with pytest.raises(UntrustedSigner, match="no chain"):
                store.verify(signer, at=datetime.now(UTC))
            if "serial" in name or "IP" in name or "malformed" in name or "twice" in name:
                assert store.unusable == (hostile_ca,), name
    assert judged >= len(HOSTILE_EDITS), judged  # most edits load; each of those is judged


def test_a_certificate_set_of_hundreds_is_refused_before_any_is_parsed(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    signer = _der(dev_pki.sender.signing_identity.certificate)
    within = _outcome(dev_pki, trust, _message(dev_pki, [signer] * MAX_EMBEDDED_CERTIFICATES))
    assert isinstance(within, envelope.OpenedEnvelope), within
    refused = _outcome(dev_pki, trust, _message(dev_pki, [b"\x30\x00"] * 300))
    assert isinstance(refused, MalformedMessage)
    assert "300 certificates" in str(refused)


def test_seeded_mutations_of_the_embedded_certificates_are_refused_or_opened_unchanged(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """300 seeded edits (byte flips, truncations, insertions) of the embedded signer
    certificate: each ends as a project refusal or, where the edit did not matter to a
    parser, as an opened message with the original content; nothing else."""
    signer = _der(dev_pki.sender.signing_identity.certificate)
    chain = [_der(c) for c in dev_pki.sender.signing_identity.chain]
    generator = random.Random(2117)
    tally = {"refused": 0, "opened": 0}
    for _ in range(300):
        mutated = bytearray(signer)
        for _ in range(generator.randint(1, 4)):
            where = generator.randrange(len(mutated))
            action = generator.choice(("flip", "truncate", "insert"))
            if action == "flip":
                mutated[where] ^= 1 << generator.randrange(8)
            elif action == "truncate":
                del mutated[where:]
            else:
                mutated[where:where] = bytes([generator.randrange(256)])
            if not mutated:
                mutated = bytearray(b"\x30\x00")
        outcome = _outcome(dev_pki, trust, _message(dev_pki, [bytes(mutated), *chain]))
        if isinstance(outcome, envelope.OpenedEnvelope):
            assert outcome.content == b'{"hello": "register"}'
            tally["opened"] += 1
        else:
            assert isinstance(outcome, Rejected), outcome
            tally["refused"] += 1
    print(tally)
    assert tally["refused"] > 0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, issuer: str, key: rsa.RSAPrivateKey, public_key: rsa.RSAPublicKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.now(UTC)
    usage = dict.fromkeys(
        (
            "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
        ),
        False,
    )  # fmt: skip
    usage["key_cert_sign" if ca else "content_commitment"] = True
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def test_a_pool_of_look_alike_issuers_cannot_make_the_chain_search_exponential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sixteen configured CA certificates with one subject and one key, each verifying
    every other: every ordering of them is a candidate path (16*15*14*13*12 of depth 5),
    and none reaches the root. The search gives up after MAX_CHAIN_CANDIDATES signature
    checks with UntrustedSigner instead of trying them all."""
    root_key, pool_key, leaf_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)
    )
    root = _certificate("Root", "Root", root_key, root_key.public_key(), ca=True)
    pool = [
        _certificate("Pool", "Pool", pool_key, pool_key.public_key(), ca=True) for _ in range(16)
    ]
    leaf = _certificate("Leaf", "Pool", pool_key, leaf_key.public_key(), ca=False)
    checks = 0
    may_issue = trust_module._may_issue

    def counted(issuer: x509.Certificate, *, cas_below: int, anchor: bool) -> bool:
        nonlocal checks
        checks += 1
        assert checks < 10_000, "the chain search is not bounded"
        return may_issue(issuer, cas_below=cas_below, anchor=anchor)

    monkeypatch.setattr(trust_module, "_may_issue", counted)
    store = TrustStore([root], intermediates=pool)
    with pytest.raises(UntrustedSigner, match="no chain"):
        store.verify(leaf, hints=(), at=datetime.now(UTC))
    # two searches: at the signing time and now, then at any time (expired, or no chain?)
    assert checks <= 2 * trust_module.MAX_CHAIN_CANDIDATES * len(pool)


def test_a_chain_search_past_its_deadline_is_refused_and_says_so(
    dev_pki: PkiDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search is bounded in time as well as in candidates: with the deadline already
    passed, even the good chain is refused, naming the reason (the real bound, 1 s, is
    hundreds of times what a real chain takes)."""
    signer = dev_pki.sender.signing_identity.certificate
    dev_pki.trust_store().verify(signer, at=datetime.now(UTC))
    monkeypatch.setattr(trust_module, "MAX_CHAIN_SEARCH_SECONDS", -1.0)
    with pytest.raises(UntrustedSigner, match="took too long"):
        dev_pki.trust_store().verify(signer, at=datetime.now(UTC))


def _kpr_open(dev_pki: PkiDir, message: Path, intermediates: Path) -> int:
    """``kpr open`` of ``message`` as the register, trusting the dev root."""
    from kpr.cli import main

    return main(
        [
            "open", str(message),
            "--recipient-cert", str(dev_pki.register.encryption_certificate_path),
            "--recipient-key", str(dev_pki.register.encryption_key_path),
            "--trust", str(dev_pki.root_path),
            "--intermediates", str(intermediates),
        ]
    )  # fmt: skip


def test_kpr_open_refuses_a_hostile_certificate_in_one_line_with_exit_3(
    dev_pki: PkiDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the command line as an operator would: exit 3 (malformed, as --help
    documents) and one line naming the fault, no traceback."""
    hostile = _edited(dev_pki.sender.signing_identity.certificate, HOSTILE_EDITS["version 5"])
    message = tmp_path / "hostile.p7m"
    message.write_bytes(_message(dev_pki, [hostile]))
    capsys.readouterr()
    exit_code = _kpr_open(dev_pki, message, dev_pki.intermediate_path)
    captured = capsys.readouterr()
    assert exit_code == 3
    assert captured.err.strip().splitlines() == [
        "kpr open: error: rejected (malformed): an embedded certificate is not well formed"
    ]
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("edit", ["serial 0", "duplicate keyUsage", "malformed subjectAltName"])
def test_kpr_open_names_an_unusable_configured_ca_certificate_with_exit_11(
    dev_pki: PkiDir, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    """A trust bundle holding a certificate that could never be part of a chain is the
    operator's fault: exit 11 (key material) and one line naming the file and the
    certificate's place in it, before any message is judged."""
    hostile = _edited(dev_pki.intermediates[0], HOSTILE_EDITS[edit])
    bundle = tmp_path / "intermediates.pem"
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(hostile)
    bundle.write_bytes(
        dev_pki.intermediate_path.read_bytes() + pem + b"-----END CERTIFICATE-----\n"
    )
    message = tmp_path / "good.p7m"
    message.write_bytes(_message(dev_pki, [_der(dev_pki.sender.signing_identity.certificate)]))
    capsys.readouterr()
    exit_code = _kpr_open(dev_pki, message, bundle)
    captured = capsys.readouterr()
    assert exit_code == 11
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"kpr open: error: certificate 2 in {bundle} cannot be used: "), line
    assert "Traceback" not in captured.out + captured.err
