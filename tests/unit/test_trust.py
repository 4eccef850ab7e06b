"""Trust decisions on a signer certificate, and sender authorisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from crypto_fixtures import IssueSigner, write_pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts.errors import (
    CertificateExpired,
    CertificateRevoked,
    CrlUnavailable,
    SenderNotAuthorised,
    UntrustedSigner,
)
from contracts.pki import (
    ENCRYPTION,
    PARTIES,
    SIGNING,
    TLS_CLIENT,
    TLS_SERVER,
    DevCa,
    KeyUsageProfile,
    PkiDir,
    create_crl,
    enterprise_name,
)
from contracts.trust import FileCrlSource, SenderAuthorisation, TrustStore

NOW = datetime.now(UTC)


def test_the_dev_signer_is_trusted_through_the_configured_intermediate(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """Signer -> issuing CA -> root verifies at signing time and now (no exception)."""
    trust.verify(dev_pki.sender.signing_certificate, hints=(), at=NOW, now=NOW)
    trust.verify(dev_pki.sender.signing_certificate, hints=(), at=NOW, now=NOW)  # cached path


def test_without_the_intermediate_configured_the_chain_fails_even_if_embedded(
    dev_pki: PkiDir,
) -> None:
    """An embedded intermediate is a hint, never trust: the root alone is not enough."""
    root_only = TrustStore(roots=[dev_pki.root])
    with pytest.raises(UntrustedSigner, match="no chain"):
        root_only.verify(
            dev_pki.sender.signing_certificate, hints=dev_pki.intermediates, at=NOW, now=NOW
        )


def test_a_second_unconfigured_intermediate_under_our_root_is_not_trusted(
    dev_pki: PkiDir, root_ca: DevCa, spare_keys: list[rsa.RSAPrivateKey], issue_signer: IssueSigner
) -> None:
    """An intermediate our root signed but the operator did not configure does not count."""
    rogue = root_ca.issue_intermediate("Unconfigured Issuing CA", key=spare_keys[3])
    signer = issue_signer(ca=rogue)
    trust = dev_pki.trust_store()
    with pytest.raises(UntrustedSigner):
        trust.verify(signer.certificate, hints=(rogue.certificate,), at=NOW, now=NOW)
    configured = TrustStore(roots=[dev_pki.root], intermediates=[rogue.certificate])
    configured.verify(signer.certificate, hints=(), at=NOW, now=NOW)


def test_a_self_signed_signer_is_untrusted(
    dev_pki: PkiDir, trust: TrustStore, spare_keys: list[rsa.RSAPrivateKey]
) -> None:
    """A self-signed certificate with signing key usage is not a signer, nor is a root."""
    key = spare_keys[0]
    name = enterprise_name("self", organisation="Self", org_number="310000000")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(SIGNING.key_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(UntrustedSigner, match="self-signed"):
        trust.verify(certificate, hints=(certificate,), at=NOW, now=NOW)
    with pytest.raises(UntrustedSigner):
        trust.verify(dev_pki.root, hints=(), at=NOW, now=NOW)


def test_a_ca_certificate_cannot_sign_messages(dev_pki: PkiDir, trust: TrustStore) -> None:
    """The issuing CA chains to the root, but a CA is not a message signer."""
    with pytest.raises(UntrustedSigner, match="CA certificate"):
        trust.verify(dev_pki.intermediates[0], hints=(), at=NOW, now=NOW)


def test_a_key_encipherment_only_certificate_is_not_a_signer(
    dev_pki: PkiDir, trust: TrustStore
) -> None:
    """The encryption certificate lacks nonRepudiation."""
    with pytest.raises(UntrustedSigner, match="not a signing certificate"):
        trust.verify(dev_pki.sender.encryption_certificate, hints=(), at=NOW, now=NOW)


@pytest.mark.parametrize(
    "usage",
    [
        KeyUsageProfile(digital_signature=True, key_encipherment=True),
        KeyUsageProfile(digital_signature=True),
        TLS_CLIENT,
        TLS_SERVER,
    ],
    ids=["encryption with digitalSignature", "digitalSignature only", "TLS client", "TLS server"],
)
def test_only_a_certificate_with_non_repudiation_signs_messages(
    trust: TrustStore, issue_signer: IssueSigner, usage: KeyUsageProfile
) -> None:
    """The national signer profile (MUG-000014): every other kind, digitalSignature
    included, is refused with a reason that names the certificate's wrong kind; the same
    sender's signing certificate passes."""
    with pytest.raises(UntrustedSigner, match="not a signing certificate"):
        trust.verify(issue_signer(usage=usage).certificate, hints=(), at=NOW, now=NOW)
    trust.verify(issue_signer(usage=SIGNING).certificate, hints=(), at=NOW, now=NOW)


