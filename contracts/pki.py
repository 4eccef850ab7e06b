"""A development PKI shaped like the national one, and loading it back.

The national enterprise PKI gives each organisation a *signing* certificate (key usage
nonRepudiation + digitalSignature) and a separate *encryption* certificate (key usage
keyEncipherment), issued by an intermediate CA under a root. The organisation number
sits in the subject's ``serialNumber`` attribute. :func:`generate_dev_pki` writes the
same shape for the two parties of kpr-stream (``sender`` and ``register``), plus TLS
certificates for the broker's listener and its clients::

    root-ca.pem / root-ca.key             self-signed root
    issuing-ca.pem / issuing-ca.key       intermediate, pathlen 0
    {party}-sign.pem / {party}-sign.key   signing pair
    {party}-enc.pem / {party}-enc.key     encryption pair
    broker.pem / broker.key               TLS server (localhost, 127.0.0.1)
    client-{party}.pem / client-{party}.key  TLS client, CN = party

Keys are unencrypted PKCS#8 PEM with mode 0600: this is for development only.
:class:`DevCa` is the small issuing helper the generator (and the tests) use.
"""

from __future__ import annotations

import ipaddress
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts.certprofile import certificate_problem
from contracts.envelope import DecryptionKey, SigningIdentity
from contracts.errors import KeyMaterialError
from contracts.trust import TrustStore

__all__ = [
    "ENCRYPTION",
    "PARTIES",
    "SIGNING",
    "TLS_CLIENT",
    "TLS_SERVER",
    "DevCa",
    "KeyUsageProfile",
    "PartyCredentials",
    "PartyInfo",
    "PkiDir",
    "create_crl",
    "dev_pki_files",
    "ensure_dev_pki",
    "enterprise_name",
    "generate_dev_pki",
    "load_ca_certificates",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "load_recipient_certificate",
    "new_rsa_key",
    "org_number_of",
    "write_certificate",
    "write_private_key",
]


@dataclass(frozen=True)
class PartyInfo:
    name: str
    org_number: str
    her_id: int
    organisation: str


PARTIES: Final[Mapping[str, PartyInfo]] = {
    "sender": PartyInfo("sender", "310000000", 90001, "Testkommune EPJ"),
    "register": PartyInfo("register", "310000019", 8133973, "Helsedirektoratet KPR test"),
}

DEFAULT_VALIDITY: Final = timedelta(days=825)


@dataclass(frozen=True)
class KeyUsageProfile:
    """Which key usages and extended key usages a certificate gets."""

    digital_signature: bool = False
    content_commitment: bool = False
    key_encipherment: bool = False
    extended: tuple[x509.ObjectIdentifier, ...] = ()

    def key_usage(self) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=self.digital_signature,
            content_commitment=self.content_commitment,
            key_encipherment=self.key_encipherment,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )


SIGNING: Final = KeyUsageProfile(digital_signature=True, content_commitment=True)
ENCRYPTION: Final = KeyUsageProfile(key_encipherment=True)
TLS_SERVER: Final = KeyUsageProfile(
    digital_signature=True, key_encipherment=True, extended=(ExtendedKeyUsageOID.SERVER_AUTH,)
)
TLS_CLIENT: Final = KeyUsageProfile(
    digital_signature=True, extended=(ExtendedKeyUsageOID.CLIENT_AUTH,)
)


def new_rsa_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def enterprise_name(common_name: str, *, organisation: str, org_number: str | None) -> x509.Name:
    """A subject like a Norwegian enterprise certificate's: C, O, serialNumber, CN."""
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
    ]
    if org_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, org_number))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


