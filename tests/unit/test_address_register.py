"""The address register (contracts.addressregister): the senders' encryption certificates,
read and checked at start-up; ``kpr pki dev`` writes one; settings find it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from contracts.addressregister import (
    DEV_ADDRESS_REGISTER_FILE,
    FileAddressRegister,
    dev_address_register,
)
from contracts.apprec import AppRecMode, AppRecStatus
from contracts.errors import KeyMaterialError, SettingsError
from contracts.pki import PkiDir
from kpr.cli import main
from kpr.config import Settings
from kpr.exits import explain


def _register(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "register.json"
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return path


def test_a_register_maps_her_ids_to_encryption_certificates(
    dev_pki: PkiDir, tmp_path: Path
) -> None:
    """Relative paths are read from the file's folder, absolute ones as they are."""
    sender = dev_pki.sender
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "enc.pem").write_bytes(sender.encryption_certificate_path.read_bytes())
    path = _register(
        tmp_path,
        {"90001": "certs/enc.pem", "90002": str(dev_pki.register.encryption_certificate_path)},
    )
    register = FileAddressRegister.load(path)
    assert len(register) == 2
    party = register.party(90001)
    assert party is not None
    assert party.her_id == 90001
    assert party.encryption_certificate == sender.encryption_certificate
    assert party.name == sender.info.organisation
    other = register.party(90002)
    assert other is not None
    assert other.encryption_certificate == dev_pki.register.encryption_certificate
    assert register.party(90003) is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "is not JSON"),
        ([], "not a JSON object"),
        ({"ninety": "enc.pem"}, "a HER-id to the path"),
        ({"0": "enc.pem"}, "a HER-id to the path"),
        ({"90001": 17}, "a HER-id to the path"),
        ({"90001": ""}, "a HER-id to the path"),
    ],
)
def test_a_bad_file_is_a_settings_error(tmp_path: Path, content: object, words: str) -> None:
    with pytest.raises(SettingsError, match=words) as caught:
        FileAddressRegister.load(_register(tmp_path, content))
    code, line = explain(caught.value)
    assert code == SettingsError.exit_code == 7
    assert "\n" not in line


def test_a_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the address register"):
        FileAddressRegister.load(tmp_path / "absent.json")


def test_a_missing_certificate_is_key_material(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match=r"no certificate file .*absent\.pem") as caught:
        FileAddressRegister.load(_register(tmp_path, {"90001": "absent.pem"}))
    assert explain(caught.value)[0] == KeyMaterialError.exit_code == 11


def test_a_signing_certificate_is_refused_as_the_producer_refuses_it(
    dev_pki: PkiDir, tmp_path: Path
) -> None:
    """The check of contracts.pki.load_recipient_certificate (keyEncipherment), naming the
    party: a signing certificate cannot be encrypted to."""
    path = _register(tmp_path, {"90001": str(dev_pki.sender.signing_certificate_path)})
    with pytest.raises(KeyMaterialError, match="not an encryption certificate") as caught:
        FileAddressRegister.load(path)
    assert "HER-id 90001's encryption certificate" in (caught.value.hint or "")


def test_the_dev_register_names_the_dev_sender(dev_pki: PkiDir, tmp_path: Path) -> None:
    relative = orjson.loads(dev_address_register(dev_pki))
    assert relative == {"90001": "sender-enc.pem"}
    absolute = orjson.loads(dev_address_register(dev_pki, absolute=True))
    assert Path(absolute["90001"]).is_absolute()
    path = _register(tmp_path, absolute)
    party = FileAddressRegister.load(path).party(90001)
    assert party is not None
    assert party.encryption_certificate == dev_pki.sender.encryption_certificate


def test_pki_dev_writes_the_address_register(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    assert main(["pki", "dev", "--out", str(directory)]) == 0
    register = FileAddressRegister.load(directory / DEV_ADDRESS_REGISTER_FILE)
    party = register.party(90001)
    assert party is not None
    assert party.encryption_certificate == PkiDir.load(directory).sender.encryption_certificate


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


def test_settings_find_the_register(dev_pki: PkiDir, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    beside = pki / DEV_ADDRESS_REGISTER_FILE
    beside.write_bytes(orjson.dumps({"90001": str(dev_pki.sender.encryption_certificate_path)}))
    test = {"KPR_ENVIRONMENT": "test", "KPR_PKI_DIR": str(pki)}
    # the test environment reads the file beside the development PKI ...
    assert _settings(test).address_register_path() == beside
    register = _settings(test).address_register()
    assert register is not None
    assert register.party(90001) is not None
    # ... production never guesses
    assert _settings({"KPR_PKI_DIR": str(pki)}).address_register_path() is None
    assert _settings({"KPR_PKI_DIR": str(pki)}).address_register() is None
    explicit = _register(tmp_path, {})
    settings = _settings({"KPR_PKI_DIR": str(pki), "KPR_ADDRESS_REGISTER": str(explicit)})
    assert settings.address_register_path() == explicit


@pytest.mark.parametrize(
    ("value", "mode"),
    [(None, AppRecMode.ALL), ("all", AppRecMode.ALL), ("rejections", AppRecMode.REJECTIONS),
     ("off", AppRecMode.OFF)],
)  # fmt: skip
def test_kpr_apprec_chooses_what_gets_an_apprec(value: str | None, mode: AppRecMode) -> None:
    settings = _settings({} if value is None else {"KPR_APPREC": value})
    assert settings.apprec is mode
    assert mode.sends(AppRecStatus.REJECTED) is (mode is not AppRecMode.OFF)
    assert mode.sends(AppRecStatus.OK) is (mode is AppRecMode.ALL)


def test_a_wrong_kpr_apprec_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="KPR_APPREC='some'"):
        _settings({"KPR_APPREC": "some"})


def test_the_consumer_stops_at_start_on_a_bad_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line and the settings exit code, before any broker is tried."""
    monkeypatch.setenv("KPR_ENVIRONMENT", "test")
    monkeypatch.setenv("KPR_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KPR_ADDRESS_REGISTER", str(_register(tmp_path, b"[")))
    monkeypatch.setenv("KPR_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    assert main(["consume", "--until-idle", "0.1"]) == SettingsError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "address register" in err[0]
