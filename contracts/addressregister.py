"""Where a party's encryption certificate comes from: the national address register, modelled.

The register can only encrypt an AppRec to a sender whose encryption certificate it knows.
On the national bus that certificate is in NHN's address register (AR) / the party's
collaboration profile (CPP); Helsenorge.Messaging looks it up there
(``CollaborationProtocolProfile.EncryptionCertificate``, checked for keyEncipherment in
``AmqpCore.SendAsync``) before it encrypts any message, AppRecs included.

:class:`AddressRegister` is that look-up as an interface; :class:`FileAddressRegister` reads
an operator's JSON file (``KPR_ADDRESS_REGISTER``)::

    {"90001": "sender-enc.pem", "90002": "/etc/kpr/parties/90002-enc.pem"}

HER-id -> PEM file of that party's encryption certificate, relative paths from the file's
folder. Every certificate is loaded and checked when the file is read (at start-up), with
the producer's recipient check (:func:`contracts.pki.load_recipient_certificate`: key usage
keyEncipherment) and an RSA key of at least :data:`contracts.trust.MIN_RSA_KEY_BITS`: a wrong
file is a one-line :class:`SettingsError` or :class:`KeyMaterialError`, not a failure per
AppRec later. The file holds no secret (certificates are public) and no personal data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts.errors import KeyMaterialError, SettingsError
from contracts.pki import PkiDir, load_recipient_certificate, organisation_name_of
from contracts.trust import MIN_RSA_KEY_BITS

__all__ = [
    "DEV_ADDRESS_REGISTER_FILE",
    "AddressRegister",
    "FileAddressRegister",
    "PartyAddress",
    "dev_address_register",
]

#: What ``kpr pki dev`` (and the development PKI) writes beside the PKI.
DEV_ADDRESS_REGISTER_FILE: Final = "address-register.json"
_MAX_HER_ID_DIGITS: Final = 9
_HINT: Final = (
    'KPR_ADDRESS_REGISTER names a JSON object {"<HER-id>": "<PEM path>", ...} '
    "(docs/OPERATIONS.md, 'National bus')"
)


@dataclass(frozen=True)
class PartyAddress:
    """What we know of one communication party: its encryption certificate and name."""

    her_id: int
    encryption_certificate: x509.Certificate
    name: str | None = None


class AddressRegister(Protocol):
    """Looks up a communication party by HER-id; ``None`` when it is not known."""

    def party(self, her_id: int) -> PartyAddress | None: ...


class FileAddressRegister:
    """An :class:`AddressRegister` over parties read once, from an operator's file."""

    def __init__(self, parties: Mapping[int, PartyAddress]) -> None:
        self._parties = dict(parties)

    def party(self, her_id: int) -> PartyAddress | None:
        return self._parties.get(her_id)

    def __len__(self) -> int:
        return len(self._parties)

    @classmethod
    def load(cls, path: Path) -> FileAddressRegister:
        """Read and check the file; raises :class:`SettingsError` for a file that cannot
        be read or is not the mapping, :class:`KeyMaterialError` for a certificate."""
        path = Path(path)
        try:
            raw = orjson.loads(path.read_bytes())
        except OSError as error:
            raise SettingsError(
                f"cannot read the address register {path}: {error.strerror or error}", _HINT
            ) from None
        except orjson.JSONDecodeError as error:
            raise SettingsError(
                f"the address register {path} is not JSON: {str(error).splitlines()[0]}", _HINT
            ) from None
        if not isinstance(raw, dict):
            raise SettingsError(f"the address register {path} is not a JSON object", _HINT)
        parties: dict[int, PartyAddress] = {}
        for key, value in raw.items():
            her_id = _her_id(key)
            if her_id is None or not isinstance(value, str) or not value:
                raise SettingsError(
                    f"the address register {path} maps {key!r} to {value!r}; "
                    "a HER-id to the path of a PEM certificate is expected",
                    _HINT,
                )
            certificate_path = path.parent / value
            certificate = _encryption_certificate(certificate_path, her_id)
            parties[her_id] = PartyAddress(her_id, certificate, organisation_name_of(certificate))
        return cls(parties)


def _her_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_HER_ID_DIGITS:
        return None
    return int(text) or None


def _encryption_certificate(path: Path, her_id: int) -> x509.Certificate:
    """A party's encryption certificate, with the checks :func:`contracts.envelope.seal`
    would otherwise fail on when the first AppRec is sealed."""
    certificate = load_recipient_certificate(path, party=f"HER-id {her_id}")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_KEY_BITS:
        raise KeyMaterialError(
            f"the encryption certificate {path} of HER-id {her_id} does not hold an RSA key "
            f"of at least {MIN_RSA_KEY_BITS} bits",
            "give the party's encryption certificate from the address register",
        )
    return certificate


def dev_address_register(pki: PkiDir, *, absolute: bool = False) -> bytes:
    """The address register of the development PKI: its sender's encryption certificate,
    by a path relative to the PKI folder (what ``kpr pki dev`` writes beside it), or an
    absolute one (for a file kept elsewhere, as the demo's)."""
    sender = pki.sender
    path = sender.encryption_certificate_path
    return orjson.dumps(
        {str(sender.info.her_id): str(path.resolve()) if absolute else path.name},
        option=orjson.OPT_INDENT_2,
    )
