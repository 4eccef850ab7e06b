"""``kpr dlq``: list, show, replay, export and purge dead letters (see docs/DEAD_LETTERS.md).

Connects with the consumer's settings (``KPR_AMQP_URL``, ``KPR_REGISTER_HER_ID``,
``--queue-prefix``). Replays and purges are appended to the audit log
(``KPR_AUDIT_LOG``, default ``$KPR_STATE_DIR/audit.jsonl``).

Exit codes (kpr.exits): 0 done; 1 the message asked for is not there; 2 refused (purge
without a TTY and without ``--yes``, bad option); a ``Rejected`` exit code when ``show
--decrypt`` cannot open the message; 3 an export folder that cannot be written; 8 / 9
the broker unreachable / refusing. Before anything was dead-lettered (no queue yet) the
listings are empty and say so.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from consumers.audit import AuditLog
from consumers.dlq_filters import DeadLetterInfo, DlqFilter, count_by_reason, parse_time
from consumers.replay import DEFAULT_MAX_REPLAYS, DeadLetterQueue, json_safe
from contracts.envelope import open_envelope
from contracts.errors import Reason, Rejected
from contracts.letter import decode_letter
from kpr import eventloop
from kpr.config import Settings
from kpr.files import output_folder
from kpr.options import her_id, positive_float, positive_int

__all__ = ["register"]

_REASONS = sorted(reason.value for reason in Reason)


def _reason(text: str) -> str:
    if text in _REASONS or text.startswith("broker-"):
        return text
    raise argparse.ArgumentTypeError(f"unknown reason {text!r}; one of {', '.join(_REASONS)}")


def _time(text: str) -> Any:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp-url", help="broker URL (env KPR_AMQP_URL)")
    parser.add_argument("--queue-prefix", help="prefix of every exchange and queue name")
    parser.add_argument(
        "--register-her-id", type=her_id, help="the register's HER-id (env KPR_REGISTER_HER_ID)"
    )


def _filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all given must hold)")
    group.add_argument(
        "--reason",
        type=_reason,
        action="append",
        default=[],
        help=f"reason code (repeatable): {', '.join(_REASONS)}",
    )
    group.add_argument("--sender", type=her_id, metavar="HER_ID", help="sender HER-id")
    group.add_argument("--event-type", help="e.g. kad.admission")
    group.add_argument("--since", type=_time, help="dead-lettered at or after (ISO time)")
    group.add_argument("--until", type=_time, help="dead-lettered before (ISO time)")
    group.add_argument("--message-id", action="append", default=[], help="message id (repeatable)")


def _operator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", help="name for the audit log (default: the OS user)")


def register(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="inspect, replay, export and purge dead letters")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = commands.add_parser("list", help="dead letters, without removing them")
    _connection_options(listing)
    _filter_options(listing)
    listing.add_argument("--json", action="store_true", help="a JSON array")
    listing.add_argument("--group-by-reason", action="store_true", help="counts per reason")
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="one dead letter's headers")
    _connection_options(show)
    show.add_argument("message_id")
    show.add_argument("--pki-dir", type=Path, help="development PKI directory (env KPR_PKI_DIR)")
    show.add_argument(
        "--decrypt",
        action="store_true",
        help="also decrypt and verify it and print the event: PERSONAL DATA",
    )
    show.set_defaults(handler=_show)

    replay = commands.add_parser("replay", help="republish dead letters to the work queue")
    _connection_options(replay)
    _filter_options(replay)
    _operator_option(replay)
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.add_argument("--limit", type=positive_int, metavar="N", help="at most N")
    replay.add_argument(
        "--rate", type=positive_float, metavar="PER_SECOND", help="at most this many per second"
    )
    replay.add_argument(
        "--max-replays",
        type=positive_int,
        default=DEFAULT_MAX_REPLAYS,
        help=f"skip letters replayed this often (default {DEFAULT_MAX_REPLAYS})",
    )
    replay.add_argument("--json", action="store_true", help="the report as JSON")
    replay.set_defaults(handler=_replay)

    export = commands.add_parser("export", help="write dead letters to files, still encrypted")
    _connection_options(export)
    _filter_options(export)
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.add_argument("--json", action="store_true", help="what was written, as JSON")
    export.set_defaults(handler=_export)

    purge = commands.add_parser("purge", help="delete dead letters for good")
    _connection_options(purge)
    _filter_options(purge)
    _operator_option(purge)
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--limit", type=positive_int, metavar="N", help="at most N")
    purge.set_defaults(handler=_purge)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        amqp_url=args.amqp_url,
        queue_prefix=args.queue_prefix,
        register_her_id=args.register_her_id,
        pki_dir=getattr(args, "pki_dir", None),
    )


def _selection(args: argparse.Namespace) -> DlqFilter:
    return DlqFilter(
        reasons=frozenset(args.reason),
        sender_her_id=args.sender,
        event_type=args.event_type,
        since=args.since,
        until=args.until,
        message_ids=frozenset(args.message_id),
    )


def _audit(settings: Settings, operator: str | None) -> AuditLog:
    path = (settings.env or {}).get("KPR_AUDIT_LOG")
    return AuditLog(Path(path) if path else settings.state_dir / "audit.jsonl", operator=operator)


def _queue(settings: Settings, audit: AuditLog | None = None) -> DeadLetterQueue:
    return DeadLetterQueue(
        settings.amqp_url,
        topology=settings.topology(),
        tls=settings.tls_settings(),
        audit=audit,
        connect_timeout_s=settings.connect_timeout_s,
    )


def _write_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(infos: list[DeadLetterInfo]) -> None:
    print(
        f"{'dead-lettered at':<25} {'message id':<36} {'reason':<22} {'sender':>8} "
        f"{'event type':<17} {'replays':>7} {'bytes':>8}  description"
    )
    for info in infos:
        when = info.dead_lettered_at.isoformat(timespec="seconds") if info.dead_lettered_at else "-"
        print(
            f"{when:<25} {info.message_id:<36} {info.reason:<22} "
            f"{info.sender_her_id or '-':>8} {info.event_type or '-':<17} "
            f"{info.replay_count:>7} {info.size:>8}  {info.description[:80]}"
        )
    print(f"{len(infos)} dead letter(s)")


def _say_if_missing(args: argparse.Namespace, settings: Settings, dlq: DeadLetterQueue) -> None:
    if dlq.queue_missing:
        print(
            f"kpr dlq {args.dlq_command}: nothing has been dead-lettered yet (the broker has no "
            f"queue {settings.topology().dead_letter_queue}; check --queue-prefix if you "
            "expected one)",
            file=sys.stderr,
        )


def _list(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> list[DeadLetterInfo]:
        async with _queue(settings) as dlq:
            found = await dlq.list_matching(_selection(args))
            _say_if_missing(args, settings, dlq)
            return found

    infos = eventloop.run(run())
    if args.group_by_reason:
        counts = count_by_reason(infos)
        if args.json:
            _write_json(counts)
        else:
            for reason, count in counts.items():
                print(f"{count:>8}  {reason}")
    elif args.json:
        _write_json([info.model_dump(mode="json") for info in infos])
    else:
        _table(infos)
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> tuple[DeadLetterInfo, dict[str, Any], bytes] | None:
        async with _queue(settings) as dlq:
            shown = await dlq.show(args.message_id)
            _say_if_missing(args, settings, dlq)
            return shown

    found = eventloop.run(run())
    if found is None:
        print(
            f"kpr dlq show: error: no dead letter with message id {args.message_id}",
            file=sys.stderr,
        )
        return 1
    info, headers, body = found
    document: dict[str, Any] = {"info": info.model_dump(mode="json"), "headers": json_safe(headers)}
    if args.decrypt:
        print(
            "kpr dlq show: WARNING: the decrypted event is personal data; do not paste, "
            "store or forward it",
            file=sys.stderr,
        )
        try:
            opened = open_envelope(
                body, keys=settings.decryption_keys(), trust=settings.trust_store()
            )
            letter = decode_letter(opened.content)
        except Rejected as rejection:
            _write_json(document)
            print(
                f"kpr dlq show: error: cannot open the message: {rejection.reason.value}: "
                f"{rejection.description}",
                file=sys.stderr,
            )
            return rejection.exit_code
        document["event"] = letter.event
        document["letter"] = {
            "message_id": letter.message_id,
            "created_at": letter.created_at.isoformat(),
            "sender": letter.sender.model_dump(),
            "recipient_her_id": letter.recipient_her_id,
        }
    _write_json(document)
    return 0


def _replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    audit = _audit(settings, args.operator)

    async def run() -> Any:
        async with _queue(settings, audit) as dlq:
            report = await dlq.replay(
                _selection(args),
                dry_run=args.dry_run,
                limit=args.limit,
                rate_per_s=args.rate,
                max_replays=args.max_replays,
            )
            _say_if_missing(args, settings, dlq)
            return report

    report = eventloop.run(run())
    if args.json:
        _write_json(
            {
                "dry_run": report.dry_run,
                "replayed": report.replayed,
                "at_cap": report.at_cap,
                "duplicates_left": report.duplicates_left,
            }
        )
        return 0
    verb = "would replay" if report.dry_run else "replayed"
    print(f"{verb} {len(report.replayed)}")
    for message_id in report.replayed:
        print(f"  {message_id}")
    if report.at_cap:
        print(f"not replayed, replay count at the cap of {args.max_replays}: {len(report.at_cap)}")
        for message_id in report.at_cap:
            print(f"  {message_id}")
    if report.duplicates_left:
        print(f"second copies left queued: {len(report.duplicates_left)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    settings = _settings(args)
    output_folder(args.out, "dead-letter export")

    async def run() -> list[Path]:
        async with _queue(settings) as dlq:
            written = await dlq.export(_selection(args), args.out)
            _say_if_missing(args, settings, dlq)
            return written

    written = eventloop.run(run())
    if args.json:
        _write_json(
            {
                "exported": len(written),
                "folder": str(args.out),
                "files": [str(path) for path in written],
            }
        )
        return 0
    print(f"exported {len(written)} dead letter(s) to {args.out} (still encrypted)")
    return 0


def _purge(args: argparse.Namespace) -> int:
    settings = _settings(args)
    selection = _selection(args)
    if not args.yes and not sys.stdin.isatty():
        print(
            "kpr dlq purge: refusing without a terminal to confirm on; pass --yes", file=sys.stderr
        )
        return 2
    audit = _audit(settings, args.operator)

    async def matching() -> list[DeadLetterInfo]:
        async with _queue(settings) as dlq:
            return await dlq.list_matching(selection)

    if not args.yes:
        infos = eventloop.run(matching())
        if args.limit is not None:
            infos = infos[: args.limit]
        if not infos:
            print("nothing matches")
            return 0
        for reason, count in count_by_reason(infos).items():
            print(f"{count:>8}  {reason}")
        answer = input(f"delete these {len(infos)} dead letter(s) for good? type 'yes': ")
        if answer.strip() != "yes":
            print("not purged")
            return 2
        # Only what the operator saw: letters arriving meanwhile are not swept along.
        selection = replace(selection, message_ids=frozenset(i.message_id for i in infos))

    async def run() -> list[str]:
        async with _queue(settings, audit) as dlq:
            return await dlq.purge(selection, limit=args.limit)

    purged = eventloop.run(run())
    print(f"purged {len(purged)} dead letter(s)")
    return 0
