"""Regenerate ``limbo-rsa2048.json.gz`` from an x509-limbo checkout (see README.md).

Run with the x509-limbo generator's dependencies installed; it copies the sources to a
temporary directory, applies the two changes (RSA-2048 keys, nonRepudiation in the default
end-entity key usage), generates every case it can, and writes the gzipped suite.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_EC_KEY = "ec.generate_private_key(ec.SECP256R1())"
_RSA_KEY = "rsa.generate_private_key(public_exponent=65537, key_size=2048)"
_RSA_IMPORT = "from cryptography.hazmat.primitives.asymmetric import rsa\n"

_GENERATE = """
import json, sys
from limbo import testcases
from limbo.models import Limbo
import limbo.testcases.rfc5280, limbo.testcases.webpki  # noqa: F401 (they register)
cases = []
for name, case in testcases.registry.items():
    try:
        cases.append(case())
    except Exception as error:  # a case this cryptography cannot build
        print("left out", name, type(error).__name__, file=sys.stderr)
print(Limbo(version=1, testcases=cases).model_dump_json())
"""


def _patch(source: Path) -> None:
    for path in (source / "limbo" / "testcases").rglob("*.py"):
        text = path.read_text()
        if _EC_KEY not in text:
            continue
        text = text.replace(_EC_KEY, _RSA_KEY)
        path.write_text(
            _RSA_IMPORT + text
            if "from __future__" not in text
            else text.replace(
                "from __future__ import annotations\n",
                "from __future__ import annotations\n" + _RSA_IMPORT,
                1,
            )
        )
    core = source / "limbo" / "testcases" / "_core.py"
    text = core.read_text()
    # the end-entity default: digital_signature=True, then content_commitment
    leaf_usage = (
        "digital_signature=True,\n                key_cert_sign=False,\n"
        "                content_commitment=False,"
    )
    if leaf_usage not in text:
        raise SystemExit("the end-entity key usage default has moved; update regenerate.py")
    core.write_text(
        text.replace(
            leaf_usage, leaf_usage.replace("content_commitment=False", "content_commitment=True")
        )
    )


def main(checkout: str, output: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "x509-limbo"
        shutil.copytree(checkout, source, ignore=shutil.ignore_patterns(".git"))
        _patch(source)
        generated = subprocess.run(
            [sys.executable, "-c", _GENERATE], cwd=source, check=True, capture_output=True
        ).stdout
    suite = json.loads(generated)
    for case in suite["testcases"]:
        case.pop("peer_certificate_key", None)
    raw = json.dumps(suite, separators=(",", ":")).encode()
    Path(output).write_bytes(gzip.compress(raw, 9, mtime=0))
    print(f"{len(suite['testcases'])} cases -> {output}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
