"""Interoperability with the real ``openssl cms`` (OpenSSL 3.0): each side opens the other's.

Result for the strict profile: OpenSSL 3.0 both decrypts our AuthEnvelopedData
(RSA-OAEP-SHA256 + AES-256-GCM) and produces one that we open.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from crypto_fixtures import CONTENT, IssueSigner
from cryptography.hazmat.primitives.asymmetric import rsa
from openssl_tools import openssl, openssl_encrypt, openssl_sign_as_dotnet

from contracts.envelope import Profile, SignatureForm, open_envelope, seal
from contracts.errors import SignatureInvalid, UnsupportedAlgorithm
from contracts.events import encode_event
from contracts.msghead import encode_msghead
from contracts.pki import PkiDir, write_certificate, write_private_key
from contracts.synth import generate_events
from contracts.topology import KPR_HER_IDS
from contracts.trust import TrustStore

pytestmark = pytest.mark.openssl


def openssl_sign(
    pki: PkiDir, tmp_path: Path, *extra: str, cert: Path | None = None, key: Path | None = None
) -> Path:
    content = tmp_path / "content.json"
    content.write_bytes(CONTENT)
    signed = tmp_path / "signed.der"
    openssl(
        "cms", "-sign", "-binary", "-nodetach", "-in", content,
        "-signer", cert or pki.sender.signing_certificate_path,
        "-inkey", key or pki.sender.signing_key_path,
        "-certfile", pki.intermediate_path, "-outform", "DER", "-out", signed, *extra,
    )  # fmt: skip
    return signed


STRICT_CIPHER = (
    "-aes-256-gcm",
    "-keyopt", "rsa_padding_mode:oaep",
    "-keyopt", "rsa_oaep_md:sha256",
)  # fmt: skip


@pytest.mark.parametrize("profile", list(Profile))
def test_openssl_decrypts_and_verifies_what_we_seal(
    dev_pki: PkiDir, tmp_path: Path, profile: Profile
) -> None:
    """openssl cms -decrypt, then -verify against the root with the issuing CA as untrusted
    extra certificate, yields our content: both profiles."""
    message = tmp_path / "message.der"
    message.write_bytes(
        seal(
            CONTENT,
            signer=dev_pki.sender.signing_identity,
            recipient=dev_pki.register.encryption_certificate,
            profile=profile,
        )
    )
    inner = tmp_path / "inner.der"
    openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", message,
        "-recip", dev_pki.register.encryption_certificate_path,
        "-inkey", dev_pki.register.encryption_key_path, "-out", inner,
    )  # fmt: skip
    verified = openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", inner,
        "-CAfile", dev_pki.root_path, "-certfile", dev_pki.intermediate_path,
    )  # fmt: skip
    assert verified == CONTENT


@pytest.mark.parametrize(
    ("cipher", "profile"),
    [(("-aes-256-cbc",), Profile.NATIONAL), (STRICT_CIPHER, Profile.STRICT)],
)
def test_we_open_what_openssl_signs_and_encrypts(
    dev_pki: PkiDir,
    trust: TrustStore,
    tmp_path: Path,
    cipher: tuple[str, ...],
    profile: Profile,
) -> None:
    """openssl cms -sign -md sha256 -nodetach, then -encrypt (AES-256-CBC, or AES-256-GCM
    with RSA-OAEP-SHA256) opens here with the right signer and profile."""
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha256")
    message = openssl_encrypt(dev_pki, tmp_path, signed, *cipher)
    opened = open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)
    assert opened.content == CONTENT
    assert opened.signer == dev_pki.sender.signing_certificate
    assert opened.profile is profile


@pytest.mark.parametrize(
    "sign_options",
    [
        ("-md", "sha256", "-keyid"),
        ("-md", "sha256", "-keyopt", "rsa_padding_mode:pss"),
    ],
    ids=["subject-key-identifier", "rsassa-pss"],
)
def test_we_accept_a_key_identifier_signer_and_pss_signatures(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path, sign_options: tuple[str, ...]
) -> None:
    """The signer may be named by subjectKeyIdentifier, and RSASSA-PSS verifies too."""
    signed = openssl_sign(dev_pki, tmp_path, *sign_options)
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    opened = open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)
    assert opened.content == CONTENT


def test_a_3des_envelope_is_an_unsupported_algorithm(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path
) -> None:
    """openssl cms -encrypt -des3 is refused as weak, before any decryption."""
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha256")
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-des3")
    with pytest.raises(UnsupportedAlgorithm, match="tripledes"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_a_sha1_signature_is_an_unsupported_algorithm(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path
) -> None:
    """openssl cms -sign -md sha1 is refused as weak."""
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha1")
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    with pytest.raises(UnsupportedAlgorithm, match="sha1"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_an_rsa_1024_signer_is_an_unsupported_algorithm(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path, issue_signer: IssueSigner
) -> None:
    """A 1024-bit signer certificate, signed by OpenSSL, is refused as weak."""
    weak = issue_signer(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    cert, key = tmp_path / "weak.pem", tmp_path / "weak.key"
    write_certificate(cert, weak.certificate)
    write_private_key(key, weak.key)
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha256", cert=cert, key=key)
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    with pytest.raises(UnsupportedAlgorithm, match="1024"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_signed_content_changed_and_re_encrypted_fails_the_signature(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path
) -> None:
    """Decrypt one of our messages with openssl, change the content inside the signed data,
    re-encrypt with openssl: SignatureInvalid."""
    message = tmp_path / "message.der"
    message.write_bytes(
        seal(
            CONTENT,
            signer=dev_pki.sender.signing_identity,
            recipient=dev_pki.register.encryption_certificate,
        )
    )
    inner = tmp_path / "inner.der"
    openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", message,
        "-recip", dev_pki.register.encryption_certificate_path,
        "-inkey", dev_pki.register.encryption_key_path, "-out", inner,
    )  # fmt: skip
    original = inner.read_bytes()
    assert original.count(b'"amount":100') == 1
    inner.write_bytes(original.replace(b'"amount":100', b'"amount":999'))
    forged = openssl_encrypt(dev_pki, tmp_path, inner, "-aes-256-cbc")
    with pytest.raises(SignatureInvalid):
        open_envelope(forged, keys=[dev_pki.register.decryption_key], trust=trust)


def test_openssl_speed_is_measured_for_the_benchmark_baseline() -> None:
    """The benchmark's baseline reads positive private and public RSA-2048 rates."""
    from kpr.benchmarks.crypto import measure_openssl_rsa2048

    private_per_s, public_per_s = measure_openssl_rsa2048(1)
    assert 0 < private_per_s < public_per_s


