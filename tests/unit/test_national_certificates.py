"""The national library's own Buypass test certificates, read by our profile.

Helsenorge.Messaging ships a signature certificate with keyUsage nonRepudiation only and an
encryption certificate with digitalSignature + keyEncipherment + dataEncipherment, both for
Helsedirektoratet (983544622) from Buypass's test CA (tests/data/helsenorge/SOURCE.md). Our
organisation-number and key-usage reading must take them as that library does: the first
as a signer, the second as an encryption certificate and never as a signer. They expired
in 2017, so they are judged at a time inside their validity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.certprofile import certificate_problem
from contracts.errors import KeyMaterialError, UntrustedSigner
from contracts.pki import PkiDir, load_recipient_certificate, org_number_of

FILES = Path(__file__).resolve().parents[1] / "data" / "helsenorge"
INSIDE_VALIDITY = datetime(2015, 6, 1, tzinfo=UTC)


def _certificate(name: str) -> x509.Certificate:
    return x509.load_der_x509_certificate((FILES / name).read_bytes())


SIGNATURE = _certificate("Helsenorge_Signature.cer")
ENCRYPTION = _certificate("Counterparty_Encryption.cer")


@pytest.mark.parametrize("certificate", [SIGNATURE, ENCRYPTION], ids=["signature", "encryption"])
def test_the_organisation_number_is_read_from_the_subject_serial_number(
    certificate: x509.Certificate,
) -> None:
    assert org_number_of(certificate) == "983544622"
    assert certificate_problem(certificate) is None


def test_the_signature_certificate_passes_the_signer_profile_and_fails_only_on_its_chain(
    dev_pki: PkiDir,
) -> None:
    """Judged as a signer, nothing about the certificate itself is refused: the refusal is
    that its issuer (Buypass's test CA) is not among our roots."""
    store = dev_pki.trust_store()
    with pytest.raises(UntrustedSigner) as refused:
        store.verify(SIGNATURE, at=INSIDE_VALIDITY, now=INSIDE_VALIDITY)
    text = str(refused.value)
    assert "signing certificate" not in text
    assert "key usage" not in text
    assert "issuer" in text or "chain" in text or "root" in text, text


def test_the_encryption_certificate_is_refused_as_a_signer_for_its_key_usage(
    dev_pki: PkiDir,
) -> None:
    """digitalSignature without nonRepudiation: "certificate of the wrong type", as the
    national library's MUG-000014."""
    store = dev_pki.trust_store()
    with pytest.raises(UntrustedSigner, match="not a signing certificate"):
        store.verify(ENCRYPTION, at=INSIDE_VALIDITY, now=INSIDE_VALIDITY)


def test_as_the_recipient_the_encryption_certificate_loads_and_the_signature_one_does_not(
    tmp_path: Path,
) -> None:
    for certificate, name in ((ENCRYPTION, "encryption.pem"), (SIGNATURE, "signature.pem")):
        (tmp_path / name).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    assert load_recipient_certificate(tmp_path / "encryption.pem") == ENCRYPTION
    with pytest.raises(KeyMaterialError, match="not an encryption certificate"):
        load_recipient_certificate(tmp_path / "signature.pem")
