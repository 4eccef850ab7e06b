"""``kpr demo``: the whole pipeline, end to end, on an embedded default.

It makes sure a broker is there (``KPR_AMQP_URL``; else a Docker container when an
engine answers; else Debian's ``rabbitmq-server`` as a local process under the state
directory), generates the development PKI if missing, publishes a batch of synthetic
events (plus a few tampered messages, to show dead-lettering), consumes until idle,
and prints what happened. It runs in the test environment (synthetic identities) and
leaves no process running unless ``--keep-broker`` is given.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from contracts.addressregister import DEV_ADDRESS_REGISTER_FILE, dev_address_register
from contracts.envelope import CONTENT_TYPE
from contracts.events import Environment
from contracts.pki import ensure_dev_pki
from contracts.synth import dev_authorisation, generate_events
from contracts.topology import Topology
from kpr import eventloop
from kpr.config import Settings
from kpr.localservices import ensure_broker
from kpr.options import non_negative_int, positive_int
from kpr.runtime import build_sealer, consume, publish_events, store_summary

__all__ = ["register", "run_demo"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="end-to-end run on an embedded default")
    parser.add_argument(
        "--count", type=positive_int, default=200, help="synthetic events (default 200)"
    )
    parser.add_argument("--seed", type=int, default=2017, help="synthetic data seed")
    parser.add_argument(
        "--tampered",
        type=non_negative_int,
        default=2,
        help="tampered messages to publish, to show dead-lettering (default 2)",
    )
    parser.add_argument("--state-dir", type=Path, help="default .kpr (env KPR_STATE_DIR)")
    parser.add_argument(
        "--keep-broker", action="store_true", help="leave a broker the demo started running"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    state_dir = args.state_dir or settings.state_dir
    summary = run_demo(
        settings,
        state_dir=state_dir,
        count=args.count,
        seed=args.seed,
        tampered=args.tampered,
        keep_broker=args.keep_broker,
        progress=None if args.json else print,
    )
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        _print_summary(summary)
    expected = summary["published"]
    settled = summary["committed"] + summary["duplicates"] + summary["dead_lettered"]
    return 0 if settled == expected and summary["unconfirmed"] == 0 else 1


def run_demo(
    settings: Settings,
    *,
    state_dir: Path,
    count: int,
    seed: int,
    tampered: int,
    keep_broker: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    say = progress or (lambda *_: None)
    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        say("broker: looking for one ...")
        amqp_url, local = ensure_broker(state_dir)
        if local is not None and not keep_broker:
            stack.callback(local.stop)
        broker_kind = (
            "external"
            if settings.env and "KPR_AMQP_URL" in settings.env
            else ("local-process" if local is not None else "docker")
        )
        say(f"broker: {broker_kind}")
        pki_dir = state_dir / "pki"
        say(f"pki: {pki_dir}")
        pki = ensure_dev_pki(pki_dir)
        run_id = secrets.token_hex(4)
        authorisation = state_dir / "authorisation.json"
        authorisation.write_bytes(dev_authorisation(pki.sender.info.org_number))
        # The development sender's encryption certificate: the demo's AppRecs go to it.
        address_register = state_dir / DEV_ADDRESS_REGISTER_FILE
        address_register.write_bytes(dev_address_register(pki, absolute=True))
        demo = settings.with_overrides(
            amqp_url=amqp_url,
            pki_dir=pki_dir,
            state_dir=state_dir,
            environment=Environment.TEST,
            store_url=str(state_dir / "demo" / f"pathways-{run_id}.sqlite3"),
            authorisation_file=authorisation,
            address_register_file=address_register,
            queue_prefix=f"demo-{run_id}.",
        )
        events = generate_events(count, seed=seed)
        say(f"publishing {len(events)} synthetic events and {tampered} tampered messages ...")
        report = eventloop.run(publish_events(demo, events))
        eventloop.run(_publish_tampered(demo, events[:tampered]))
        say("consuming until idle ...")
        counts = eventloop.run(consume(demo, until_idle_s=2.0))
        pathways = eventloop.run(store_summary(demo)).as_dict()
        apprecs = eventloop.run(
            _delete_topology(demo.amqp_url, demo.topology(), pki.sender.info.her_id)
        )
    return {
        "published": len(events) + tampered,
        "confirmed": len(report.confirmed) + tampered,
        "unconfirmed": len(report.failed) + len(report.unknown),
        "committed": counts.get("committed", 0),
        "duplicates": counts.get("duplicate", 0),
        "dead_lettered": counts.get("dead_lettered", 0),
        "retried": counts.get("retried", 0),
        "apprecs": apprecs,
        "pathways": pathways,
        "broker": broker_kind,
        "store": demo.store_url,
        "seconds": round(time.monotonic() - started, 1),
    }


async def _publish_tampered(settings: Settings, events: list[Any]) -> None:
    """Seal real events, flip one bit in the ciphertext, publish: they must dead-letter."""
    if not events:
        return
    sealer = build_sealer(settings)
    topology = settings.topology()
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.work_exchange)
        for event in events:
            sealed = sealer.seal(event)
            body = bytearray(sealed.body)
            body[-40] ^= 0x01
            await exchange.publish(
                aio_pika.Message(
                    bytes(body),
                    message_id=f"tampered-{sealed.message_id}",
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers=sealed.headers(),
                ),
                routing_key=topology.routing_key,
                mandatory=True,
            )


async def _delete_topology(url: str, topology: Topology, sender_her_id: int) -> int:
    """The demo's queues are its own (a fresh prefix each run): remove them, the sender's
    error (receipts) and ``_async`` (AppRecs) queues too. Returns how many AppRecs the
    sender's queue held."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        apprecs = await channel.declare_queue(
            topology.party_queue(sender_her_id), durable=True, arguments={"x-queue-type": "quorum"}
        )
        apprec_count = apprecs.declaration_result.message_count or 0
        names = [topology.work_queue, topology.dead_letter_queue] + [
            topology.retry_queue(tier) for tier in range(len(topology.retry_delays_s))
        ]
        names += [topology.receipt_queue(sender_her_id), topology.party_queue(sender_her_id)]
        for name in names:
            await channel.queue_delete(name)
        for exchange in (
            topology.work_exchange,
            topology.dead_letter_exchange,
            topology.retry_exchange,
            topology.receipt_exchange,
            topology.bus_exchange,
        ):
            await channel.exchange_delete(exchange)
    return apprec_count


def _print_summary(summary: dict[str, Any]) -> None:
    pathways = summary["pathways"]
    print()
    print("kpr demo summary")
    print(f"  broker          {summary['broker']}")
    print(f"  published       {summary['published']} (confirmed {summary['confirmed']})")
    print(f"  committed       {summary['committed']}")
    print(f"  duplicates      {summary['duplicates']}")
    print(f"  dead-lettered   {summary['dead_lettered']}")
    print(f"  AppRecs         {summary['apprecs']} (on the sender's _async queue)")
    print(
        f"  pathways        persons {pathways['persons']}, stays {pathways['stays']} "
        f"({pathways['stays_incomplete']} incomplete), consultations {pathways['consultations']}"
    )
    print(f"  store           {summary['store']}")
    print(f"  took            {summary['seconds']} s")
