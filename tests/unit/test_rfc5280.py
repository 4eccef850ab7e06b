"""RFC 5280 path rules of the trust store, one rule broken at a time in an otherwise good
chain (root -> issuing CA -> signer), so each refusal is the rule's and nothing else's."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from contracts.certprofile import MAX_CONSTRAINED_NAMES, MAX_NAME_SUBTREES
from contracts.errors import (
    CertificateExpired,
    CrlUnavailable,
    UnsupportedAlgorithm,
    UntrustedSigner,
)
from contracts.trust import FileCrlSource, TrustStore

NOW = datetime.now(UTC)
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")


def _key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """One key per name and size for the whole module (``name`` only tells them apart)."""
    return _generated(name, bits)


@cache
def _generated(name: str, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return x509.KeyUsage(**{name: bits.get(name, False) for name in names})


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


ROOT_NAME = _name((NameOID.ORGANIZATION_NAME, "Test Trust"), (NameOID.COMMON_NAME, "Root"))
CA_NAME = _name((NameOID.ORGANIZATION_NAME, "Test Trust"), (NameOID.COMMON_NAME, "Issuing"))
LEAF_NAME = _name(
    (NameOID.ORGANIZATION_NAME, "Test Trust"),
    (NameOID.COMMON_NAME, "Signer"),
    (NameOID.SERIAL_NUMBER, "310000000"),
)


@dataclass
class Spec:
    """One certificate: what it is and which extensions it gets (``None``: left out)."""

    subject: x509.Name
    ca: bool
    bc_critical: bool = True
    usage: x509.KeyUsage | None = None
    ski: bool = True
    aki: bool = True
    aki_critical: bool = False
    aki_key: str | None = None  # whose key the AKI names (default: the issuer's)
    aki_form: str = "key-id"  # or "issuer-and-serial" (no key identifier)
    extra: list[tuple[x509.ExtensionType, bool]] = field(default_factory=list)
    key_bits: int = 2048
    path_length: int | None = None
    not_after: datetime | None = None


def _public_key(name: str, bits: int) -> rsa.RSAPublicKey:
    if bits % 8 == 0:
        return _key(name, bits).public_key()
    # OpenSSL rounds a generated key to whole bytes; a public key needs no private half.
    modulus = (1 << (bits - 1)) | secrets.randbits(bits - 1) | 1
    return rsa.RSAPublicNumbers(65537, modulus).public_key()


def _build(spec: Spec, key_name: str, issuer: x509.Name, issuer_key: str) -> x509.Certificate:
    public = _public_key(key_name, spec.key_bits)
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(spec.not_after or NOW + timedelta(days=30))
        .add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length), spec.bc_critical
        )
    )
    if spec.usage is not None:
        builder = builder.add_extension(spec.usage, critical=True)
    if spec.ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
    if spec.aki:
        named = _key(spec.aki_key or issuer_key).public_key()
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(named)
        if spec.aki_form == "issuer-and-serial":
            aki = x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(issuer)], 1)
        builder = builder.add_extension(aki, spec.aki_critical)
    for extension, critical in spec.extra:
        builder = builder.add_extension(extension, critical)
    return builder.sign(_key(issuer_key), hashes.SHA256())


CA_USAGE = _usage(key_cert_sign=True, crl_sign=True)
SIGNER_USAGE = _usage(digital_signature=True, content_commitment=True)


def specs() -> dict[str, Spec]:
    return {
        "root": Spec(ROOT_NAME, ca=True, usage=CA_USAGE, aki=False),
        "ca": Spec(CA_NAME, ca=True, usage=CA_USAGE),
        "leaf": Spec(LEAF_NAME, ca=False, usage=SIGNER_USAGE),
    }


def chain(edit: Callable[[dict[str, Spec]], Any] | None = None) -> tuple[x509.Certificate, ...]:
    parts = specs()
    if edit is not None:
        edit(parts)
    root = _build(parts["root"], "root", parts["root"].subject, "root")
    ca = _build(parts["ca"], "ca", root.subject, "root")
    leaf = _build(parts["leaf"], f"leaf-{parts['leaf'].key_bits}", ca.subject, "ca")
    return root, ca, leaf


def verify(certificates: tuple[x509.Certificate, ...], **store: Any) -> None:
    root, ca, leaf = certificates
    TrustStore([root], intermediates=[ca], **store).verify(leaf, at=NOW)


def test_the_good_chain_is_accepted() -> None:
    verify(chain())


def _set(part: str, **changes: Any) -> Callable[[dict[str, Spec]], None]:
    def edit(parts: dict[str, Spec]) -> None:
        for name, value in changes.items():
            setattr(parts[part], name, value)

    return edit


def _add(part: str, extension: x509.ExtensionType, critical: bool) -> Callable[..., None]:
    def edit(parts: dict[str, Spec]) -> None:
        parts[part].extra.append((extension, critical))

    return edit


def _unknown() -> x509.ExtensionType:
    return x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00")


NC = x509.NameConstraints


def _unchecked_dns_constraint(base: str) -> x509.NameConstraints:
    """A permitted DNS subtree that cryptography's constructor would refuse."""
    constraints = NC([x509.DNSName("placeholder.example")], None)
    unchecked = [x509.DNSName._init_without_validation(base)]
    constraints._permitted_subtrees = unchecked  # type: ignore[attr-defined]
    return constraints


