"""``kpr produce``, ``kpr consume`` and ``kpr pathways``: the pipeline's two ends and the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from kpr.config import Settings
from kpr.runtime import consume, publish_events, read_events, store_summary

__all__ = ["register"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp-url", help="broker URL (env KPR_AMQP_URL)")
    parser.add_argument("--pki-dir", type=Path, help="development PKI directory (env KPR_PKI_DIR)")
    parser.add_argument("--queue-prefix", help="prefix of every exchange and queue name")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        amqp_url=getattr(args, "amqp_url", None),
        pki_dir=getattr(args, "pki_dir", None),
        store_url=getattr(args, "store_url", None),
        queue_prefix=getattr(args, "queue_prefix", None),
    )


def register(subparsers: Any) -> None:
    produce = subparsers.add_parser("produce", help="publish every event of a JSON Lines file")
    produce.add_argument("file", type=Path, help="events, one JSON object per line")
    _common(produce)
    produce.set_defaults(handler=_produce)

    consumer = subparsers.add_parser("consume", help="run the consumer")
    consumer.add_argument("--until-idle", type=float, metavar="SECONDS",
                          help="exit once the queue has been idle this long")
    consumer.add_argument("--store-url", help="SQLite path or PostgreSQL URL (env KPR_STORE_URL)")
    _common(consumer)
    consumer.set_defaults(handler=_consume)

    pathways = subparsers.add_parser("pathways", help="what the pathway store holds")
    pathways_sub = pathways.add_subparsers(dest="pathways_command", required=True)
    summary = pathways_sub.add_parser("summary", help="counts of events, persons, stays")
    summary.add_argument("--store-url", help="SQLite path or PostgreSQL URL (env KPR_STORE_URL)")
    summary.add_argument("--json", action="store_true", help="one JSON object")
    summary.set_defaults(handler=_summary)


def _produce(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        events = list(read_events(args.file, settings))
    except (OSError, ValueError) as error:
        print(f"kpr produce: {error}", file=sys.stderr)
        return 3
    report = asyncio.run(publish_events(settings, events))
    print(f"published {len(events)}: confirmed {len(report.confirmed)}, "
          f"failed {len(report.failed)}, unknown {len(report.unknown)}")
    return 0 if report.all_confirmed else 1


def _consume(args: argparse.Namespace) -> int:
    settings = _settings(args)
    counts = asyncio.run(consume(settings, until_idle_s=args.until_idle))
    print(" ".join(f"{key}={value}" for key, value in sorted(counts.items())) or "nothing consumed")
    return 0


def _summary(args: argparse.Namespace) -> int:
    summary = asyncio.run(store_summary(_settings(args)))
    if args.json:
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    else:
        for key, value in summary.as_dict().items():
            print(f"{key:>18}  {value}")
    return 0
