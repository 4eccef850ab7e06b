"""The real ``openssl`` as an independent CMS implementation, for interop tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from contracts.pki import PkiDir


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["openssl", *map(str, args)], input=stdin, capture_output=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def openssl_encrypt(pki: PkiDir, tmp_path: Path, signed: Path, *cipher: str) -> bytes:
    out = tmp_path / "enveloped.der"
    openssl(
        "cms",
        "-encrypt",
        "-binary",
        "-in",
        signed,
        "-outform",
        "DER",
        "-out",
        out,
        "-recip",
        pki.register.encryption_certificate_path,
        *cipher,
    )  # fmt: skip  (-keyopt applies to the -recip before it)
    return out.read_bytes()


def openssl_sign_as_dotnet(pki: PkiDir, tmp_path: Path, content: bytes, name: str) -> Path:
    """``content`` signed as .NET SignedCms signs for Helsenorge.Messaging: attached,
    SHA-256, no signed attributes, the intermediate embedded and not the root."""
    (tmp_path / f"{name}.content").write_bytes(content)
    signed = tmp_path / f"{name}.signed"
    openssl(
        "cms", "-sign", "-binary", "-nodetach", "-noattr", "-md", "sha256",
        "-in", tmp_path / f"{name}.content",
        "-signer", pki.sender.signing_certificate_path,
        "-inkey", pki.sender.signing_key_path,
        "-certfile", pki.intermediate_path,
        "-outform", "DER", "-out", signed,
    )  # fmt: skip
    return signed