def _bounded_constraints(*, minimum: int = 0, maximum: int | None = None) -> x509.ExtensionType:
    """A permitted subtree with the minimum / maximum fields (DER from asn1crypto: no
    builder writes them, and cryptography drops them when it reads)."""
    subtree: dict[str, Any] = {
        "base": asn1_x509.GeneralName(name="dns_name", value="example.com"),
        "minimum": minimum,
    }
    if maximum is not None:
        subtree["maximum"] = maximum
    value = asn1_x509.NameConstraints({"permitted_subtrees": [subtree]}).dump()
    return x509.UnrecognizedExtension(ExtensionOID.NAME_CONSTRAINTS, value)


BROKEN: dict[str, tuple[Callable[[dict[str, Spec]], None], str]] = {
    # the signer
    "leaf with keyCertSign": (
        _set("leaf", usage=_usage(content_commitment=True, key_cert_sign=True)), "keyCertSign"),
    "leaf with name constraints": (
        _add("leaf", NC([x509.DNSName("example.com")], None), True), "end-entity"),
    "leaf with an empty subject": (_set("leaf", subject=x509.Name([])), "empty subject"),
    "leaf without an authority key identifier": (_set("leaf", aki=False), "authority key"),
    "leaf with an unknown critical extension": (_add("leaf", _unknown(), True), "critical"),
    "leaf with a critical authority key identifier": (
        _set("leaf", aki_critical=True), "key identifier"),
    # the issuing CA
    "CA basicConstraints not critical": (_set("ca", bc_critical=False), "no chain"),
    "CA without keyCertSign": (_set("ca", usage=_usage(crl_sign=True)), "no chain"),
    "CA without key usage": (_set("ca", usage=None), "no chain"),
    "CA with an empty subject": (_set("ca", subject=x509.Name([])), "empty issuer"),
    "CA without a subject key identifier": (_set("ca", ski=False), "no chain"),
    "CA with an unknown critical extension": (_add("ca", _unknown(), True), "no chain"),
    "CA with a non-critical policyConstraints": (
        _add("ca", x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=None),
             False), "no chain"),
    "leaf AKI naming another key": (_set("leaf", aki_key="stranger"), "no chain"),
    "CA without an authority key identifier": (_set("ca", aki=False), "no chain"),
    "CA with non-critical name constraints": (
        _add("ca", NC([x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Test Trust")))],
                      None), False), "no chain"),
    "leaf AKI without a key identifier": (
        _set("leaf", aki_form="issuer-and-serial"), "without a key identifier"),
    "leaf SAN with an underscore in a DNS name": (
        _add("leaf", x509.SubjectAlternativeName([x509.DNSName("foo_bar.example.com")]), False),
        "DNS name"),
    "leaf SAN with an IP address as a DNS name": (
        _add("leaf", x509.SubjectAlternativeName([x509.DNSName("192.0.2.7")]), False),
        "DNS name"),
    "leaf SAN with a DNS name of an empty label": (
        _add("leaf", x509.SubjectAlternativeName([x509.DNSName("a..example.com")]), False),
        "DNS name"),
    "leaf SAN with two @ in an e-mail address": (
        _add("leaf", x509.SubjectAlternativeName(
            [x509.RFC822Name._init_without_validation("a@b@example.com")]), False),
        "e-mail address"),
    "leaf with an empty subject and a non-critical SAN": (
        lambda parts: (
            _set("leaf", subject=x509.Name([]))(parts),
            _add("leaf", x509.SubjectAlternativeName([x509.DNSName("signer.example")]),
                 False)(parts),
        ), "empty subject"),
    # the root
    "root whose AKI names another key": (_set("root", aki=True, aki_key="stranger"), "no chain"),
    "root AKI without a key identifier": (
        _set("root", aki=True, aki_form="issuer-and-serial"), "no chain"),
    "root basicConstraints not critical": (_set("root", bc_critical=False), "no chain"),
    "root with an unknown critical extension": (_add("root", _unknown(), True), "no chain"),
    # name constraints of the CA, broken by the signer
    "DN outside the permitted subtree": (
        _add("ca", NC([x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Other")))], None),
             True), "permitted"),
    "DN in an excluded subtree": (
        _add("ca", NC(None, [x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME,
                                                        "Test Trust")))]), True), "excluded"),
    "wildcard SAN over an excluded host": (
        lambda parts: (
            _add("ca", NC(None, [x509.DNSName("host.example.com")]), True)(parts),
            _add("leaf", x509.SubjectAlternativeName([x509.DNSName("*.example.com")]),
                 False)(parts),
        ), "excluded"),
    "DNS SAN outside the permitted domain": (
        lambda parts: (
            _add("ca", NC([x509.DNSName("ok.example")], None), True)(parts),
            _add("leaf", x509.SubjectAlternativeName([x509.DNSName("evil.example")]),
                 False)(parts),
        ), "permitted"),
    "e-mail in an excluded domain": (
        lambda parts: (
            _add("ca", NC(None, [x509.RFC822Name(".bad.example")]), True)(parts),
            _add("leaf", x509.SubjectAlternativeName([x509.RFC822Name("a@x.bad.example")]),
                 False)(parts),
        ), "excluded"),
    "IP address in an excluded network": (
        lambda parts: (
            _add("ca", NC(None, [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]),
                 True)(parts),
            _add("leaf", x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]), False)(parts),
        ), "excluded"),
    "a constrained URI the code does not process": (
        lambda parts: (
            _add("ca", NC(None, [x509.UniformResourceIdentifier("http://x.example")]),
                 True)(parts),
            _add("leaf", x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("http://x.example/a")]), False)(parts),
        ), "do not process"),
    "a DNS constraint with a leading period": (
        _add("ca", _unchecked_dns_constraint(".example.com"), True), "not a well-formed DNS name"),
    "a constraint with a minimum": (
        _add("ca", _bounded_constraints(minimum=1), True), "minimum or maximum"),
    "a constraint with a maximum": (
        _add("ca", _bounded_constraints(maximum=2), True), "minimum or maximum"),
    "more subtrees than are checked": (
        _add("ca", NC([x509.DNSName(f"h{i}.example") for i in range(MAX_NAME_SUBTREES + 1)],
                      None), True), "more name-constraint subtrees"),
    "more names under constraints than are checked": (
        lambda parts: (
            _add("ca", NC(None, [x509.DNSName("bad.example")]), True)(parts),
            _add("leaf", x509.SubjectAlternativeName(
                [x509.DNSName(f"h{i}.ok.example") for i in range(MAX_CONSTRAINED_NAMES)]),
                False)(parts),
        ), "more names"),
}  # fmt: skip


