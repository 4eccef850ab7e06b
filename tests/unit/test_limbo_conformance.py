"""An independent conformance suite: x509-limbo's path-validation cases, regenerated with
RSA-2048 keys (``tests/conformance/README.md``), each judged by :class:`TrustStore` as the
consumer uses it, with cryptography's verifier run beside it for comparison.

Every applicable case must end as limbo expects, except the refusals listed in
:data:`PROFILE_REFUSALS`, which are this register's signer profile and not path-validation
faults; no case may crash (an exception that is not a project error) or hang.
"""

from __future__ import annotations

import gzip
import json
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import verification

from contracts.errors import KprError
from contracts.trust import FileCrlSource, TrustStore

SUITE = Path(__file__).parents[1] / "conformance" / "limbo-rsa2048.json.gz"
HANG_SECONDS = 5.0

#: Cases about what a CMS signer does not have: TLS host names (the subject CN or SAN
#: matched against a peer name) and TLS extended key usages. A register signer is
#: judged by its chain, its nonRepudiation and its organisation number.
NOT_APPLICABLE_PREFIXES = ("webpki::san::", "webpki::cn::", "webpki::eku::", "rfc5280::eku::")

#: Cases limbo expects to pass that the signer profile refuses on purpose (issue 21).
PROFILE_REFUSALS = {
    # A CA certificate is never a signer (basicConstraints cA=TRUE in the leaf).
    "rfc5280::ca-as-leaf": "CA certificate",
    "pathlen::validation-ignores-pathlen-in-leaf": "CA certificate",
    # A signer must carry nonRepudiation, so it must have a key usage at all.
    "rfc5280::no-keyusage": "no key usage",
    # A real TLS server chain: its leaf is no signing certificate (no nonRepudiation).
    "webpki::cryptographydotio-chain": "nonRepudiation",
    # Issuers need keyUsage with keyCertSign (RFC 5280 4.2.1.3 says a conforming CA
    # includes it); cryptography's verifier refuses this one too.
    "crl::issuer-no-keyusage-extension": "no chain",
    # The WebPKI twin of rfc5280::nc::permitted-dns-match-noncritical (limbo marks the
    # two as conflicting): we follow RFC 5280 4.2.1.10, name constraints MUST be critical.
    "webpki::nc::permitted-dns-match-noncritical": "no chain",
}


def _cases() -> list[dict[str, Any]]:
    suite: dict[str, Any] = json.loads(gzip.decompress(SUITE.read_bytes()))
    return list(suite["testcases"])


def _load(pem: str) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # limbo's zero and negative serials warn on load
        return x509.load_pem_x509_certificate(pem.encode())


def _moment(case: dict[str, Any]) -> datetime:
    value = case["validation_time"]
    return datetime.fromisoformat(value) if value else datetime.now(UTC)


def _ours(case: dict[str, Any], directory: Path) -> None:
    """Raise what the trust store raises for this case's peer certificate."""
    crls = None
    if case["crls"]:
        paths = []
        for index, pem in enumerate(case["crls"]):
            path = directory / f"{index}.crl"
            path.write_text(pem)
            paths.append(path)
        crls = FileCrlSource(paths)
    depth = {} if case["max_chain_depth"] is None else {"max_depth": case["max_chain_depth"] + 1}
    intermediates = [_load(pem) for pem in case["untrusted_intermediates"]]
    store = TrustStore([_load(pem) for pem in case["trusted_certs"]], intermediates, crls, **depth)
    moment = _moment(case)
    store.verify(_load(case["peer_certificate"]), hints=intermediates, at=moment, now=moment)


def _theirs(case: dict[str, Any]) -> bool:
    """Whether cryptography's verifier (client profile: no host name) accepts the case."""
    try:
        builder = verification.PolicyBuilder().store(
            verification.Store([_load(pem) for pem in case["trusted_certs"]])
        )
        builder = builder.time(_moment(case)).extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        if case["max_chain_depth"] is not None:
            builder = builder.max_chain_depth(case["max_chain_depth"])
        intermediates = [_load(pem) for pem in case["untrusted_intermediates"]]
        builder.build_client_verifier().verify(_load(case["peer_certificate"]), intermediates)
    except Exception:  # any refusal or failure of theirs is a refusal
        return False
    return True


def _outcome(run: Callable[[], None]) -> tuple[str, str]:
    """("SUCCESS" | "FAILURE" | "CRASH" | "HANG", what was raised)."""
    result: list[tuple[str, str]] = []

    def target() -> None:
        try:
            run()
            result.append(("SUCCESS", ""))
        except KprError as error:
            result.append(("FAILURE", str(error)))
        except Exception as error:  # the point: anything else is a crash
            result.append(("CRASH", f"{type(error).__name__}: {error}"))

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(HANG_SECONDS)
    return result[0] if result else ("HANG", f"over {HANG_SECONDS:.0f} s")


def test_every_applicable_limbo_case_ends_as_expected_or_as_a_profile_refusal(
    tmp_path: Path,
) -> None:
    cases = [c for c in _cases() if not c["id"].startswith(NOT_APPLICABLE_PREFIXES)]
    assert len(cases) > 150, len(cases)
    ours: Counter[str] = Counter()
    theirs: Counter[str] = Counter()
    wrong: list[str] = []
    for number, case in enumerate(cases):
        directory = tmp_path / str(number)
        directory.mkdir()
        got, why = _outcome(lambda case=case, directory=directory: _ours(case, directory))
        expected = case["expected_result"]
        name = case["id"]
        if got == expected:
            ours["correct"] += 1
        elif got == "FAILURE" and name in PROFILE_REFUSALS:
            ours["profile refusal"] += 1
            if PROFILE_REFUSALS[name] not in why:
                wrong.append(f"{name}: refused for another reason: {why}")
        else:
            verdict = {"SUCCESS": "wrong accept", "FAILURE": "wrong reject"}.get(got, got)
            ours[verdict] += 1
            wrong.append(f"{name}: {verdict} ({why})")
        accepted = _theirs(case)
        if accepted == (expected == "SUCCESS"):
            theirs["correct"] += 1
        else:
            theirs["wrong accept" if accepted else "wrong reject"] += 1
    print(f"\n{len(cases)} applicable limbo cases. TrustStore: {dict(ours)}")
    print(f"cryptography's verifier beside it: {dict(theirs)}")
    assert not wrong, "\n".join(wrong)
    assert ours["profile refusal"] == len(PROFILE_REFUSALS)  # each listed case still applies


@pytest.mark.parametrize("prefix", NOT_APPLICABLE_PREFIXES)
def test_the_cases_left_out_are_the_ones_about_tls_names_and_usages(prefix: str) -> None:
    """The exclusions are the host-name and EKU families, and each family is present, so
    a renamed family cannot silently widen what is left out."""
    ids = [c["id"] for c in _cases() if c["id"].startswith(prefix)]
    assert ids
    for case in _cases():
        if case["id"].startswith(prefix):
            assert case["expected_peer_name"] or "eku" in prefix, case["id"]
