"""Atheris harness: bytes -> Opener.open must end in a Rejected subclass, nothing else.

Run on demand (not part of pytest): ``.venv/bin/python tests/fuzz/fuzz_decoder.py
-atheris_runs=20000``. Needs ``pip install atheris`` (a binary wheel on x86-64 Linux).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from consumers.opener import Opener
    from contracts.errors import Rejected
    from contracts.events import Environment
    from contracts.letter import decode_letter
    from contracts.pki import ensure_dev_pki
    from contracts.trust import SenderAuthorisation

PKI = ensure_dev_pki(Path(tempfile.mkdtemp(prefix="kpr-fuzz-")))
OPENER = Opener(
    keys=[PKI.register.decryption_key],
    trust=PKI.trust_store(),
    authorisation=SenderAuthorisation.from_mapping({}),
    own_her_id=8133973,
    environment=Environment.TEST,
)


def one_input(data: bytes) -> None:
    with contextlib.suppress(Rejected):
        OPENER.open(data, message_id="m-1")
    with contextlib.suppress(Rejected):
        decode_letter(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