def test_validity_is_checked_at_signing_time_and_now(
    trust: TrustStore, issue_signer: IssueSigner
) -> None:
    """Valid now but not at the claimed signing time, or the reverse: CertificateExpired."""
    signer = issue_signer(not_before=NOW - timedelta(hours=10), not_after=NOW + timedelta(hours=10))
    trust.verify(signer.certificate, hints=(), at=NOW - timedelta(hours=1), now=NOW)
    with pytest.raises(CertificateExpired, match="signer"):
        trust.verify(signer.certificate, hints=(), at=NOW - timedelta(hours=11), now=NOW)
    with pytest.raises(CertificateExpired, match="signer"):
        trust.verify(signer.certificate, hints=(), at=NOW, now=NOW + timedelta(hours=11))


def test_a_revoked_signer_is_refused_and_an_unlisted_one_passes(
    dev_pki: PkiDir, issuing_ca: DevCa, issue_signer: IssueSigner, tmp_path: Path
) -> None:
    """The issuing CA's CRL lists the signer's serial: CertificateRevoked; other serials pass."""
    revoked = issue_signer()
    crl_file = tmp_path / "issuing.crl"
    crl_file.write_bytes(
        create_crl(issuing_ca, [revoked.certificate.serial_number]).public_bytes(
            serialization.Encoding.DER
        )
    )
    trust = TrustStore.from_pem_files(
        roots=[dev_pki.root_path], intermediates=[dev_pki.intermediate_path], crl_files=[crl_file]
    )
    with pytest.raises(CertificateRevoked):
        trust.verify(revoked.certificate, hints=(), at=NOW, now=NOW)
    trust.verify(dev_pki.sender.signing_certificate, hints=(), at=NOW, now=NOW)


def test_an_unreadable_crl_is_a_transient_failure(dev_pki: PkiDir, tmp_path: Path) -> None:
    """A configured CRL file that is missing or not a CRL raises CrlUnavailable (retry later)."""
    for content in (None, b"not a crl"):
        crl_file = tmp_path / "broken.crl"
        if content is not None:
            crl_file.write_bytes(content)
        trust = TrustStore(
            roots=[dev_pki.root],
            intermediates=dev_pki.intermediates,
            crls=FileCrlSource([crl_file]),
        )
        with pytest.raises(CrlUnavailable):
            trust.verify(dev_pki.sender.signing_certificate, hints=(), at=NOW, now=NOW)


