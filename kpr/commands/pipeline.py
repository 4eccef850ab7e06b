"""``kpr produce``, ``kpr consume`` and ``kpr pathways``: the pipeline's two ends and the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from consumers.pathways import ConsultationProjection, StayProjection, programme_view
from consumers.store import open_store
from contracts.errors import ContractViolation, InputRefused
from contracts.events.identifiers import parse_national_id
from kpr import eventloop
from kpr.commands.progress import ProgressBar, show_progress
from kpr.config import Settings
from kpr.lifecycle import stop_on_signals
from kpr.logs import configure_logging
from kpr.options import her_id, non_negative_float, non_negative_int, port, positive_float
from kpr.runtime import consume, pseudonymiser, publish_events, read_events, store_summary
from producers.publisher import PublishReport

__all__ = ["register"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp-url", help="broker URL (env KPR_AMQP_URL)")
    parser.add_argument("--pki-dir", type=Path, help="development PKI directory (env KPR_PKI_DIR)")
    parser.add_argument("--queue-prefix", help="prefix of every exchange and queue name")
    parser.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help="serve /metrics, /healthz, /readyz here (env KPR_METRICS_PORT)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=non_negative_float,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for in-flight messages "
        "(env KPR_DRAIN_TIMEOUT, default 30)",
    )
    parser.add_argument(
        "--partitions",
        type=non_negative_int,
        metavar="N",
        help="partition queues behind the consistent-hash exchange; 0 is the single work "
        "queue (env KPR_PARTITIONS, default 0)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        amqp_url=getattr(args, "amqp_url", None),
        pki_dir=getattr(args, "pki_dir", None),
        store_url=getattr(args, "store_url", None),
        queue_prefix=getattr(args, "queue_prefix", None),
        sender_her_id=getattr(args, "sender_her_id", None),
        open_workers=getattr(args, "open_workers", None),
        metrics_port=getattr(args, "metrics_port", None),
        drain_timeout_s=getattr(args, "drain_timeout", None),
        partitions=getattr(args, "partitions", None),
    )


def register(subparsers: Any) -> None:
    produce = subparsers.add_parser("produce", help="publish every event of a JSON Lines file")
    produce.add_argument(
        "file", type=Path, help="events, one JSON object per line (- for standard input)"
    )
    produce.add_argument("--json", action="store_true", help="the summary as one JSON object")
    produce.add_argument(
        "--progress", action="store_true", help="progress bar on stderr even when not a TTY"
    )
    produce.add_argument(
        "--sender-her-id",
        type=her_id,
        help="publish to this sender's inbound exchange kpr.in.{herId} and declare nothing "
        "(env KPR_SENDER_HER_ID)",
    )
    _common(produce)
    produce.set_defaults(handler=_produce)

    consumer = subparsers.add_parser("consume", help="run the consumer")
    consumer.add_argument(
        "--until-idle",
        type=positive_float,
        metavar="SECONDS",
        help="exit once the queue has been idle this long",
    )
    consumer.add_argument("--store-url", help="SQLite path or PostgreSQL URL (env KPR_STORE_URL)")
    consumer.add_argument("--json", action="store_true", help="the counts as one JSON object")
    consumer.add_argument(
        "--workers",
        type=non_negative_int,
        dest="open_workers",
        help="worker processes for decrypt + verify + validate "
        "(env KPR_OPEN_WORKERS; default 0: in the consumer process)",
    )
    _common(consumer)
    consumer.set_defaults(handler=_consume)

    pathways = subparsers.add_parser("pathways", help="what the pathway store holds")
    pathways_sub = pathways.add_subparsers(dest="pathways_command", required=True)
    summary = pathways_sub.add_parser("summary", help="counts of events, persons, stays")
    summary.add_argument("--store-url", help="SQLite path or PostgreSQL URL (env KPR_STORE_URL)")
    summary.add_argument("--json", action="store_true", help="one JSON object")
    summary.add_argument(
        "--by-day", action="store_true", help="counts per service municipality and day"
    )
    summary.set_defaults(handler=_summary)

    person = pathways_sub.add_parser("person", help="one person's stays and programme")
    who = person.add_mutually_exclusive_group(required=True)
    who.add_argument("--pseudonym", help="the person's pseudonym (p1-...)")
    who.add_argument(
        "--national-id-stdin",
        action="store_true",
        help="read the national id from stdin and pseudonymise it with the key "
        "(KPR_PSEUDONYM_KEY_FILE); it is never echoed or logged",
    )
    person.add_argument("--store-url", help="SQLite path or PostgreSQL URL (env KPR_STORE_URL)")
    person.add_argument("--json", action="store_true", help="one JSON object")
    person.set_defaults(handler=_person)

    incomplete = pathways_sub.add_parser("incomplete", help="stays with one side only")
    incomplete.add_argument(
        "--older-than-days",
        type=non_negative_float,
        default=7.0,
        help="report stays open longer than this (default 7)",
    )
    incomplete.add_argument("--store-url", help="SQLite path or PostgreSQL URL")
    incomplete.add_argument("--json", action="store_true", help="a JSON array")
    incomplete.set_defaults(handler=_incomplete)


def _produce(args: argparse.Namespace) -> int:
    settings = _settings(args)
    events = list(read_events(args.file, settings))
    if not events:
        print(
            f"kpr produce: warning: {args.file} holds no events; nothing published", file=sys.stderr
        )
        _print_summary(
            args,
            {
                "events": 0,
                "published": 0,
                "confirmed": 0,
                "failed": 0,
                "unknown": 0,
                "stopped": False,
            },
        )
        return 0
    configure_logging()
    bar = ProgressBar(len(events), sys.stderr, unit="events") if show_progress(args) else None
    done = 0

    async def count(sealed: Any, outcome: Any, error: Any) -> None:
        nonlocal done
        done += 1
        if bar is not None:
            bar(done)

    async def run() -> PublishReport:
        stop = asyncio.Event()
        with stop_on_signals(stop.set):
            return await publish_events(
                settings, events, stop=stop, on_outcome=count if bar is not None else None
            )

    try:
        report = eventloop.run(run())
    finally:
        if bar is not None:
            bar.close()
    sent = len(report.confirmed) + len(report.failed) + len(report.unknown)
    stopped = f" (stopped after {sent} of {len(events)})" if sent < len(events) else ""
    _print_summary(
        args,
        {
            "events": len(events),
            "published": sent,
            "confirmed": len(report.confirmed),
            "failed": len(report.failed),
            "unknown": len(report.unknown),
            "stopped": sent < len(events),
        },
        f"published {sent}{stopped}: confirmed {len(report.confirmed)}, "
        f"failed {len(report.failed)}, unknown {len(report.unknown)}",
    )
    return 0 if report.all_confirmed else 1


def _print_summary(args: argparse.Namespace, summary: dict[str, Any], text: str = "") -> None:
    """The command's summary: one JSON object on stdout with --json, else ``text``."""
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    elif text:
        print(text)


