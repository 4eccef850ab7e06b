"""What message protection costs, next to what the machine's RSA costs.

Every message costs one RSA private-key operation on each side (the sender signs, the
receiver unwraps the content key) plus public-key operations and symmetric work. So the
natural unit is one RSA-2048 private operation as ``openssl speed`` measures it on this
machine, in the same run: ``seal_cost_in_rsa_private_ops`` close to 1 means the rest
(CMS building, AES, hashing, certificate handling) is cheap.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from contracts.envelope import Profile, open_envelope, seal
from contracts.pki import generate_dev_pki

__all__ = ["format_report", "measure_openssl_rsa2048", "run_crypto_benchmark"]

_SAMPLE_CONTENT = b'{"letter_version":1,"event":{"padding":"' + b"x" * 1500 + b'"}}'
_SPEED_LINE = re.compile(r"^rsa\s+2048\s+bits\s+\S+\s+\S+\s+([0-9.]+)\s+([0-9.]+)", re.MULTILINE)


def measure_openssl_rsa2048(seconds: int) -> tuple[float, float]:
    """(private ops/s, public ops/s) for one core: ``openssl speed -seconds N rsa2048``.

    Raises ``RuntimeError`` if openssl is missing or its output cannot be read.
    """
    try:
        result = subprocess.run(
            ["openssl", "speed", "-seconds", str(max(1, int(seconds))), "rsa2048"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60 + 4 * seconds,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"openssl speed failed: {error}") from error
    match = _SPEED_LINE.search(result.stdout)
    if match is None:
        raise RuntimeError("could not read the rsa 2048 line of openssl speed")
    return float(match.group(1)), float(match.group(2))


def _rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second of ``operation`` over about ``seconds`` (at least 10 runs)."""
    operation()  # warm caches (parsed certificates, verified chains) as a service would be
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while count < 10 or time.perf_counter() < deadline:
        operation()
        count += 1
    return count / (time.perf_counter() - start)


def run_crypto_benchmark(seconds: float) -> dict[str, float]:
    """Seal and open rates for both profiles, the openssl RSA-2048 rates and their ratios.

    Keys: ``seal_{profile}_per_s``, ``open_{profile}_per_s``,
    ``openssl_rsa2048_sign_per_s``, ``openssl_rsa2048_verify_per_s``, and
    ``{seal,open}_{profile}_cost_in_rsa_private_ops`` (= private ops/s / operation rate).
    """
    with tempfile.TemporaryDirectory(prefix="kpr-bench-pki-") as directory:
        pki = generate_dev_pki(Path(directory))
    trust = pki.trust_store()
    signer = pki.sender.signing_identity
    recipient = pki.register.encryption_certificate
    keys = [pki.register.decryption_key]
    results: dict[str, float] = {}
    for profile in Profile:
        message = seal(_SAMPLE_CONTENT, signer=signer, recipient=recipient, profile=profile)
        results[f"seal_{profile}_per_s"] = _rate(
            functools.partial(
                seal, _SAMPLE_CONTENT, signer=signer, recipient=recipient, profile=profile
            ),
            seconds,
        )
        results[f"open_{profile}_per_s"] = _rate(
            functools.partial(open_envelope, message, keys=keys, trust=trust), seconds
        )
    private_per_s, public_per_s = measure_openssl_rsa2048(max(1, round(seconds)))
    results["openssl_rsa2048_sign_per_s"] = private_per_s
    results["openssl_rsa2048_verify_per_s"] = public_per_s
    for profile in Profile:
        for operation in ("seal", "open"):
            rate = results[f"{operation}_{profile}_per_s"]
            results[f"{operation}_{profile}_cost_in_rsa_private_ops"] = private_per_s / rate
    return results


def format_report(results: dict[str, float]) -> str:
    """A short human-readable table of :func:`run_crypto_benchmark`'s results."""
    sign = results["openssl_rsa2048_sign_per_s"]
    lines = [
        f"openssl speed rsa2048 (1 core): {sign:,.0f} sign/s, "
        f"{results['openssl_rsa2048_verify_per_s']:,.0f} verify/s",
        f"{'operation':<16}{'ops/s':>10}{'cost in RSA private ops':>26}",
    ]
    for profile in Profile:
        for operation in ("seal", "open"):
            rate = results[f"{operation}_{profile}_per_s"]
            cost = results[f"{operation}_{profile}_cost_in_rsa_private_ops"]
            lines.append(f"{operation + ' ' + profile:<16}{rate:>10,.0f}{cost:>26.2f}")
    return "\n".join(lines)
