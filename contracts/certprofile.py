"""RFC 5280 rules for one certificate in its place in a chain, and for the chain's links.

Pure functions over parsed certificates (no I/O), used by :class:`contracts.trust.TrustStore`
while it builds and judges a chain:

- :func:`certificate_problem`: whether a certificate can be judged at all. cryptography
  parses extensions lazily, so a malformed or duplicate extension, an unknown key type or
  a bad name would otherwise raise later, from whichever check first reads it, as an
  exception that is not a refusal. Also: a serial that is not positive or is over 20
  octets, an empty issuer, a subject alternative name that is not a well-formed DNS name
  or e-mail address.
- :func:`extension_problem`: every critical extension is one this code processes; the
  extensions that RFC 5280 requires to be critical (basicConstraints of a CA,
  policyConstraints) or non-critical (the key identifiers) are.
- :func:`ca_problem`: why a certificate may not issue others (not a CA, basicConstraints
  not critical, no keyCertSign, an empty subject, no subject key identifier, no authority
  key identifier below a trust anchor), or ``None``.
- :func:`leaf_problem`: why an end-entity certificate is malformed (keyCertSign without
  being a CA, name constraints in it, no authority key identifier), or ``None``.
- :func:`linked`: whether the child's authority key identifier names the issuer's key.
- :func:`policy_problem`: RFC 5280 6.1 certificate policy processing for the any-policy
  initial set (a register accepts every policy its CAs assert): the valid policy set
  through the chain, requireExplicitPolicy and inhibitAnyPolicy; policy mappings are not
  applied, so a chain that would need them to find an explicit policy is refused.
- :func:`name_constraints_problem`: the permitted and excluded subtrees of every CA in the
  chain, applied to the names of every certificate below it (directory names, DNS names
  including wildcards, e-mail addresses, IP addresses); a constrained name form we do not
  process, met in a certificate below, refuses the chain.

Each returns or raises a description that names the rule, never a value from the
certificate (it may end up in a receipt to the sender).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import warnings
from collections.abc import Sequence

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = [
    "MAX_CONSTRAINED_NAMES",
    "MAX_NAME_SUBTREES",
    "PARSE_ERRORS",
    "UNREADABLE",
    "ca_problem",
    "certificate_problem",
    "extension_problem",
    "leaf_problem",
    "linked",
    "name_constraints_problem",
    "policy_problem",
]

#: Extensions whose meaning this code applies (or that cannot change a signature decision:
#: the names, the policies, which we do not restrict). A critical extension not in this set
#: must make the certificate unusable (RFC 5280 4.2).
PROCESSED = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.INHIBIT_ANY_POLICY,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)
_MUST_NOT_BE_CRITICAL = (
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
)

#: What reading a hostile certificate can raise from cryptography: a bad encoding
#: (ValueError, TypeError), a version other than v1-v3, a duplicate extension, a general
#: name form it does not know, a key or signature algorithm it does not support.
PARSE_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    CryptographyUnsupportedAlgorithm,
)
#: :func:`certificate_problem` of a certificate whose fields cannot all be read.
UNREADABLE = "an extension, name or key that cannot be read"
#: RFC 5280 4.1.2.2: a serial is positive and at most 20 octets.
_MAX_SERIAL = 2 ** (8 * 20 - 1)
#: Name constraints cost names x subtrees comparisons: a certificate with thousands of
#: each (OpenSSL's many-names / many-constraints cases) is refused instead of checked.
#: An enterprise certificate carries a handful of names; a CA a few dozen subtrees.
MAX_CONSTRAINED_NAMES = 256
MAX_NAME_SUBTREES = 256

# RFC 1034 3.5 preferred name syntax (letters, digits, hyphens; labels of 1-63), the form
# RFC 5280 4.2.1.6 requires of a dNSName. Internationalised names travel as A-labels.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
# RFC 5322 dot-atom local part, as in an addr-spec without quoting.
_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*", re.I)


def _is_dns_name(value: str, *, wildcard: bool = False) -> bool:
    if wildcard and value.startswith("*."):
        value = value[2:]
    if len(value) > 253 or not _DNS_NAME.fullmatch(value):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return True
    return False  # an IP address belongs in an iPAddress name, not a dNSName


def _is_mailbox(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at) and bool(_LOCAL_PART.fullmatch(local)) and _is_dns_name(domain)


def certificate_problem(certificate: x509.Certificate) -> str | None:
    """Why ``certificate`` cannot be judged at all, or ``None``: afterwards every field the
    rules below read can be read without raising."""
    try:
        with warnings.catch_warnings():
            # a non-positive serial only warns (for now); it is refused below instead
            warnings.simplefilter("ignore")
            for extension in certificate.extensions:
                _ = extension.value
            serial = certificate.serial_number
            issuer, subject = certificate.issuer, certificate.subject
            _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
            _ = (certificate.public_key(), certificate.signature_hash_algorithm)
            _ = [attribute.value for attribute in subject]
    except PARSE_ERRORS:
        return UNREADABLE
    if not 0 < serial < _MAX_SERIAL:
        return "a serial number that is not positive or is longer than 20 octets"
    if len(issuer) == 0:
        return "an empty issuer"
    san = _extension(certificate, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if san is not None and isinstance(san.value, x509.SubjectAlternativeName):
        for name in san.value:
            if isinstance(name, x509.DNSName) and not _is_dns_name(name.value, wildcard=True):
                return "a subject alternative name that is not a well-formed DNS name"
            if isinstance(name, x509.RFC822Name) and not _is_mailbox(name.value):
                return "a subject alternative name that is not a well-formed e-mail address"
    if len(subject) == 0 and (san is None or not san.critical):
        # RFC 5280 4.1.2.6: an empty subject needs its identity in a critical SAN.
        return "an empty subject without a critical subject alternative name"
    return None


def _extension(
    certificate: x509.Certificate, oid: x509.ObjectIdentifier
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def extension_problem(certificate: x509.Certificate) -> str | None:
    """An unknown critical extension, or one whose criticality RFC 5280 fixes and that has
    the other; ``None`` when there is none."""
    for extension in certificate.extensions:
        if extension.critical and extension.oid not in PROCESSED:
            return "a critical extension we do not know"
        if extension.critical and extension.oid in _MUST_NOT_BE_CRITICAL:
            return "a key identifier marked critical"
    policy = _extension(certificate, ExtensionOID.POLICY_CONSTRAINTS)
    if policy is not None and not policy.critical:
        return "a non-critical policyConstraints"
    constraints = _extension(certificate, ExtensionOID.NAME_CONSTRAINTS)
    if constraints is not None and not constraints.critical:
        return "name constraints not marked critical"
    return _key_identifier_problem(certificate)


def _key_identifier_problem(certificate: x509.Certificate) -> str | None:
    """RFC 5280 4.2.1.1: an authority key identifier carries the key identifier; in a
    self-signed certificate it can only name the certificate's own key, by that
    identifier alone (the CA/Browser Forum's rule for roots)."""
    aki = _extension(certificate, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if aki is None or not isinstance(aki.value, x509.AuthorityKeyIdentifier):
        return None
    if aki.value.key_identifier is None:
        return "an authority key identifier without a key identifier"
    if certificate.subject == certificate.issuer:
        ski = _extension(certificate, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        own = ski.value.digest if ski and isinstance(ski.value, x509.SubjectKeyIdentifier) else None
        if aki.value.key_identifier != own and not _signed_by_another(certificate):
            return "a self-signed certificate whose authority key identifier is not its own"
        if aki.value.authority_cert_issuer is not None and not _signed_by_another(certificate):
            return "a self-signed certificate whose authority key identifier names an issuer"
    return None


@functools.lru_cache(maxsize=256)
def _signed_by_another(certificate: x509.Certificate) -> bool:
    """Not signed by its own key (whatever its names say): a CA's key rollover or a
    cross-certificate."""
    key = certificate.public_key()
    algorithm = certificate.signature_hash_algorithm
    if not isinstance(key, rsa.RSAPublicKey) or algorithm is None:
        return True
    try:
        parameters = certificate.signature_algorithm_parameters
        if not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
            return True
        key.verify(certificate.signature, certificate.tbs_certificate_bytes, parameters, algorithm)
    except (*PARSE_ERRORS, InvalidSignature):
        return True
    return False


def ca_problem(certificate: x509.Certificate, *, anchor: bool = False) -> str | None:
    """Why ``certificate`` may not issue certificates, or ``None`` if it may. A
    self-signed trust ``anchor`` (a configured root) may lack an authority key identifier;
    any other CA, a cross-certified root included, must carry one (RFC 5280 4.2.1.1)."""
    problem = extension_problem(certificate)
    if problem is not None:
        return problem
    constraints = _extension(certificate, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None or not isinstance(constraints.value, x509.BasicConstraints):
        return "no basicConstraints"
    if not constraints.value.ca:
        return "not a CA"
    if not constraints.critical:
        return "basicConstraints not critical"
    usage = _extension(certificate, ExtensionOID.KEY_USAGE)
    if usage is None or not isinstance(usage.value, x509.KeyUsage):
        return "no key usage"
    if not usage.value.key_cert_sign:
        return "key usage without keyCertSign"
    if len(certificate.subject) == 0:
        return "an empty subject"
    if _extension(certificate, ExtensionOID.SUBJECT_KEY_IDENTIFIER) is None:
        return "no subject key identifier"
    if _extension(certificate, ExtensionOID.AUTHORITY_KEY_IDENTIFIER) is None and not (
        anchor and not _signed_by_another(certificate)
    ):
        return "no authority key identifier"
    return None


def leaf_problem(certificate: x509.Certificate) -> str | None:
    """Why an end-entity certificate is malformed, or ``None``."""
    problem = extension_problem(certificate)
    if problem is not None:
        return problem
    usage = _extension(certificate, ExtensionOID.KEY_USAGE)
    if usage is not None and isinstance(usage.value, x509.KeyUsage) and usage.value.key_cert_sign:
        return "keyCertSign in a certificate that is not a CA"
    if _extension(certificate, ExtensionOID.NAME_CONSTRAINTS) is not None:
        return "name constraints in an end-entity certificate"
    if _extension(certificate, ExtensionOID.AUTHORITY_KEY_IDENTIFIER) is None:
        return "no authority key identifier"
    return None


def linked(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``child`` names ``issuer``'s key: its authority key identifier's key id is
    the issuer's subject key identifier (a child without a key id is linked by the
    signature alone, checked elsewhere; an AKI naming an issuer and serial must name
    this issuer)."""
    aki = _extension(child, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if aki is None or not isinstance(aki.value, x509.AuthorityKeyIdentifier):
        return True
    value = aki.value
    if value.key_identifier is not None:
        ski = _extension(issuer, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        if ski is None or not isinstance(ski.value, x509.SubjectKeyIdentifier):
            return False
        if ski.value.digest != value.key_identifier:
            return False
    if value.authority_cert_serial_number is not None:
        if value.authority_cert_serial_number != issuer.serial_number:
            return False
        names = value.authority_cert_issuer or []
        if not any(isinstance(n, x509.DirectoryName) and n.value == issuer.issuer for n in names):
            return False
    return True


# -- name constraints -------------------------------------------------------------------

_PROCESSED_FORMS = (x509.DirectoryName, x509.DNSName, x509.RFC822Name, x509.IPAddress)


def name_constraints_problem(chain: Sequence[x509.Certificate]) -> str | None:
    """``chain`` is leaf first, root last. Apply each CA's name constraints to every
    certificate below it; return what was violated, or ``None``.

    A self-issued certificate (subject equals issuer: a CA's key rollover) that is not
    the leaf is not checked (RFC 5280 6.1.3 (b)). Its name is the CA's own, which the
    CA's constraints do not cover either."""
    for index in range(len(chain) - 1, 0, -1):
        extension = _extension(chain[index], ExtensionOID.NAME_CONSTRAINTS)
        if extension is None or not isinstance(extension.value, x509.NameConstraints):
            continue
        constraints = extension.value
        permitted = list(constraints.permitted_subtrees or [])
        excluded = list(constraints.excluded_subtrees or [])
        problem = _subtrees_problem(chain[index], [*permitted, *excluded])
        if problem is not None:
            return problem
        for position, below in enumerate(chain[:index]):
            if position > 0 and below.subject == below.issuer:
                continue
            names = _names_of(below)
            if len(names) > MAX_CONSTRAINED_NAMES:
                return "more names under name constraints than are checked"
            problem = _names_problem(names, permitted, excluded)
            if problem is not None:
                return problem
    return None


def _subtrees_problem(
    certificate: x509.Certificate, subtrees: list[x509.GeneralName]
) -> str | None:
    """Name constraints that cannot be applied as written: too many subtrees, a DNS or
    e-mail base that is not a name, or the minimum / maximum fields RFC 5280 4.2.1.10
    forbids (cryptography drops them when parsing, so they are read from the DER)."""
    if len(subtrees) > MAX_NAME_SUBTREES:
        return "more name-constraint subtrees than are checked"
    for subtree in subtrees:
        if isinstance(subtree, x509.DNSName) and subtree.value and not _is_dns_name(subtree.value):
            return "a name constraint that is not a well-formed DNS name"
        if isinstance(subtree, x509.RFC822Name) and not (
            _is_mailbox(subtree.value) or _is_dns_name(subtree.value.removeprefix("."))
        ):
            return "a name constraint that is not a well-formed e-mail address or domain"
    if _has_subtree_bounds(certificate):
        return "name constraints with a minimum or maximum (RFC 5280 4.2.1.10)"
    return None


@functools.lru_cache(maxsize=256)
def _has_subtree_bounds(certificate: x509.Certificate) -> bool:
    parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    try:
        constraints = parsed.name_constraints_value
        native = constraints.native if constraints is not None else {}
        for field in ("permitted_subtrees", "excluded_subtrees"):
            for subtree in native.get(field) or []:
                if subtree["minimum"] != 0 or subtree["maximum"] is not None:
                    return True
    except (ValueError, TypeError, KeyError):
        return True  # unreadable here though cryptography read it: not as written
    return False


def _names_of(certificate: x509.Certificate) -> list[x509.GeneralName]:
    """The subject (as a directory name, when not empty), the e-mail addresses in the
    subject, and every subject alternative name."""
    names: list[x509.GeneralName] = []
    if len(certificate.subject) > 0:
        names.append(x509.DirectoryName(certificate.subject))
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attribute.value, str):
            names.append(x509.RFC822Name(attribute.value))
    san = _extension(certificate, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if san is not None and isinstance(san.value, x509.SubjectAlternativeName):
        names.extend(san.value)
    return names


def _names_problem(
    names: Sequence[x509.GeneralName],
    permitted: Sequence[x509.GeneralName],
    excluded: Sequence[x509.GeneralName],
) -> str | None:
    for name in names:
        form = type(name)
        same_permitted = [p for p in permitted if type(p) is form]
        same_excluded = [e for e in excluded if type(e) is form]
        if not same_permitted and not same_excluded:
            continue
        if not isinstance(name, _PROCESSED_FORMS):
            return "a name of a constrained form we do not process"
        if any(_overlaps(name, subtree) for subtree in same_excluded):
            return "a name in an excluded subtree of the name constraints"
        if same_permitted and not any(_within(name, subtree) for subtree in same_permitted):
            return "a name outside the permitted subtrees of the name constraints"
    for subtree in permitted:
        if not isinstance(subtree, _PROCESSED_FORMS):
            return "name constraints of a form we do not process"
    return None


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    """Whether every name ``name`` stands for lies within ``subtree``."""
    if isinstance(name, x509.DirectoryName) and isinstance(subtree, x509.DirectoryName):
        return list(name.value.rdns[: len(subtree.value.rdns)]) == list(subtree.value.rdns)
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        base = name.value.lower().removeprefix("*.")
        return _dns_within(base, subtree.value.lower())
    if isinstance(name, x509.RFC822Name) and isinstance(subtree, x509.RFC822Name):
        return _email_within(name.value, subtree.value)
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        address, network = name.value, subtree.value
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) and isinstance(
            network, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            return address.version == network.version and address in network
    return False


def _overlaps(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    """Whether some name that ``name`` stands for lies within ``subtree`` (a wildcard
    stands for every label under its base: ``*.example.com`` meets an excluded
    ``host.example.com``, the pattern behind CVE-2025-61727)."""
    if _within(name, subtree):
        return True
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        value = name.value.lower()
        if value.startswith("*."):
            return _dns_within(subtree.value.lower().lstrip("."), value[2:])
    return False


def _dns_within(host: str, constraint: str) -> bool:
    if not constraint:
        return True
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint or host.endswith("." + constraint)


def _email_within(address: str, constraint: str) -> bool:
    address = address.lower()
    constraint = constraint.lower()
    if "@" in constraint:
        return address == constraint
    host = address.rpartition("@")[2]
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


# -- certificate policies ---------------------------------------------------------------

_ANY_POLICY = x509.oid.CertificatePoliciesOID.ANY_POLICY


def policy_problem(chain: Sequence[x509.Certificate]) -> str | None:
    """``chain`` is leaf first, trust anchor last. RFC 5280 6.1.2 to 6.1.5 with
    user-initial-policy-set = {anyPolicy} and no initial inhibitions; the trust anchor is
    input, not part of the path, so its own extensions are not processed.

    Without policy mappings, every node of the valid policy tree at one depth has one
    expected policy, its own, so the tree reduces to the set of valid policies at that
    depth (``None``: the NULL tree)."""
    path = list(reversed(chain[:-1]))  # from the CA below the anchor down to the leaf
    n = len(path)
    explicit_policy = inhibit_any_policy = n + 1
    valid: set[x509.ObjectIdentifier] | None = {_ANY_POLICY}
    mapped = False
    for i, certificate in enumerate(path, start=1):
        self_issued = certificate.subject == certificate.issuer
        policies = _extension(certificate, ExtensionOID.CERTIFICATE_POLICIES)
        if policies is None or not isinstance(policies.value, x509.CertificatePolicies):
            valid = None
        elif valid is not None:
            asserted = {information.policy_identifier for information in policies.value}
            honour_any = inhibit_any_policy > 0 or (i < n and self_issued)
            kept = {p for p in asserted - {_ANY_POLICY} if p in valid or _ANY_POLICY in valid}
            if _ANY_POLICY in asserted and honour_any:
                kept |= valid
            valid = kept or None
        if valid is None and explicit_policy == 0:
            return "no acceptable certificate policy where the chain requires one"
        if i == n:
            break
        # 6.1.4: preparing for the next certificate
        if _extension(certificate, ExtensionOID.POLICY_MAPPINGS) is not None:
            mapped = True
        if not self_issued:
            explicit_policy = max(0, explicit_policy - 1)
            inhibit_any_policy = max(0, inhibit_any_policy - 1)
        constraints = _extension(certificate, ExtensionOID.POLICY_CONSTRAINTS)
        if constraints is not None and isinstance(constraints.value, x509.PolicyConstraints):
            required = constraints.value.require_explicit_policy
            if required is not None:
                explicit_policy = min(explicit_policy, required)
        inhibit = _extension(certificate, ExtensionOID.INHIBIT_ANY_POLICY)
        if inhibit is not None and isinstance(inhibit.value, x509.InhibitAnyPolicy):
            inhibit_any_policy = min(inhibit_any_policy, inhibit.value.skip_certs)
    # 6.1.5 wrap-up, for the leaf
    explicit_policy = max(0, explicit_policy - 1)
    leaf_constraints = _extension(chain[0], ExtensionOID.POLICY_CONSTRAINTS)
    if (
        leaf_constraints is not None
        and isinstance(leaf_constraints.value, x509.PolicyConstraints)
        and leaf_constraints.value.require_explicit_policy == 0
    ):
        explicit_policy = 0
    if explicit_policy == 0 and valid is None:
        return "no acceptable certificate policy where the chain requires one"
    if explicit_policy == 0 and mapped:
        return "an explicit policy that depends on policy mappings, which are not applied"
    return None
