"""Whom we believe: the trust store (roots, intermediates, CRLs) and sender authorisation.

Chain building is deliberately narrow. The ``certificates`` field of a CMS SignedData is
not signed, so embedded certificates are *hints* only: a chain is built from the signer
to a configured root through configured intermediates, and nothing else. No partial
chains, no self-signed leaves, no intermediate that only the message brought along.

Why not ``cryptography.x509.verification``? It was judged again against cryptography 51,
whose policy is configurable (``PolicyBuilder.extension_policies``). It is kept beside the
trust store as an independent check (``tests/unit/test_trust_differential.py``): everything
it refuses among the RFC 5280 cases, we refuse too. It is not adopted, because for this
profile it cannot do the following:

- It validates at one time, while a signer is judged at its signing time and at now.
- It refuses every ``directoryName`` name constraint as unsupported, and DN subtrees are
  the constraint form a CA for organisations uses.
- It does no policy processing (requireExplicitPolicy, inhibitAnyPolicy), and treats a
  critical certificatePolicies as an unaccounted-for extension.
- It neither reads CRLs nor checks a signer's nonRepudiation and organisation number.
- Its client verifier expects the WebPKI end-entity profile (EKU, SAN). An enterprise
  signing certificate is not issued under that profile, so the profile had to be replaced
  wholesale with ``ExtensionPolicy.permit_all()``.

Measured in the same run on the good three-certificate chain, a cold ``TrustStore.verify``
took 1.4 to 1.55 times the Rust validator's time, about 0.1 to 0.25 ms. That is small
beside the RSA decryption and signature check of every message, and the verified chain is
cached per signer. The chains are two or three certificates long, so the path is built by
hand with ``Certificate.verify_directly_issued_by`` (name chaining and signature), and the
RFC 5280 rules are applied from :mod:`contracts.certprofile`. Validity and revocation are
checked on every call.

:class:`SenderAuthorisation` is the operator's table of which signing organisation may
report for which service unit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID

from contracts.certprofile import (
    PARSE_ERRORS,
    ca_problem,
    certificate_problem,
    leaf_problem,
    linked,
    name_constraints_problem,
    policy_problem,
)
from contracts.errors import (
    CertificateExpired,
    CertificateRevoked,
    CrlUnavailable,
    Rejected,
    SenderNotAuthorised,
    UnsupportedAlgorithm,
    UntrustedSigner,
)

__all__ = [
    "MIN_RSA_KEY_BITS",
    "CrlSource",
    "FileCrlSource",
    "SenderAuthorisation",
    "TrustStore",
    "check_certificate_algorithms",
]

MIN_RSA_KEY_BITS = 2048
MAX_CHAIN_DEPTH = 5
#: Issuer signatures tried while building one chain. A real chain needs one per level;
#: a pool of certificates sharing a subject and key would otherwise make the search
#: exponential in the pool's size (every ordering of it is a candidate path).
MAX_CHAIN_CANDIDATES = 32
#: Wall-clock bound of one chain search (name constraints and policies of each complete
#: path included): a few milliseconds for a real chain.
MAX_CHAIN_SEARCH_SECONDS = 1.0
_ALLOWED_CERT_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_CHAIN_CACHE_SIZE = 4096


def check_certificate_algorithms(certificate: x509.Certificate) -> None:
    """Raise :class:`UnsupportedAlgorithm` unless the key is RSA >= 2048 and the
    certificate's own signature uses SHA-2 (no MD5 / SHA-1)."""
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise UnsupportedAlgorithm("only RSA certificates are accepted")
    if key.key_size < MIN_RSA_KEY_BITS:
        raise UnsupportedAlgorithm(
            f"RSA key of {key.key_size} bits; at least {MIN_RSA_KEY_BITS} are required"
        )
    if key.key_size % 8:
        # No conforming key generator makes one; libraries disagree on how to pad it.
        raise UnsupportedAlgorithm(f"RSA key of {key.key_size} bits: not a whole number of bytes")
    algorithm = certificate.signature_hash_algorithm
    if not isinstance(algorithm, _ALLOWED_CERT_HASHES):
        name = algorithm.name if algorithm is not None else "none"
        raise UnsupportedAlgorithm(f"certificate signed with {name}; SHA-256 or better required")


class CrlSource(Protocol):
    """Where revocation status comes from."""

    def is_revoked(
        self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime
    ) -> bool:
        """Whether ``issuer``'s CRL lists ``certificate``.

        Returns ``False`` when the source holds no CRL for ``issuer``. Raises
        :class:`CrlUnavailable` when a CRL for it cannot be read, is stale, or does not
        verify against ``issuer``.
        """
        ...