@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_each_broken_rule_refuses_the_signer(broken: str) -> None:
    edit, words = BROKEN[broken]
    with pytest.raises(UntrustedSigner, match=words):
        verify(chain(edit))


ALLOWED: dict[str, Callable[[dict[str, Spec]], None]] = {
    "DN inside the permitted subtree": _add(
        "ca",
        NC([x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Test Trust")))], None),
        True,
    ),
    "wildcard SAN inside the permitted domain": lambda parts: (
        _add("ca", NC([x509.DNSName("example.com")], None), True)(parts),
        _add("leaf", x509.SubjectAlternativeName([x509.DNSName("*.a.example.com")]), False)(parts),
    ),
    "IP address outside the excluded network": lambda parts: (
        _add("ca", NC(None, [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]), True)(parts),
        _add(
            "leaf",
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]),
            False,
        )(parts),
    ),
    "an empty leaf subject with a critical SAN": lambda parts: (
        _set("leaf", subject=x509.Name([]))(parts),
        _add("leaf", x509.SubjectAlternativeName([x509.DNSName("signer.example")]), True)(parts),
    ),
    "a root AKI naming its own key": _set("root", aki=True),
    "well-formed DNS, wildcard and e-mail SANs": _add(
        "leaf",
        x509.SubjectAlternativeName(
            [
                x509.DNSName("xn--bk-fia.example"),
                x509.DNSName("*.signer.example"),
                x509.RFC822Name("post.mottak@kommune.example"),
            ]
        ),
        False,
    ),
    "a critical certificatePolicies": _add(
        "leaf", x509.CertificatePolicies([x509.PolicyInformation(UNKNOWN_OID, None)]), True
    ),
}


