"""``kpr pki dev``: write a development PKI shaped like the national one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from contracts.addressregister import DEV_ADDRESS_REGISTER_FILE, dev_address_register
from contracts.pki import dev_pki_files, ensure_dev_pki, generate_dev_pki
from contracts.synth import dev_authorisation
from kpr.config import DEV_AUTHORISATION_FILE
from kpr.files import output_folder

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    pki = subparsers.add_parser("pki", help="development PKI")
    actions = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    dev = actions.add_parser(
        "dev",
        help="write a development PKI (root, issuing CA, signing/encryption/TLS pairs)",
        description=(
            "Write a development PKI into DIR, and beside it the sender authorisation "
            f"({DEV_AUTHORISATION_FILE}) that lets the development sender report for every "
            "unit `kpr synth` uses; with KPR_ENVIRONMENT=test and KPR_PKI_DIR=DIR the "
            "consumer reads it when KPR_AUTHORISATION_FILE is not set; and the address "
            f"register ({DEV_ADDRESS_REGISTER_FILE}) with the development sender's encryption "
            "certificate, read in the same way when KPR_ADDRESS_REGISTER is not set, so the "
            "consumer can send that sender its AppRecs. "
            "Existing files are kept unless --force."
        ),
    )
    dev.add_argument("--out", type=Path, required=True, metavar="DIR")
    dev.add_argument("--force", action="store_true", help="regenerate even if files exist")
    dev.add_argument("--key-size", type=int, default=2048, choices=(2048, 3072, 4096))
    dev.set_defaults(handler=_dev)


def _dev(args: argparse.Namespace) -> int:
    directory: Path = output_folder(args.out, "development PKI")
    if args.force:
        pki = generate_dev_pki(directory, key_size=args.key_size)
    else:
        pki = ensure_dev_pki(directory, key_size=args.key_size)
    authorisation = directory / DEV_AUTHORISATION_FILE
    if args.force or not authorisation.is_file():
        authorisation.write_bytes(dev_authorisation(pki.sender.info.org_number))
    address_register = directory / DEV_ADDRESS_REGISTER_FILE
    if args.force or not address_register.is_file():
        address_register.write_bytes(dev_address_register(pki))
    for name in [*dev_pki_files(), DEV_AUTHORISATION_FILE, DEV_ADDRESS_REGISTER_FILE]:
        print(directory / name)
    print(
        f"development PKI in {directory} (keys are unencrypted: development only)", file=sys.stderr
    )
    return 0