class FileCrlSource:
    """CRLs read from files (PEM or DER), cached and re-read after ``max_age``.

    Each CRL's signature is checked against the issuer certificate before it is used.
    An unreadable or unparsable file, a CRL past its nextUpdate, or a CRL whose
    signature does not verify all raise :class:`CrlUnavailable`: the message is not at
    fault, so the consumer retries later.
    """

    def __init__(self, paths: Sequence[Path], max_age: timedelta = timedelta(minutes=10)) -> None:
        self._paths = tuple(Path(path) for path in paths)
        self._max_age = max_age.total_seconds()
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._crls: tuple[x509.CertificateRevocationList, ...] = ()
        self._verified: set[tuple[int, bytes]] = set()

    def _current(self) -> tuple[x509.CertificateRevocationList, ...]:
        with self._lock:
            fresh = self._loaded_at is not None and (
                time.monotonic() - self._loaded_at < self._max_age
            )
            if not fresh:
                self._crls = tuple(self._read(path) for path in self._paths)
                self._verified = set()
                self._loaded_at = time.monotonic()
            return self._crls

    @staticmethod
    def _read(path: Path) -> x509.CertificateRevocationList:
        try:
            data = path.read_bytes()
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_crl(data)
            return x509.load_der_x509_crl(data)
        except (OSError, ValueError):
            raise CrlUnavailable(f"the CRL file {path.name} cannot be read") from None

    def is_revoked(
        self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime
    ) -> bool:
        for index, crl in enumerate(self._current()):
            if crl.issuer != issuer.subject:
                continue
            self._check_crl(index, crl, issuer, now)
            try:
                if crl.get_revoked_certificate_by_serial_number(certificate.serial_number):
                    return True
            except PARSE_ERRORS:
                raise CrlUnavailable(
                    "a configured CRL has an entry that is not well formed"
                ) from None
        return False

    def _check_crl(
        self,
        index: int,
        crl: x509.CertificateRevocationList,
        issuer: x509.Certificate,
        now: datetime,
    ) -> None:
        key = (index, issuer.fingerprint(hashes.SHA256()))
        if key not in self._verified:
            problem = _crl_problem(crl, issuer)
            if problem is not None:
                raise CrlUnavailable(f"a configured CRL cannot be used: {problem}")
            public_key = issuer.public_key()
            if not isinstance(public_key, rsa.RSAPublicKey) or not crl.is_signature_valid(
                public_key
            ):
                raise CrlUnavailable("a configured CRL does not verify against its issuer")
            self._verified.add(key)
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            raise CrlUnavailable("a configured CRL is past its next update")