def test_we_open_a_noattr_signature_as_dotnet_signedcms_makes_it(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path
) -> None:
    """openssl cms -sign -noattr (no signed attributes, signature over the content, the
    intermediate embedded without the root), then -encrypt -aes-256-cbc: it opens, and
    says the signature covered the content."""
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha256", "-noattr")
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    opened = open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)
    assert opened.content == CONTENT
    assert opened.signer == dev_pki.sender.signing_certificate
    assert opened.signature_form is SignatureForm.CONTENT


def test_a_noattr_signature_over_changed_content_fails(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path
) -> None:
    """One byte of the content changed inside a -noattr SignedData: SignatureInvalid."""
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha256", "-noattr")
    original = signed.read_bytes()
    assert original.count(b'"amount":100') == 1
    signed.write_bytes(original.replace(b'"amount":100', b'"amount":900'))
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    with pytest.raises(SignatureInvalid):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def test_a_noattr_sha1_signature_is_still_an_unsupported_algorithm(
    dev_pki: PkiDir, trust: TrustStore, tmp_path: Path
) -> None:
    """Without signed attributes a weak digest is refused as before."""
    signed = openssl_sign(dev_pki, tmp_path, "-md", "sha1", "-noattr")
    message = openssl_encrypt(dev_pki, tmp_path, signed, "-aes-256-cbc")
    with pytest.raises(UnsupportedAlgorithm, match="sha1"):
        open_envelope(message, keys=[dev_pki.register.decryption_key], trust=trust)


def _kpr_open_json(dev_pki: PkiDir, message: Path) -> int:
    from kpr.cli import main

    return main(
        [
            "open", str(message), "--json",
            "--recipient-cert", str(dev_pki.register.encryption_certificate_path),
            "--recipient-key", str(dev_pki.register.encryption_key_path),
            "--trust", str(dev_pki.root_path),
            "--intermediates", str(dev_pki.intermediate_path),
        ]
    )  # fmt: skip


def test_kpr_open_accepts_a_msghead_sealed_by_openssl_as_dotnet_does_and_not_a_changed_byte(
    dev_pki: PkiDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A MsgHead letter signed by the real openssl as .NET SignedCms signs (``-noattr``,
    SHA-256, the intermediate embedded, no root) and encrypted with ``-aes-256-cbc``:
    ``kpr open`` prints the event and says which forms it read; the same message with one
    byte of the signed content changed is refused (exit 4, one line)."""
    monkeypatch.setenv("KPR_ENVIRONMENT", "test")
    [event] = generate_events(1, seed=1602)
    message_id = "0d77d041-f010-4ec8-9105-f3dda92fc320"
    head = encode_msghead(
        message_id=message_id,
        sender_her_id=event.sender_her_id,
        sender_org_number=dev_pki.sender.info.org_number,
        sender_name="Testkommune",
        recipient_her_id=KPR_HER_IDS["test"],
        event_json=encode_event(event),
        created_at=datetime.now(UTC),
    )
    openssl_sign_as_dotnet(dev_pki, tmp_path, head, "sealed")
    # The changed message keeps the original's signature: its content alone is edited.
    original = (tmp_path / "sealed.signed").read_bytes()
    assert original.count(b"0d77d041") == 1
    (tmp_path / "changed.signed").write_bytes(original.replace(b"0d77d041", b"0d77d042"))
    for name in ("sealed", "changed"):
        message = openssl_encrypt(dev_pki, tmp_path, tmp_path / f"{name}.signed", "-aes-256-cbc")
        (tmp_path / f"{name}.p7m").write_bytes(message)

    capsys.readouterr()
    assert _kpr_open_json(dev_pki, tmp_path / "sealed.p7m") == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["event"]["event_id"] == str(event.event_id)
    assert summary["letter_form"] == "msghead"
    assert summary["signature_form"] == "content"

    assert _kpr_open_json(dev_pki, tmp_path / "changed.p7m") == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "signature" in err[0]
