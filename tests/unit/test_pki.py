"""``kpr pki dev`` and the development PKI it writes; ``kpr seal`` / ``kpr open`` exit codes."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts.envelope import Profile, seal
from contracts.pki import PARTIES, PkiDir, dev_pki_files, ensure_dev_pki, org_number_of
from kpr.cli import main


def kpr(argv: Sequence[str]) -> int:
    """Run a kpr command in-process through the command line's error boundary."""
    return main(list(argv))


@pytest.fixture(scope="module")
def cli_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli-pki")
    assert kpr(["pki", "dev", "--out", str(directory)]) == 0
    return directory


def _usage(certificate: x509.Certificate) -> x509.KeyUsage:
    return certificate.extensions.get_extension_for_class(x509.KeyUsage).value


def test_pki_dev_writes_every_named_file_with_private_keys_0600(cli_pki: Path) -> None:
    """All files exist; every key file is readable by its owner only."""
    for name in dev_pki_files():
        path = cli_pki / name
        assert path.is_file(), name
        if name.endswith(".key"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
            assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_party_certificates_have_the_national_shape(cli_pki: Path) -> None:
    """Signing: nonRepudiation + digitalSignature; encryption: keyEncipherment only;
    serialNumber holds the org number; issued by the intermediate under the root."""
    pki = PkiDir.load(cli_pki)
    issuing = pki.intermediates[0]
    constraints = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert issuing.issuer == pki.root.subject
    for name, info in PARTIES.items():
        party = pki.parties[name]
        signing, encryption = party.signing_certificate, party.encryption_certificate
        assert _usage(signing).digital_signature
        assert _usage(signing).content_commitment
        assert not _usage(signing).key_encipherment
        assert _usage(encryption).key_encipherment
        assert not _usage(encryption).digital_signature
        for certificate in (signing, encryption):
            assert org_number_of(certificate) == info.org_number
            assert certificate.issuer == issuing.subject
            assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            assert certificate.public_key().key_size == 2048  # type: ignore[union-attr]
    assert PARTIES["sender"].org_number == "310000000"
    assert PARTIES["register"].org_number == "310000019"


def test_tls_certificates_for_the_broker_and_clients(cli_pki: Path) -> None:
    """broker.pem: serverAuth, SAN localhost + 127.0.0.1; client-{party}: clientAuth, CN party."""
    broker = x509.load_pem_x509_certificate((cli_pki / "broker.pem").read_bytes())
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    for party in PARTIES:
        client = x509.load_pem_x509_certificate((cli_pki / f"client-{party}.pem").read_bytes())
        eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == party


def test_pki_dev_is_idempotent_unless_forced(cli_pki: Path, tmp_path: Path) -> None:
    """A second run keeps existing files; --force replaces them."""
    before = (cli_pki / "root-ca.pem").read_bytes()
    assert kpr(["pki", "dev", "--out", str(cli_pki)]) == 0
    assert (cli_pki / "root-ca.pem").read_bytes() == before
    assert ensure_dev_pki(cli_pki).root == x509.load_pem_x509_certificate(before)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in dev_pki_files():
        (copy / name).write_bytes((cli_pki / name).read_bytes())
    assert kpr(["pki", "dev", "--out", str(copy), "--force"]) == 0
    assert (copy / "root-ca.pem").read_bytes() != before


def test_org_number_of_ignores_anything_but_nine_digits(cli_pki: Path) -> None:
    """The root has no serialNumber attribute: None."""
    assert org_number_of(PkiDir.load(cli_pki).root) is None


# --- kpr seal / kpr open ---------------------------------------------------------------


@pytest.fixture
def event_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One synthetic event (test environment: synthetic identity numbers only)."""
    from contracts.events import encode_event
    from contracts.synth import generate_events

    monkeypatch.setenv("KPR_ENVIRONMENT", "test")
    (event,) = generate_events(1, seed=7)
    path = tmp_path / "event.json"
    path.write_bytes(encode_event(event))
    return path


def _seal_args(pki: Path, event: Path, out: Path, *extra: str) -> list[str]:
    return [
        "seal", str(event),
        "--signer-cert", str(pki / "sender-sign.pem"),
        "--signer-key", str(pki / "sender-sign.key"),
        "--recipient-cert", str(pki / "register-enc.pem"),
        "--intermediates", str(pki / "issuing-ca.pem"),
        "--out", str(out), *extra,
    ]  # fmt: skip


def _open_args(pki: Path, message: Path, *extra: str) -> list[str]:
    return [
        "open", str(message),
        "--recipient-cert", str(pki / "register-enc.pem"),
        "--recipient-key", str(pki / "register-enc.key"),
        "--trust", str(pki / "root-ca.pem"),
        "--intermediates", str(pki / "issuing-ca.pem"), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("profile", [p.value for p in Profile])
def test_kpr_seal_then_open_prints_the_verified_event(
    cli_pki: Path,
    event_file: Path,
    tmp_path: Path,
    profile: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """seal exits 0 and writes DER; open exits 0, prints the same event and names the signer."""
    message = tmp_path / "message.der"
    assert kpr(_seal_args(cli_pki, event_file, message, "--profile", profile)) == 0
    capsys.readouterr()
    assert kpr(_open_args(cli_pki, message)) == 0
    captured = capsys.readouterr()
    assert orjson.loads(captured.out) == orjson.loads(event_file.read_bytes())
    assert "310000000" in captured.err


def test_kpr_open_exit_codes(
    cli_pki: Path, event_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 garbage, 4 untrusted (no intermediate configured) or wrong own HER-id, 5 wrong key,
    3 missing file (an input that cannot be used)."""
    message = tmp_path / "message.der"
    assert kpr(_seal_args(cli_pki, event_file, message)) == 0
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"garbage")
    assert kpr(_open_args(cli_pki, garbage)) == 3
    untrusted = _open_args(cli_pki, message)
    del untrusted[-2:]  # drop --intermediates
    assert kpr(untrusted) == 4
    assert kpr([*_open_args(cli_pki, message), "--own-her-id", "12345"]) == 4
    wrong_key = _open_args(cli_pki, message)
    wrong_key[wrong_key.index("--recipient-key") + 1] = str(cli_pki / "sender-enc.key")
    assert kpr(wrong_key) == 5
    assert kpr(_open_args(cli_pki, tmp_path / "missing.der")) == 3
    err = capsys.readouterr().err
    assert "rejected (undecryptable)" in err