def test_a_crl_not_signed_by_its_issuer_or_stale_is_unavailable(
    dev_pki: PkiDir, issuing_ca: DevCa, spare_keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    """A CRL under the issuer's name but another key, or past nextUpdate, is not used."""
    impostor = DevCa(issuing_ca.certificate, spare_keys[1])
    stale = create_crl(
        issuing_ca,
        last_update=NOW - timedelta(days=10),
        next_update=NOW - timedelta(days=1),
    )
    for crl in (create_crl(impostor), stale):
        path = write_crl(tmp_path / "issuing.crl", crl)
        trust = TrustStore(
            roots=[dev_pki.root], intermediates=dev_pki.intermediates, crls=FileCrlSource([path])
        )
        with pytest.raises(CrlUnavailable):
            trust.verify(dev_pki.sender.signing_certificate, hints=(), at=NOW, now=NOW)


def write_crl(path: Path, crl: object) -> Path:
    from cryptography import x509

    assert isinstance(crl, x509.CertificateRevocationList)
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def test_from_pem_files_reads_bundles(dev_pki: PkiDir, tmp_path: Path) -> None:
    """Roots and intermediates load from PEM files and verify the dev signer."""
    root = write_pem(tmp_path / "root.pem", dev_pki.root)
    trust = TrustStore.from_pem_files(roots=[root], intermediates=[dev_pki.intermediate_path])
    trust.verify(dev_pki.sender.signing_certificate, hints=(), at=NOW, now=NOW)


def test_the_register_encryption_cert_fixture_has_encryption_usage(dev_pki: PkiDir) -> None:
    """Guard for the tests above: the encryption profile is keyEncipherment only."""
    assert ENCRYPTION.key_usage().key_encipherment
    assert not ENCRYPTION.key_usage().digital_signature
    assert PARTIES["register"].her_id == 8133973


# --- sender authorisation ------------------------------------------------------------

AUTHORISATION = SenderAuthorisation.from_mapping({"310000000": ["974600951", "874600952"]})


@pytest.mark.parametrize(
    ("signer", "unit"),
    [("310000000", "310000000"), ("310000000", "974600951"), ("974600951", "974600951")],
)
def test_a_unit_reports_for_itself_and_granted_signers_for_their_units(
    signer: str, unit: str
) -> None:
    """Self-reporting always passes; explicit grants pass."""
    AUTHORISATION.check(signer, unit)


@pytest.mark.parametrize(
    ("signer", "unit"),
    [("974600951", "310000000"), ("310000000", "999999999"), (None, "974600951")],
)
def test_everything_else_is_not_authorised(signer: str | None, unit: str) -> None:
    """Ungranted pairs, and a signer certificate without an org number, are refused."""
    with pytest.raises(SenderNotAuthorised):
        AUTHORISATION.check(signer, unit)


def test_the_refusal_never_echoes_something_that_is_not_an_org_number() -> None:
    """A national identity number in the unit field does not reach the description."""
    with pytest.raises(SenderNotAuthorised) as caught:
        AUTHORISATION.check("310000000", "01010012345")
    assert "01010012345" not in caught.value.description
    assert "310000000" in caught.value.description


def test_authorisation_loads_from_json_and_rejects_bad_tables(tmp_path: Path) -> None:
    """The operator's JSON table loads; malformed org numbers are a configuration error."""
    good = tmp_path / "grants.json"
    good.write_bytes(orjson.dumps({"310000000": ["974600951"]}))
    SenderAuthorisation.from_json_file(good).check("310000000", "974600951")
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"310000000": ["12"]}))
    with pytest.raises(ValueError, match="nine-digit"):
        SenderAuthorisation.from_json_file(bad)
    bad.write_bytes(b'["310000000"]')
    with pytest.raises(ValueError, match="expected"):
        SenderAuthorisation.from_json_file(bad)


def test_a_her_id_must_belong_to_the_signing_organisation(tmp_path: Path) -> None:
    """With HER-ids configured, a letter may only claim a HER-id of the signer's own
    organisation: one sender cannot report (or draw receipts) as another."""
    path = tmp_path / "authorisation.json"
    path.write_bytes(
        b'{"grants": {"310000000": ["310000027"]}, "her_ids": {"90001": "310000000",'
        b' "90002": "310000019"}}'
    )
    authorisation = SenderAuthorisation.from_json_file(path)
    assert authorisation.binds_her_ids
    authorisation.check_sender(90001, "310000000")
    with pytest.raises(SenderNotAuthorised, match="HER-id 90002"):
        authorisation.check_sender(90002, "310000000")
    with pytest.raises(SenderNotAuthorised, match="HER-id 90003"):
        authorisation.check_sender(90003, "310000000")
    authorisation.check("310000000", "310000027")


def test_grants_only_files_still_load_without_her_id_binding(tmp_path: Path) -> None:
    """The older grants-only form keeps working; HER-ids are then not checked."""
    path = tmp_path / "authorisation.json"
    path.write_bytes(b'{"310000000": ["310000027"]}')
    authorisation = SenderAuthorisation.from_json_file(path)
    assert not authorisation.binds_her_ids
    authorisation.check_sender(90002, "310000000")