#: CRL extensions whose meaning we apply or that cannot hide a revocation; a critical one
#: outside the set (a delta CRL, a partitioned CRL's issuing distribution point) refuses it.
_PROCESSED_CRL_EXTENSIONS = frozenset(
    {ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
)


def _crl_problem(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> str | None:
    """Why ``crl`` may not be used to judge ``issuer``'s certificates (RFC 5280 5, 6.3)."""
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "its issuer has no key usage"
    if not usage.crl_sign:
        return "its issuer may not sign CRLs (no cRLSign)"
    try:
        extensions = list(crl.extensions)
        _ = [extension.value for extension in extensions]
    except PARSE_ERRORS:
        return "it has an extension that is not well formed"
    for extension in extensions:
        if extension.critical and extension.oid not in _PROCESSED_CRL_EXTENSIONS:
            return "it has a critical extension we do not process"
    number = next((e for e in extensions if e.oid == ExtensionOID.CRL_NUMBER), None)
    if number is None:
        return "it has no CRL number"
    if number.critical:
        return "its CRL number is marked critical (RFC 5280 5.2.3)"
    return None


@dataclass(frozen=True)
class _Chain:
    """A signature-verified chain, signer first, root last."""

    certificates: tuple[x509.Certificate, ...]


@dataclass
class _Search:
    """One chain search: the hints to try first, the moments every issuer must be valid
    at (``None``: any time), the issuer signatures it may still try and the monotonic
    time it must end by, and the first reason a complete path was refused (raised if no
    other path is found)."""

    hints: frozenset[x509.Certificate]
    moments: tuple[datetime, ...] | None
    budget: int = MAX_CHAIN_CANDIDATES
    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_CHAIN_SEARCH_SECONDS)
    refusal: Rejected | None = None


def _whole_second(moment: datetime) -> datetime:
    """Validity is encoded in whole seconds; a moment inside the last second of notAfter
    is still within it (the floor reading of RFC 5280 4.1.2.5)."""
    return moment.replace(microsecond=0)


def _valid_at(certificate: x509.Certificate, moments: Iterable[datetime]) -> bool:
    return all(
        certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc
        for moment in moments
    )


def _self_issued(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer


def _counted_intermediates(path: Sequence[x509.Certificate]) -> int:
    """The intermediates of ``path`` (signer first) that count against a pathLenConstraint
    or the depth limit: the self-issued ones do not (RFC 5280 6.1.4 (l))."""
    return sum(1 for certificate in path[1:] if not _self_issued(certificate))


class TrustStore:
    """Roots, intermediates and optional CRLs; :meth:`verify` decides on a signer."""

    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        intermediates: Sequence[x509.Certificate] = (),
        crls: CrlSource | None = None,
        *,
        max_depth: int = MAX_CHAIN_DEPTH,
    ) -> None:
        """``max_depth``: the most certificates a chain may hold below its root, signer
        included (the default 5 allows four intermediates, more than any national chain
        has); self-issued intermediates (key rollovers) are not counted.

        A configured certificate that cannot be read (see
        :func:`contracts.certprofile.certificate_problem`) can never be part of a valid
        chain: it is left out of the pool and listed in :attr:`unusable`."""
        if not roots:
            raise ValueError("a trust store needs at least one root")
        if max_depth < 1:
            raise ValueError("max_depth must be at least 1")
        self._max_depth = max_depth
        self.unusable: tuple[x509.Certificate, ...] = tuple(
            c for c in (*roots, *intermediates) if certificate_problem(c) is not None
        )
        self._roots = tuple(c for c in roots if c not in self.unusable)
        self._intermediates = tuple(c for c in intermediates if c not in self.unusable)
        self._root_set = frozenset(self._roots)
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for certificate in (*self._intermediates, *self._roots):
            self._by_subject.setdefault(certificate.subject, []).append(certificate)
        self._crls = crls
        self._chains: dict[x509.Certificate, _Chain] = {}
        self._lock = threading.Lock()

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The configured trust anchors."""
        return self._roots

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """The configured intermediates (the only ones a chain may use)."""
        return self._intermediates

    @classmethod
    def from_pem_files(
        cls,
        *,
        roots: Iterable[Path],
        intermediates: Iterable[Path] = (),
        crl_files: Sequence[Path] = (),
        crl_max_age: timedelta = timedelta(minutes=10),
    ) -> TrustStore:
        """Load PEM bundles; CRL files (PEM or DER) are read lazily on first use."""
        root_certs = [c for p in roots for c in x509.load_pem_x509_certificates(p.read_bytes())]
        inter_certs = [
            c for p in intermediates for c in x509.load_pem_x509_certificates(p.read_bytes())
        ]
        crls = FileCrlSource(crl_files, crl_max_age) if crl_files else None
        return cls(root_certs, inter_certs, crls)

    def verify(
        self,
        signer: x509.Certificate,
        *,
        hints: Sequence[x509.Certificate] = (),
        at: datetime,
        now: datetime | None = None,
    ) -> None:
        """Accept ``signer`` as a message signer at signing time ``at``, or raise.

        - :class:`UnsupportedAlgorithm`: a key under 2048 bits or a SHA-1/MD5 signature
          in the chain.
        - :class:`UntrustedSigner`: no chain to a configured root through configured
          intermediates, a CA certificate as signer, or a signer without the
          nonRepudiation key usage.
        - :class:`CertificateExpired`: a chain certificate outside its validity at ``at``
          or at ``now``.
        - :class:`CertificateRevoked` / :class:`CrlUnavailable`: from the CRL source.

        ``hints`` (the certificates embedded in the message) are never trusted; they only
        let a configured intermediate with the same encoding be tried first.
        """
        current = now or datetime.now(UTC)
        moments = (_whole_second(at), _whole_second(current))
        chain = self._chain_for(signer, hints, moments)
        if self._crls is not None:
            for certificate, issuer in zip(
                chain.certificates, chain.certificates[1:], strict=False
            ):
                if self._crls.is_revoked(certificate, issuer, now=current):
                    which = "signer" if certificate is signer else "CA"
                    raise CertificateRevoked(f"the {which} certificate is revoked")

    def _chain_for(
        self,
        signer: x509.Certificate,
        hints: Sequence[x509.Certificate],
        moments: tuple[datetime, ...],
    ) -> _Chain:
        cached = self._chains.get(signer)
        if cached is not None and all(_valid_at(c, moments) for c in cached.certificates):
            return cached
        self._judge_signer(signer)
        if not _valid_at(signer, moments):
            raise CertificateExpired(
                "a signer certificate is outside its validity period at signing time or now"
            )
        pool_first = frozenset(hints)
        chain = self._search(signer, _Search(pool_first, moments))
        if chain is None:
            # Tell an expired CA from no chain at all: the same search at any time.
            if self._search(signer, _Search(pool_first, None)) is not None:
                raise CertificateExpired(
                    "a CA certificate is outside its validity period at signing time or now"
                )
            raise UntrustedSigner("no chain from the signer certificate to a trusted root")
        result = _Chain(chain)
        with self._lock:
            if len(self._chains) >= _CHAIN_CACHE_SIZE:
                self._chains.clear()
            self._chains[signer] = result
        return result

    def _judge_signer(self, signer: x509.Certificate) -> None:
        """The signer alone, before any chain: readable, a sound algorithm, not a CA or
        self-signed, an end-entity profile, the signing key usage."""
        problem = certificate_problem(signer)
        if problem is not None:
            raise UntrustedSigner(f"the signer certificate is not valid: {problem}")
        check_certificate_algorithms(signer)
        if signer in self._root_set or _self_issued(signer):
            raise UntrustedSigner("a self-signed certificate cannot sign messages")
        _check_signer_usage(signer)
        problem = leaf_problem(signer)
        if problem is not None:
            raise UntrustedSigner(f"the signer certificate is not valid: {problem}")

    def _search(
        self, signer: x509.Certificate, search: _Search
    ) -> tuple[x509.Certificate, ...] | None:
        """A chain from ``signer`` to a root that also keeps every name constraint in it;
        if none does, the search's first refusal (a broken constraint, a weak algorithm)
        is raised."""
        chain = self._build(signer, (signer,), search)
        if chain is None and search.refusal is not None:
            raise search.refusal
        return chain

    def _build(
        self,
        certificate: x509.Certificate,
        path: tuple[x509.Certificate, ...],
        search: _Search,
    ) -> tuple[x509.Certificate, ...] | None:
        """Depth first from ``certificate`` to a root. Each issuer signature tried uses up
        one of the search's budget, so no pool of look-alike issuers makes it exponential;
        past the search's deadline it stops with a refusal that says so."""
        if 1 + _counted_intermediates(path) > self._max_depth:
            return None
        candidates = sorted(
            self._by_subject.get(certificate.issuer, ()), key=lambda c: c not in search.hints
        )
        for issuer in candidates:
            anchor = issuer in self._root_set
            if (
                issuer in path
                or not _may_issue(issuer, cas_below=_counted_intermediates(path), anchor=anchor)
                or not linked(certificate, issuer)
                or (search.moments is not None and not _valid_at(issuer, search.moments))
            ):
                continue
            if search.budget <= 0:
                return None
            if time.monotonic() > search.deadline:
                search.refusal = UntrustedSigner(
                    "the chain search took too long (too many candidate issuers or names)"
                )
                return None
            search.budget -= 1
            try:
                certificate.verify_directly_issued_by(issuer)
            except (*PARSE_ERRORS, InvalidSignature):
                continue
            try:
                check_certificate_algorithms(issuer)
            except UnsupportedAlgorithm as error:
                search.refusal = search.refusal or error
                continue
            if anchor:
                complete = (*path, issuer)
                problem = name_constraints_problem(complete)
                if problem is not None:
                    problem = f"the chain breaks its name constraints: {problem}"
                else:
                    problem = policy_problem(complete)
                if problem is None:
                    return complete
                search.refusal = search.refusal or UntrustedSigner(problem)
                continue
            found = self._build(issuer, (*path, issuer), search)
            if found is not None:
                return found
        return None


def _check_signer_usage(signer: x509.Certificate) -> None:
    try:
        constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise UntrustedSigner("a CA certificate cannot sign messages")
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise UntrustedSigner("the signer certificate has no key usage extension") from None
    if not usage.content_commitment:
        # The national bus's client demands nonRepudiation of a sender's signature
        # certificate (an encryption certificate often carries digitalSignature too, so
        # digitalSignature alone does not tell a signing certificate from it).
        raise UntrustedSigner(
            "the signer certificate is not a signing certificate (no nonRepudiation "
            "key usage): sign with the enterprise signing certificate, not the "
            "encryption or TLS one"
        )


def _may_issue(issuer: x509.Certificate, *, cas_below: int, anchor: bool) -> bool:
    """Whether ``issuer`` is a CA (RFC 5280: basicConstraints critical, keyCertSign, a
    subject and key identifiers) allowed to sit ``cas_below`` intermediates above the leaf."""
    if ca_problem(issuer, anchor=anchor) is not None:
        return False
    constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    return constraints.path_length is None or cas_below <= constraints.path_length


def _is_org_number(value: str) -> bool:
    return len(value) == 9 and value.isascii() and value.isdigit()


class SenderAuthorisation:
    """Who may send what: which signing organisation may report for which service units,
    and which HER-ids belong to which organisation.

    A unit may always be reported by itself (signer org number == unit org number).
    Explicit grants let e.g. an EPJ vendor or a municipality report for its units.

    HER-ids (as the address register lists them) bind the sender a letter claims to the
    organisation that signed it. With ``her_ids`` configured, a letter from a HER-id that
    is not listed for the signer's organisation is refused; without it (an older
    configuration) HER-ids are not checked, which ``binds_her_ids`` tells the operator.
    """

    def __init__(
        self,
        grants: Mapping[str, frozenset[str]],
        her_ids: Mapping[int, str] | None = None,
    ) -> None:
        for signer, units in grants.items():
            if not _is_org_number(signer) or not all(_is_org_number(u) for u in units):
                raise ValueError("sender authorisation grants must use nine-digit org numbers")
        if her_ids is not None and not all(
            isinstance(her_id, int) and her_id > 0 and _is_org_number(org)
            for her_id, org in her_ids.items()
        ):
            raise ValueError("HER-ids must map positive integers to nine-digit org numbers")
        self._grants = dict(grants)
        self._her_ids = dict(her_ids) if her_ids is not None else None

    @property
    def binds_her_ids(self) -> bool:
        return self._her_ids is not None

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Iterable[str]], her_ids: Mapping[int, str] | None = None
    ) -> SenderAuthorisation:
        return cls({signer: frozenset(units) for signer, units in mapping.items()}, her_ids)

    @classmethod
    def from_json_file(cls, path: Path) -> SenderAuthorisation:
        """Read the operator's file; a bad file raises ``ValueError``. Two forms::

        {"grants": {"signer_org": ["unit_org", ...]}, "her_ids": {"90001": "signer_org"}}
        {"signer_org": ["unit_org", ...]}          (grants only: HER-ids not checked)
        """
        raw = orjson.loads(Path(path).read_bytes())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object")
        grants, her_ids = (
            (raw.get("grants", {}), raw.get("her_ids"))
            if "grants" in raw
            else (
                raw,
                None,
            )
        )
        if not isinstance(grants, dict) or not all(
            isinstance(units, list) and all(isinstance(u, str) for u in units)
            for units in grants.values()
        ):
            raise ValueError(f"{path}: expected grants of org number -> list of org numbers")
        if her_ids is not None and not (
            isinstance(her_ids, dict)
            and all(key.isdigit() and isinstance(org, str) for key, org in her_ids.items())
        ):
            raise ValueError(f"{path}: expected her_ids of HER-id -> org number")
        return cls.from_mapping(
            grants, None if her_ids is None else {int(k): v for k, v in her_ids.items()}
        )

    def check_sender(self, her_id: int, signer_org: str) -> None:
        """Raise :class:`SenderNotAuthorised` unless ``her_id`` belongs to ``signer_org``
        (when HER-ids are configured)."""
        if self._her_ids is None:
            return
        if self._her_ids.get(her_id) != signer_org:
            raise SenderNotAuthorised(
                f"HER-id {her_id} is not registered to organisation {signer_org}"
                if _is_org_number(signer_org)
                else f"HER-id {her_id} is not registered to the signer"
            )

    def check(self, signer_org: str | None, unit_org: str) -> None:
        """Raise :class:`SenderNotAuthorised` unless ``signer_org`` may report for ``unit_org``."""
        if signer_org is None:
            raise SenderNotAuthorised("the signer certificate carries no organisation number")
        if signer_org == unit_org or unit_org in self._grants.get(signer_org, frozenset()):
            return
        # Only well-formed org numbers (not personal data) are echoed into the description.
        signer = signer_org if _is_org_number(signer_org) else "the signer"
        unit = unit_org if _is_org_number(unit_org) else "the named unit"
        raise SenderNotAuthorised(f"organisation {signer} may not report for {unit}")