@dataclass(frozen=True)
class DevCa:
    """A certificate authority for development and tests: a certificate and its key."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @classmethod
    def create_root(
        cls,
        common_name: str = "KPR Dev Root CA",
        *,
        key: rsa.RSAPrivateKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> DevCa:
        key = key or new_rsa_key()
        name = enterprise_name(common_name, organisation="KPR Dev PKI", org_number=None)
        start = not_before or datetime.now(UTC) - timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        return cls(builder.sign(key, hashes.SHA256()), key)

    def issue_intermediate(
        self, common_name: str = "KPR Dev Issuing CA", *, key: rsa.RSAPrivateKey | None = None
    ) -> DevCa:
        key = key or new_rsa_key()
        name = enterprise_name(common_name, organisation="KPR Dev PKI", org_number=None)
        certificate = self.issue(
            name,
            key.public_key(),
            ca_path_length=0,
            not_before=datetime.now(UTC) - timedelta(days=1),
            validity=timedelta(days=3000),
        )
        return DevCa(certificate, key)

    def issue(
        self,
        subject: x509.Name,
        public_key: rsa.RSAPublicKey,
        *,
        usage: KeyUsageProfile | None = None,
        ca_path_length: int | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        validity: timedelta = DEFAULT_VALIDITY,
        san: Sequence[x509.GeneralName] = (),
    ) -> x509.Certificate:
        """Issue a certificate; a CA when ``ca_path_length`` is given, else an end entity."""
        start = not_before or datetime.now(UTC) - timedelta(hours=1)
        end = not_after or start + validity
        is_ca = ca_path_length is not None
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
        )
        if is_ca:
            builder = builder.add_extension(_ca_key_usage(), critical=True)
        elif usage is not None:
            builder = builder.add_extension(usage.key_usage(), critical=True)
            if usage.extended:
                builder = builder.add_extension(
                    x509.ExtendedKeyUsage(list(usage.extended)), critical=False
                )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        return builder.sign(self.private_key, hashes.SHA256())

    def issue_party(
        self,
        party: PartyInfo,
        usage: KeyUsageProfile,
        *,
        key: rsa.RSAPrivateKey | None = None,
        purpose: str = "signering",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """An enterprise certificate for ``party`` with its org number as serialNumber."""
        key = key or new_rsa_key()
        subject = enterprise_name(
            f"{party.organisation} {purpose}",
            organisation=party.organisation,
            org_number=party.org_number,
        )
        certificate = self.issue(
            subject, key.public_key(), usage=usage, not_before=not_before, not_after=not_after
        )
        return certificate, key


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def create_crl(
    ca: DevCa,
    revoked_serials: Sequence[int] = (),
    *,
    last_update: datetime | None = None,
    next_update: datetime | None = None,
    crl_number: int | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing ``revoked_serials``; its CRL number defaults to the
    seconds since the epoch of ``last_update`` (increasing, as RFC 5280 asks)."""
    start = last_update or datetime.now(UTC) - timedelta(minutes=5)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(start)
        .next_update(next_update or start + timedelta(days=7))
        .add_extension(x509.CRLNumber(crl_number or int(start.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(start).build()
        )
    return builder.sign(ca.private_key, hashes.SHA256())


def org_number_of(certificate: x509.Certificate) -> str | None:
    """The organisation number in the subject's serialNumber attribute, if it holds one.

    Norwegian enterprise certificates carry the nine-digit organisation number there;
    anything else (absent, several values, not nine digits) gives ``None``.
    """
    values = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(values) != 1:
        return None
    value = values[0].value
    if not isinstance(value, str) or len(value) != 9 or not value.isascii() or not value.isdigit():
        return None
    return value


def organisation_name_of(certificate: x509.Certificate) -> str | None:
    """The subject's organizationName (one value, as text), for the MsgHead's sender."""
    values = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    return values[0].value


# --- files ---------------------------------------------------------------------------


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """Write an unencrypted PKCS#8 PEM key readable by its owner only (0600)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


PKI_HINT = "make a development PKI with `kpr pki dev` (test only), or set the file's variable"


def _key_file(path: Path, what: str) -> bytes:
    """The bytes of a PEM file of key material, or :class:`KeyMaterialError` naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        folder = Path(path).parent
        if not folder.is_dir():
            raise KeyMaterialError(
                f"no PKI folder {folder} (looking for {what})", PKI_HINT
            ) from None
        raise KeyMaterialError(f"no {what} file {path}", PKI_HINT) from None
    except IsADirectoryError:
        raise KeyMaterialError(f"{what} {path} is a folder, not a file") from None
    except NotADirectoryError:
        raise KeyMaterialError(
            f"{what} {path}: {Path(path).parent} is a file, not a PKI folder", PKI_HINT
        ) from None
    except OSError as error:
        raise KeyMaterialError(f"cannot read {what} {path}: {error.strerror}") from None


def _not_pem(data: bytes, path: Path, what: str) -> KeyMaterialError:
    if b"-----BEGIN" in data:
        return KeyMaterialError(f"{path} is PEM but holds no readable {what}")
    if data[:1] == b"\x30":
        return KeyMaterialError(
            f"{path} is DER; a PEM {what} is expected",
            f"convert it: openssl x509 -inform der -in {path} -out {path}.pem",
        )
    return KeyMaterialError(f"{path} is not a PEM {what}")


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file."""
    return load_certificates(path)[0]


def load_recipient_certificate(path: Path, *, party: str = "the register") -> x509.Certificate:
    """A recipient's encryption certificate (the register's for a producer, a sender's for
    the register's AppRecs); one whose key usage has no keyEncipherment is refused here,
    as the national bus's client refuses it (MUG-000014), not after sending a message the
    recipient could not be meant to open."""
    certificate = load_certificate(path)
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return certificate
    if not usage.key_encipherment:
        raise KeyMaterialError(
            f"the recipient certificate {path} is not an encryption certificate "
            "(its key usage has no keyEncipherment)",
            f"give {party}'s encryption certificate, not its signing certificate",
        )
    return certificate


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (at least one)."""
    data = _key_file(path, "certificate")
    try:
        with warnings.catch_warnings():
            # a non-positive serial only warns (for now); load_ca_certificates refuses it
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _not_pem(data, path, "certificate") from None


def load_ca_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a trust bundle (roots or intermediates), each one readable
    through every field the trust path reads: a certificate that could never be part of
    a chain is a configuration fault to name at start, not a silent gap in the pool."""
    certificates = load_certificates(path)
    for number, certificate in enumerate(certificates, start=1):
        problem = certificate_problem(certificate)
        if problem is not None:
            raise KeyMaterialError(
                f"certificate {number} in {path} cannot be used: {problem}",
                "replace it with the certificate its CA publishes",
            )
    return certificates


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    data = _key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyMaterialError(
            f"private key {path} is encrypted", "give an unencrypted key file (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _not_pem(data, path, "private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyMaterialError(f"{path} does not hold an RSA private key")
    return key


@dataclass(frozen=True)
class PartyCredentials:
    """One party's signing and encryption pairs, as loaded from a :class:`PkiDir`."""

    info: PartyInfo
    signing_certificate: x509.Certificate
    signing_key: rsa.RSAPrivateKey
    encryption_certificate: x509.Certificate
    encryption_key: rsa.RSAPrivateKey
    signing_certificate_path: Path
    signing_key_path: Path
    encryption_certificate_path: Path
    encryption_key_path: Path
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def signing_identity(self) -> SigningIdentity:
        return SigningIdentity(self.signing_certificate, self.signing_key, self.chain)

    @property
    def decryption_key(self) -> DecryptionKey:
        return DecryptionKey(self.encryption_certificate, self.encryption_key)


@dataclass(frozen=True)
class PkiDir:
    """A development PKI directory as written by :func:`generate_dev_pki`."""

    directory: Path
    root: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    parties: Mapping[str, PartyCredentials] = field(default_factory=dict)

    @property
    def root_path(self) -> Path:
        return self.directory / ROOT_CERT

    @property
    def intermediate_path(self) -> Path:
        return self.directory / ISSUING_CERT

    @property
    def sender(self) -> PartyCredentials:
        return self.parties["sender"]

    @property
    def register(self) -> PartyCredentials:
        return self.parties["register"]

    def trust_store(self) -> TrustStore:
        """A trust store with this PKI's root and intermediate (no CRLs)."""
        return TrustStore(roots=[self.root], intermediates=self.intermediates)

    @classmethod
    def load(cls, directory: Path) -> PkiDir:
        """Load the files of a development PKI; a missing or unreadable file raises
        :class:`KeyMaterialError` naming it."""
        directory = Path(directory)
        root = load_certificate(directory / ROOT_CERT)
        intermediates = tuple(load_certificates(directory / ISSUING_CERT))
        parties: dict[str, PartyCredentials] = {}
        for name, info in PARTIES.items():
            paths = _party_paths(directory, name)
            parties[name] = PartyCredentials(
                info=info,
                signing_certificate=load_certificate(paths[0]),
                signing_key=load_private_key(paths[1]),
                encryption_certificate=load_certificate(paths[2]),
                encryption_key=load_private_key(paths[3]),
                signing_certificate_path=paths[0],
                signing_key_path=paths[1],
                encryption_certificate_path=paths[2],
                encryption_key_path=paths[3],
                chain=intermediates,
            )
        return cls(directory, root, intermediates, parties)


ROOT_CERT: Final = "root-ca.pem"
ROOT_KEY: Final = "root-ca.key"
ISSUING_CERT: Final = "issuing-ca.pem"
ISSUING_KEY: Final = "issuing-ca.key"
BROKER_CERT: Final = "broker.pem"
BROKER_KEY: Final = "broker.key"


def _party_paths(directory: Path, party: str) -> tuple[Path, Path, Path, Path]:
    return (
        directory / f"{party}-sign.pem",
        directory / f"{party}-sign.key",
        directory / f"{party}-enc.pem",
        directory / f"{party}-enc.key",
    )


def dev_pki_files() -> list[str]:
    """The names of every file :func:`generate_dev_pki` writes."""
    names = [ROOT_CERT, ROOT_KEY, ISSUING_CERT, ISSUING_KEY, BROKER_CERT, BROKER_KEY]
    for party in PARTIES:
        names += [path.name for path in _party_paths(Path(), party)]
        names += [f"client-{party}.pem", f"client-{party}.key"]
    return names


def generate_dev_pki(directory: Path, *, key_size: int = 2048) -> PkiDir:
    """Write a fresh development PKI into ``directory`` (overwriting) and load it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    root = DevCa.create_root(key=new_rsa_key(key_size))
    issuing = root.issue_intermediate(key=new_rsa_key(key_size))
    write_certificate(directory / ROOT_CERT, root.certificate)
    write_private_key(directory / ROOT_KEY, root.private_key)
    write_certificate(directory / ISSUING_CERT, issuing.certificate)
    write_private_key(directory / ISSUING_KEY, issuing.private_key)
    for name, info in PARTIES.items():
        sign_cert, sign_key, enc_cert, enc_key = _party_paths(directory, name)
        certificate, key = issuing.issue_party(info, SIGNING, key=new_rsa_key(key_size))
        write_certificate(sign_cert, certificate)
        write_private_key(sign_key, key)
        certificate, key = issuing.issue_party(
            info, ENCRYPTION, key=new_rsa_key(key_size), purpose="kryptering"
        )
        write_certificate(enc_cert, certificate)
        write_private_key(enc_key, key)
        client_key = new_rsa_key(key_size)
        client = issuing.issue(
            enterprise_name(name, organisation=info.organisation, org_number=info.org_number),
            client_key.public_key(),
            usage=TLS_CLIENT,
        )
        write_certificate(directory / f"client-{name}.pem", client)
        write_private_key(directory / f"client-{name}.key", client_key)
    broker_key = new_rsa_key(key_size)
    broker = issuing.issue(
        enterprise_name("localhost", organisation="KPR Dev broker", org_number=None),
        broker_key.public_key(),
        usage=TLS_SERVER,
        san=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    write_certificate(directory / BROKER_CERT, broker)
    write_private_key(directory / BROKER_KEY, broker_key)
    return PkiDir.load(directory)


def ensure_dev_pki(directory: Path, *, key_size: int = 2048) -> PkiDir:
    """Load the development PKI in ``directory``, generating it first if any file is missing."""
    directory = Path(directory)
    if all((directory / name).is_file() for name in dev_pki_files()):
        return PkiDir.load(directory)
    return generate_dev_pki(directory, key_size=key_size)