def _consume(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging()

    async def run() -> Counter[str]:
        stop = asyncio.Event()
        with stop_on_signals(stop.set):
            return await consume(settings, until_idle_s=args.until_idle, stop=stop)

    # SIGTERM drains and returns normally; the command line then exits 143.
    counts = eventloop.run(run())
    _print_summary(
        args,
        dict(sorted(counts.items())),
        " ".join(f"{key}={value}" for key, value in sorted(counts.items())) or "nothing consumed",
    )
    return 0


def _summary(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.by_day:
        rows = eventloop.run(_daily(settings))
        if args.json:
            keys = ("municipality", "day", "committed", "rejected")
            sys.stdout.write(
                orjson.dumps([dict(zip(keys, row, strict=True)) for row in rows]).decode() + "\n"
            )
        else:
            print(f"{'municipality':<14}{'day':<12}{'committed':>10}{'rejected':>10}")
            for municipality, day, committed, rejected in rows:
                print(f"{municipality:<14}{day:<12}{committed:>10}{rejected:>10}")
        return 0
    summary = eventloop.run(store_summary(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    else:
        for key, value in summary.as_dict().items():
            print(f"{key:>18}  {value}")
    return 0


async def _daily(settings: Settings) -> list[tuple[str, str, int, int]]:
    async with open_store(settings.store_url) as store:
        return await store.daily_counts()


def _person(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.national_id_stdin:
        national_id = sys.stdin.readline().strip()
        try:
            parse_national_id(national_id, today=datetime.now(UTC).date())
        except ContractViolation as violation:
            # The rule, never the value: what was typed may be a real person's id.
            raise InputRefused(
                f"the national id read from standard input is not valid: "
                f"{violation.description} [{violation.rule}]",
                "give 11 digits with valid check digits, on one line",
            ) from None
        person_key = pseudonymiser(settings).pseudonym(national_id)
    else:
        person_key = args.pseudonym
    stays, consultations = eventloop.run(_person_pathways(settings, person_key))
    views = programme_view(consultations, as_of=datetime.now(UTC))
    if args.json:
        document = {
            "person_key": person_key,
            "stays": [_stay_json(stay) for stay in stays],
            "programmes": [
                {
                    "service_area": view.service_area,
                    "consultations": [
                        {
                            "at": c.consultation_at.isoformat(),
                            "programme_consultation": c.programme_consultation,
                            "status": c.status,
                            "unit_org": c.unit_org,
                        }
                        for c in view.consultations
                    ],
                    "missed": list(view.missed),
                    "extra": len(view.extra),
                    "slots": {slot.slot: slot.state for slot in view.slots},
                }
                for view in views
            ],
        }
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    print(f"person {person_key}")
    for stay in stays:
        print(
            f"  stay {stay.stay_id} at {stay.unit_org}: {_when(stay.admitted_at)} -> "
            f"{_when(stay.discharged_at)}" + ("" if stay.complete else "  (incomplete)")
        )
    for view in views:
        print(
            f"  {view.service_area}: {len(view.consultations)} consultations, "
            f"{len(view.extra)} extra, missed: {', '.join(view.missed) or 'none'}"
        )
        for c in view.consultations:
            print(f"    {c.consultation_at:%Y-%m-%d}  {c.programme_consultation:<22} {c.status}")
    if not stays and not views:
        print("  nothing stored for this person")
    return 0


async def _person_pathways(
    settings: Settings, person_key: str
) -> tuple[list[StayProjection], list[ConsultationProjection]]:
    async with open_store(settings.store_url) as store:
        return await store.person_pathways(person_key)


def _incomplete(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def read() -> list[StayProjection]:
        async with open_store(settings.store_url) as store:
            return await store.incomplete_stays(
                older_than=timedelta(days=args.older_than_days), as_of=datetime.now(UTC)
            )

    stays = eventloop.run(read())
    if args.json:
        sys.stdout.write(orjson.dumps([_stay_json(stay) for stay in stays]).decode() + "\n")
    else:
        for stay in stays:
            print(
                f"{stay.unit_org}  {stay.stay_id:<24} admitted {_when(stay.admitted_at)}  "
                f"discharged {_when(stay.discharged_at)}"
            )
        print(f"{len(stays)} incomplete stays older than {args.older_than_days:g} days")
    return 0


def _when(value: datetime | None) -> str:
    return "?" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _stay_json(stay: StayProjection) -> dict[str, Any]:
    return {
        "unit_org": stay.unit_org,
        "stay_id": stay.stay_id,
        "municipality": stay.municipality,
        "admitted_at": stay.admitted_at.isoformat() if stay.admitted_at else None,
        "discharged_at": stay.discharged_at.isoformat() if stay.discharged_at else None,
        "complete": stay.complete,
        "length_of_stay_hours": stay.length_of_stay_hours,
        "admission_diagnoses": list(stay.admission_diagnoses),
        "discharge_diagnoses": list(stay.discharge_diagnoses),
        "referred_by": stay.referred_by,
        "discharged_to": stay.discharged_to,
    }