@pytest.mark.parametrize("allowed", ALLOWED, ids=list(ALLOWED))
def test_what_the_rules_allow_is_still_accepted(allowed: str) -> None:
    verify(chain(ALLOWED[allowed]))


def test_an_rsa_modulus_that_is_not_whole_bytes_is_refused() -> None:
    with pytest.raises(UnsupportedAlgorithm, match="whole number of bytes"):
        verify(chain(_set("leaf", key_bits=2049)))


def test_the_chain_depth_limit_can_be_set() -> None:
    certificates = chain()
    verify(certificates, max_depth=2)
    with pytest.raises(UntrustedSigner, match="no chain"):
        verify(certificates, max_depth=1)
    with pytest.raises(ValueError, match="max_depth"):
        verify(certificates, max_depth=0)


def _crl(
    tmp_path: Path,
    *,
    number: bool = True,
    number_critical: bool = False,
    extra: x509.ExtensionType | None = None,
) -> FileCrlSource:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(CA_NAME)
        .last_update(NOW - timedelta(minutes=5))
        .next_update(NOW + timedelta(days=1))
    )
    if number:
        builder = builder.add_extension(x509.CRLNumber(7), critical=number_critical)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    path = tmp_path / "issuing.crl"
    path.write_bytes(
        builder.sign(_key("ca"), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    return FileCrlSource([path])


def test_a_good_crl_is_used(tmp_path: Path) -> None:
    verify(chain(), crls=_crl(tmp_path))


@pytest.mark.parametrize(
    ("crl_kind", "words"),
    [("without a CRL number", "no CRL number"), ("delta CRL (critical)", "critical extension"),
     ("issuer without cRLSign", "cRLSign"), ("critical CRL number", "marked critical")],
)  # fmt: skip
def test_a_crl_that_cannot_be_trusted_is_unavailable(
    crl_kind: str, words: str, tmp_path: Path
) -> None:
    certificates = chain(
        _set("ca", usage=_usage(key_cert_sign=True)) if "cRLSign" in crl_kind else None
    )
    source = _crl(
        tmp_path,
        number=crl_kind != "without a CRL number",
        number_critical=crl_kind == "critical CRL number",
        extra=x509.DeltaCRLIndicator(6) if "delta" in crl_kind else None,
    )
    with pytest.raises(CrlUnavailable, match=words):
        verify(certificates, crls=source)


def _rollover_chain(*, constrained_leaf: bool) -> tuple[x509.Certificate, ...]:
    """root -> CA (permits only OU=Signers below it) -> the CA's self-issued rollover
    certificate (its own name, a new key) -> leaf signed with the new key. The rollover
    certificate's name lies outside the permitted subtree, as the CA's own name does."""
    signers = _name(
        (NameOID.ORGANIZATION_NAME, "Test Trust"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "Signers")
    )
    constraint = (NC([x509.DirectoryName(signers)], None), True)
    root = _build(specs()["root"], "root", ROOT_NAME, "root")
    ca = _build(Spec(CA_NAME, ca=True, usage=CA_USAGE, extra=[constraint]), "ca", ROOT_NAME, "root")
    rollover = _build(Spec(CA_NAME, ca=True, usage=CA_USAGE), "ca-new", CA_NAME, "ca")
    inside = _name(
        (NameOID.ORGANIZATION_NAME, "Test Trust"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Signers"),
        (NameOID.COMMON_NAME, "Signer"),
        (NameOID.SERIAL_NUMBER, "310000000"),
    )
    subject = inside if constrained_leaf else LEAF_NAME
    leaf = _build(Spec(subject, ca=False, usage=SIGNER_USAGE), "leaf-2048", CA_NAME, "ca-new")
    return root, ca, rollover, leaf


def test_a_self_issued_intermediate_is_not_held_to_its_issuers_name_constraints() -> None:
    """RFC 5280 6.1.3 (b): a self-issued certificate that is not the last in the path
    (a CA's key rollover) is not checked against the name constraints above it; the leaf
    below it still is, so a leaf outside the permitted subtree is refused."""
    root, ca, rollover, leaf = _rollover_chain(constrained_leaf=True)
    TrustStore([root], intermediates=[ca, rollover]).verify(leaf, at=NOW)
    root, ca, rollover, outside = _rollover_chain(constrained_leaf=False)
    with pytest.raises(UntrustedSigner, match="permitted"):
        TrustStore([root], intermediates=[ca, rollover]).verify(outside, at=NOW)


def test_validity_is_judged_to_the_whole_second() -> None:
    """notAfter is encoded in whole seconds: 0.5 s into that second is still valid (the
    floor reading of RFC 5280 4.1.2.5), the next second is not."""
    not_after = (NOW + timedelta(hours=1)).replace(microsecond=0)
    root, ca, leaf = chain(_set("leaf", not_after=not_after))
    store = TrustStore([root], intermediates=[ca])
    store.verify(leaf, at=NOW, now=not_after + timedelta(milliseconds=500))
    with pytest.raises(CertificateExpired, match="signer"):
        store.verify(leaf, at=NOW, now=not_after + timedelta(seconds=1))


def _ca_variant(**changes: Any) -> x509.Certificate:
    """Another certificate for the issuing CA: same name and key, other contents."""
    spec = specs()["ca"]
    for name, value in changes.items():
        setattr(spec, name, value)
    return _build(spec, "ca", ROOT_NAME, "root")


def test_an_expired_ca_certificate_does_not_hide_a_valid_one_for_the_same_ca() -> None:
    """Two certificates for one CA, one expired: whichever is listed first, the search
    goes on to the valid one; with only the expired one, the refusal says expired."""
    root, valid, leaf = chain()
    expired = _ca_variant(not_after=NOW - timedelta(hours=1))
    for pool in ([expired, valid], [valid, expired]):
        TrustStore([root], intermediates=pool).verify(leaf, at=NOW)
    with pytest.raises(CertificateExpired, match="CA"):
        TrustStore([root], intermediates=[expired]).verify(leaf, at=NOW)


def test_a_chain_that_breaks_a_name_constraint_does_not_hide_one_that_keeps_it() -> None:
    """Two certificates for the issuing CA, one excluding the signer's organisation: the
    chain through the other is found; with only the constraining one, it is refused."""
    root, free, leaf = chain()
    excluding = NC(None, [x509.DirectoryName(_name((NameOID.ORGANIZATION_NAME, "Test Trust")))])
    constrained = _ca_variant(extra=[(excluding, True)])
    for pool in ([constrained, free], [free, constrained]):
        TrustStore([root], intermediates=pool).verify(leaf, at=NOW)
    with pytest.raises(UntrustedSigner, match="excluded"):
        TrustStore([root], intermediates=[constrained]).verify(leaf, at=NOW)


def test_a_self_issued_certificate_counts_against_neither_path_length_nor_depth() -> None:
    """RFC 5280 6.1.4 (l): root -> CA (pathLenConstraint 0) -> the CA's self-issued
    rollover certificate -> leaf is within the CA's path length, and within a depth limit
    of two (signer and one CA); a second, distinct CA below the first is not."""
    root = _build(specs()["root"], "root", ROOT_NAME, "root")
    ca = _ca_variant(path_length=0)
    rollover = _build(Spec(CA_NAME, ca=True, usage=CA_USAGE), "ca-new", CA_NAME, "ca")
    leaf = _build(Spec(LEAF_NAME, ca=False, usage=SIGNER_USAGE), "leaf-2048", CA_NAME, "ca-new")
    TrustStore([root], intermediates=[ca, rollover], max_depth=2).verify(leaf, at=NOW)

    sub_name = _name((NameOID.ORGANIZATION_NAME, "Test Trust"), (NameOID.COMMON_NAME, "Sub"))
    sub = _build(Spec(sub_name, ca=True, usage=CA_USAGE), "sub", CA_NAME, "ca")
    below_sub = _build(Spec(LEAF_NAME, ca=False, usage=SIGNER_USAGE), "leaf-2048", sub_name, "sub")
    with pytest.raises(UntrustedSigner, match="no chain"):
        TrustStore([root], intermediates=[ca, sub]).verify(below_sub, at=NOW)


def test_a_cross_certified_root_needs_an_authority_key_identifier() -> None:
    """A configured root that another CA issued (a cross-certificate) is held to RFC 5280
    4.2.1.1 like any CA; only a self-signed anchor may leave the AKI out."""
    *_, leaf = chain()
    cross = _build(Spec(CA_NAME, ca=True, usage=CA_USAGE, aki=False), "ca", ROOT_NAME, "root")
    with pytest.raises(UntrustedSigner, match="no chain"):
        TrustStore([cross]).verify(leaf, at=NOW)
    TrustStore([_ca_variant()]).verify(leaf, at=NOW)  # the same with its AKI


POLICY_A = x509.ObjectIdentifier("2.16.578.1.26.1.3.2")  # an example national policy OID
POLICY_B = x509.ObjectIdentifier("2.16.578.1.26.1.3.99")
ANY_POLICY = x509.oid.CertificatePoliciesOID.ANY_POLICY


def _policies(*oids: x509.ObjectIdentifier) -> tuple[x509.ExtensionType, bool]:
    return x509.CertificatePolicies([x509.PolicyInformation(oid, None) for oid in oids]), False


def _require_explicit(skip: int) -> tuple[x509.ExtensionType, bool]:
    return x509.PolicyConstraints(require_explicit_policy=skip, inhibit_policy_mapping=None), True


def _policy_mapping(issuer: x509.ObjectIdentifier, subject: x509.ObjectIdentifier) -> Any:
    """policyMappings (cryptography has no type for it, so the DER comes from asn1crypto)."""
    value = asn1_x509.PolicyMappings(
        [{"issuer_domain_policy": issuer.dotted_string,
          "subject_domain_policy": subject.dotted_string}]
    ).dump()  # fmt: skip
    return x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS, value), False


def _policy_chain(
    ca: list[tuple[x509.ExtensionType, bool]], leaf: list[Any]
) -> Callable[..., None]:
    def edit(parts: dict[str, Spec]) -> None:
        parts["ca"].extra.extend(ca)
        parts["leaf"].extra.extend(leaf)

    return edit


POLICY_CASES: dict[str, tuple[Callable[..., None], bool]] = {
    # (CA extensions, leaf extensions) -> accepted?
    "no policies anywhere, none required": (_policy_chain([], []), True),
    "policies that do not meet, none required": (
        _policy_chain([_policies(POLICY_A)], [_policies(POLICY_B)]), True),
    "an explicit policy required, the leaf asserts none": (
        _policy_chain([_policies(POLICY_A), _require_explicit(0)], []), False),
    "an explicit policy required, CA and leaf share it": (
        _policy_chain([_policies(POLICY_A), _require_explicit(0)], [_policies(POLICY_A)]), True),
    "an explicit policy required, the leaf asserts another": (
        _policy_chain([_policies(POLICY_A), _require_explicit(0)], [_policies(POLICY_B)]), False),
    "an explicit policy required, the CA asserts anyPolicy": (
        _policy_chain([_policies(ANY_POLICY), _require_explicit(0)], [_policies(POLICY_B)]), True),
    "anyPolicy inhibited below the CA, the leaf asserts only anyPolicy": (
        _policy_chain(
            [_policies(ANY_POLICY), _require_explicit(0), (x509.InhibitAnyPolicy(0), True)],
            [_policies(ANY_POLICY)]), False),
    "anyPolicy allowed, the leaf asserts only anyPolicy": (
        _policy_chain([_policies(ANY_POLICY), _require_explicit(0)], [_policies(ANY_POLICY)]),
        True),
    "an explicit policy required from the leaf on (skip 1)": (
        _policy_chain([_require_explicit(1)], [_policies(POLICY_A)]), False),
    "a leaf that requires an explicit policy itself": (
        _policy_chain([], [_policies(POLICY_A), _require_explicit(0)]), False),
    "policy mappings where an explicit policy is required": (
        _policy_chain(
            [_policies(POLICY_A), _require_explicit(0),
             _policy_mapping(POLICY_A, POLICY_B)],
            [_policies(POLICY_B)]), False),
}  # fmt: skip


@pytest.mark.parametrize("case", POLICY_CASES, ids=list(POLICY_CASES))
def test_certificate_policies_are_processed_as_rfc_5280_6_1_says(case: str) -> None:
    """Policy processing with the any-policy initial set: a chain is refused only where a
    CA (or the leaf) requires an explicit policy and no asserted policy survives to the
    leaf; anyPolicy counts unless inhibited; mappings are not applied, so a chain that
    would need one is refused."""
    edit, accepted = POLICY_CASES[case]
    if accepted:
        verify(chain(edit))
    else:
        with pytest.raises(UntrustedSigner, match="policy"):
            verify(chain(edit))
