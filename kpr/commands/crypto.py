"""``kpr seal``, ``kpr open`` and ``kpr bench-crypto``: message protection by hand.

Exit codes of ``open`` (and ``seal``), from ``kpr.exits``: 0 ok, 2 usage, 3 an input that
cannot be used (not a file, PEM where DER is read) or a malformed message or unsupported
algorithm, 4 signature, trust or binding failure, 5 cannot decrypt, 6 contract
violation, 11 a certificate or key that cannot be used (a key that does not match its
certificate), 1 a CRL that cannot be read now (transient: try again).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509

from contracts.envelope import DecryptionKey, Profile, SigningIdentity, open_envelope, seal
from contracts.errors import InputRefused, KeyMaterialError
from contracts.events import Environment, encode_event, parse_event
from contracts.letter import LetterForm, Party, check_binding, decode_letter, encode_letter
from contracts.msghead import encode_msghead
from contracts.pki import (
    load_ca_certificates,
    load_certificate,
    load_certificates,
    load_private_key,
    load_recipient_certificate,
    org_number_of,
    organisation_name_of,
)
from contracts.trust import FileCrlSource, TrustStore
from kpr.config import read_authorisation
from kpr.files import read_input, write_output
from kpr.options import her_id, positive_float

__all__ = ["register"]

KPR_HER_ID = 8133973
USAGE_EXIT = 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    seal_parser = subparsers.add_parser(
        "seal", help="validate an event, sign and encrypt it to the register"
    )
    seal_parser.add_argument(
        "event", type=Path, metavar="EVENT_JSON", help="one event (- for standard input)"
    )
    seal_parser.add_argument("--signer-cert", type=Path, required=True)
    seal_parser.add_argument("--signer-key", type=Path, required=True)
    seal_parser.add_argument("--recipient-cert", type=Path, required=True)
    seal_parser.add_argument(
        "--intermediates", type=Path, help="PEM bundle to embed next to the signer certificate"
    )
    seal_parser.add_argument(
        "--profile", choices=[p.value for p in Profile], default=Profile.NATIONAL.value
    )
    seal_parser.add_argument(
        "--letter",
        choices=[f.value for f in LetterForm],
        default=LetterForm.MSGHEAD.value,
        help="the signed letter's form: KITH MsgHead v1.2 (default) or the JSON letter",
    )
    seal_parser.add_argument("--recipient-her-id", type=her_id, default=KPR_HER_ID)
    seal_parser.add_argument("--message-id", help="default: a new UUID")
    seal_parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the message (- for stdout)"
    )
    seal_parser.set_defaults(handler=_seal)

    open_parser = subparsers.add_parser(
        "open",
        help="decrypt and verify a message, print the verified event",
        description="Signature forms accepted: CMS SignedData with signed attributes "
        "(content-type, message-digest, signing-time; the signer judged at signing time), "
        "or with no signed attributes, the signature over the content as .NET SignedCms "
        "(Helsenorge.Messaging) makes it (the signer judged at receipt time). Letters "
        "accepted: KITH MsgHead v1.2 with the event as a base64 JSON attachment "
        "(docs/NATIONAL_BUS.md), or the JSON letter of earlier releases.",
        epilog="Exit codes: 0 opened, 2 usage or unreadable file, 3 malformed (an embedded "
        "certificate that is not well formed included) or unsupported algorithm, 4 signature, "
        "trust or binding failure (or a CRL that cannot be read now), 5 cannot decrypt, "
        "6 contract violation.",
    )
    open_parser.add_argument(
        "message", type=Path, metavar="FILE", help="the DER message (- for standard input)"
    )
    open_parser.add_argument(
        "--json", action="store_true", help="the event and its signer as one JSON object"
    )
    open_parser.add_argument("--recipient-cert", type=Path, required=True)
    open_parser.add_argument("--recipient-key", type=Path, required=True)
    open_parser.add_argument(
        "--previous-cert", type=Path, help="the encryption cert before rollover"
    )
    open_parser.add_argument("--previous-key", type=Path)
    open_parser.add_argument("--trust", type=Path, required=True, metavar="ROOT_PEM")
    open_parser.add_argument("--intermediates", type=Path, metavar="PEM")
    open_parser.add_argument("--crl", type=Path, action="append", default=[], metavar="FILE")
    open_parser.add_argument("--own-her-id", type=her_id, default=KPR_HER_ID)
    open_parser.add_argument(
        "--authorisation", type=Path, metavar="JSON", help="sender authorisation table"
    )
    open_parser.set_defaults(handler=_open)

    bench = subparsers.add_parser(
        "bench-crypto", help="seal/open rates next to openssl speed rsa2048"
    )
    bench.add_argument("--seconds", type=positive_float, default=3.0)
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.set_defaults(handler=_bench)


def _environment() -> Environment:
    return Environment.from_env()


def _signing_identity(args: argparse.Namespace) -> SigningIdentity:
    certificate = load_certificate(args.signer_cert)
    key = load_private_key(args.signer_key)
    if key.public_key() != certificate.public_key():
        raise KeyMaterialError(
            f"the signer key {args.signer_key} does not belong to the certificate "
            f"{args.signer_cert}",
            "give the key the certificate was issued for",
        )
    chain = tuple(load_certificates(args.intermediates)) if args.intermediates else ()
    return SigningIdentity(certificate, key, chain)


def _message_bytes(path: Path) -> bytes:
    data = read_input(path, "message")
    if data.lstrip().startswith(b"-----BEGIN"):
        raise InputRefused(
            f"the message {path} is PEM; kpr open reads DER (as it travels on the bus)",
            f"convert it: openssl cms -cmsout -inform PEM -in {path} -outform DER -out msg.der",
        )
    return data


def _seal(args: argparse.Namespace) -> int:
    event_data = read_input(args.event, "event")
    signer = _signing_identity(args)
    recipient = load_recipient_certificate(args.recipient_cert)
    signer_org = org_number_of(signer.certificate)
    if signer_org is None:
        raise KeyMaterialError(
            f"the signer certificate {args.signer_cert} carries no organisation number",
            "a national enterprise certificate names it (serialNumber of the subject)",
        )
    event = parse_event(event_data, environment=_environment())
    message_id = args.message_id or str(uuid.uuid4())
    if LetterForm(args.letter) is LetterForm.MSGHEAD:
        letter = encode_msghead(
            message_id=message_id,
            sender_her_id=event.sender_her_id,
            sender_org_number=signer_org,
            sender_name=organisation_name_of(signer.certificate) or signer_org,
            recipient_her_id=args.recipient_her_id,
            event_json=encode_event(event),
            created_at=datetime.now(UTC),
        )
    else:
        letter = encode_letter(
            message_id=message_id,
            sender=Party(her_id=event.sender_her_id, org_number=signer_org),
            recipient_her_id=args.recipient_her_id,
            event_json=encode_event(event),
        )
    message = seal(letter, signer=signer, recipient=recipient, profile=Profile(args.profile))
    write_output(args.out, message, "sealed message")
    return 0


def _open(args: argparse.Namespace) -> int:
    if (args.previous_cert is None) != (args.previous_key is None):
        print("kpr open: error: --previous-cert and --previous-key go together", file=sys.stderr)
        return USAGE_EXIT
    message = _message_bytes(args.message)
    keys = [
        DecryptionKey(load_certificate(args.recipient_cert), load_private_key(args.recipient_key))
    ]
    if args.previous_cert is not None:
        keys.append(
            DecryptionKey(load_certificate(args.previous_cert), load_private_key(args.previous_key))
        )
    trust = TrustStore(
        roots=load_ca_certificates(args.trust),
        intermediates=load_ca_certificates(args.intermediates) if args.intermediates else [],
        crls=FileCrlSource(args.crl) if args.crl else None,
    )
    authorisation = read_authorisation(args.authorisation) if args.authorisation else None
    environment = _environment()
    opened = open_envelope(message, keys=keys, trust=trust)
    signer_org = org_number_of(opened.signer)
    letter = decode_letter(opened.content)
    check_binding(letter, own_her_id=args.own_her_id, signer_org_number=signer_org)
    event = parse_event(letter.event, environment=environment)
    if authorisation is not None:
        authorisation.check(signer_org, event.reporting_unit_org_number)
    if args.json:
        summary = {
            "event": orjson.loads(encode_event(event)),
            "signer": _subject(opened.signer),
            "signer_org_number": signer_org,
            "signing_time": opened.signing_time.isoformat(),
            "profile": str(opened.profile),
            "signature_form": str(opened.signature_form),
            "letter_form": str(letter.form),
        }
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return 0
    sys.stdout.buffer.write(encode_event(event) + b"\n")
    sys.stdout.flush()
    print(
        f"signed by {_subject(opened.signer)} (org number {signer_org or 'none'}) "
        f"at {opened.signing_time.isoformat()}, profile {opened.profile}, "
        f"signature over {opened.signature_form}, letter {letter.form}",
        file=sys.stderr,
    )
    return 0


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _bench(args: argparse.Namespace) -> int:
    from kpr.benchmarks.crypto import format_report, run_crypto_benchmark

    try:
        results = run_crypto_benchmark(args.seconds)
    except RuntimeError as error:
        print(f"kpr bench-crypto: {error}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2, sort_keys=True) if args.json else format_report(results))
    return 0
