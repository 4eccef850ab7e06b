"""The trust store beside an independent verifier: cryptography's ``x509.verification``.

Every chain of ``test_rfc5280`` (one RFC 5280 rule broken at a time, and the cases the
rules allow) goes through :class:`contracts.trust.TrustStore` and through cryptography's
Rust path validator. The validator is configured as a client verifier with the WebPKI CA
profile and a permissive end-entity profile, because a CMS signer has no TLS names or EKU.
The rule this test holds: **whatever the independent verifier refuses, we refuse**, except
for the listed divergences where the validator lacks a feature. We may
be stricter, since we also apply the national signer profile. The table of agreements is
printed, and a benchmark prints our verification time as a ratio to the validator's, both
measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store
from test_rfc5280 import ALLOWED, BROKEN, NOW, chain, verify

from contracts.errors import UntrustedSigner

Chain = tuple[x509.Certificate, ...]

#: Chains the independent verifier refuses and we accept, each for a reason of its own
#: that is not a gap of ours. The test fails on any other divergence, and also when one
#: of these stops diverging (then the entry goes).
KNOWN_DIVERGENCES = {
    # cryptography 51 refuses every directoryName constraint as unsupported; we process
    # DN subtrees (RFC 5280 4.2.1.10) and this signer's DN lies inside the permitted one.
    "allowed: DN inside the permitted subtree": "unsupported directoryName constraint",
    # cryptography counts a critical certificatePolicies as unaccounted-for without an
    # explicit policy; RFC 5280 6.1 with the any-policy initial set accepts it.
    "allowed: a critical certificatePolicies": "unaccounted-for critical extension",
}


def independent(certificates: Chain) -> bool:
    """True when cryptography's validator accepts the signer of ``certificates``."""
    root, ca, leaf = certificates
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(NOW)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, [ca])
    except Exception:
        return False
    return True


def ours(certificates: Chain) -> bool:
    try:
        verify(certificates)
    except UntrustedSigner:
        return False
    return True


def _cases() -> dict[str, Chain]:
    cases = {f"broken: {name}": chain(edit) for name, (edit, _words) in BROKEN.items()}
    cases |= {f"allowed: {name}": chain(edit) for name, edit in ALLOWED.items()}
    cases["the good chain"] = chain()
    return cases


def test_we_refuse_every_chain_the_independent_verifier_refuses() -> None:
    """No chain that cryptography's validator refuses is accepted by the trust store, save
    the two known divergences where the validator lacks a feature; the verifiers agree on
    the good chain (the comparison is not vacuous)."""
    table = {name: (independent(c), ours(c)) for name, c in _cases().items()}
    for name, (theirs, mine) in sorted(table.items()):
        print(
            f"{'accept' if theirs else 'refuse':>6} | {'accept' if mine else 'refuse':>6} | {name}"
        )
    assert table["the good chain"] == (True, True)
    wrong_accepts = [name for name, (theirs, mine) in table.items() if mine and not theirs]
    assert sorted(wrong_accepts) == sorted(KNOWN_DIVERGENCES), wrong_accepts
    stricter = [name for name, (theirs, mine) in table.items() if theirs and not mine]
    assert all(name.startswith("broken: ") for name in stricter), stricter
    assert sum(not theirs for theirs, _ in table.values()) > 5  # it refuses real cases


def _per_call(work: Callable[[], object], rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        work()
    return (time.perf_counter() - started) / rounds


@pytest.mark.slow
def test_benchmark_trust_store_against_the_rust_validator() -> None:
    """Prints our time per verification of the good chain as a ratio to cryptography's
    validator, in the same run (a benchmark: nothing timed is asserted)."""
    good = chain()
    assert independent(good)
    assert ours(good)
    rounds = 300
    _per_call(lambda: independent(good), 20)  # warm both up
    _per_call(lambda: ours(good), 20)
    theirs = _per_call(lambda: independent(good), rounds)
    mine = _per_call(lambda: ours(good), rounds)
    print(
        f"TrustStore.verify {mine * 1e6:.0f} us, x509.verification {theirs * 1e6:.0f} us "
        f"per chain: ratio {mine / theirs:.2f}"
    )