def test_kpr_open_reports_a_contract_violation_with_exit_6(
    cli_pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A letter whose event breaks the contract opens cryptographically but exits 6."""
    from contracts.letter import Party, encode_letter

    monkeypatch.setenv("KPR_ENVIRONMENT", "test")
    pki = PkiDir.load(cli_pki)
    letter = encode_letter(
        message_id="m-1",
        sender=Party(her_id=90001, org_number="310000000"),
        recipient_her_id=8133973,
        event_json=b'{"event_type":"kad.admission"}',
    )
    message = tmp_path / "message.der"
    message.write_bytes(
        seal(
            letter,
            signer=pki.sender.signing_identity,
            recipient=pki.register.encryption_certificate,
        )
    )
    assert kpr(_open_args(cli_pki, message)) == 6


def test_kpr_seal_refuses_an_invalid_event_with_exit_6(
    cli_pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is validated before anything is signed."""
    monkeypatch.setenv("KPR_ENVIRONMENT", "test")
    event = tmp_path / "event.json"
    event.write_bytes(b'{"event_type":"kad.admission"}')
    out = tmp_path / "out.der"
    assert kpr(_seal_args(cli_pki, event, out)) == 6
    assert not out.exists()


def test_the_kpr_entry_point_runs_pki_dev(tmp_path: Path) -> None:
    """Through kpr.cli.main as a user would call it."""
    from kpr.cli import main

    assert main(["pki", "dev", "--out", str(tmp_path / "pki")]) == 0
    assert (tmp_path / "pki" / "register-enc.key").is_file()
