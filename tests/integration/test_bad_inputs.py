"""Bad inputs, as an operator on call meets them: every case runs the real ``kpr`` command
line (a subprocess) against the real broker and both stores, and must end with the exit
code of the table in docs/OPERATIONS.md, no ``Traceback`` in either stream, at most three
lines of its own on stderr, a message that names the thing at fault, and never a password.

The cases are the table :data:`CASES`; ``{name}`` in an argument, an environment value or
the expected words is filled from :class:`World` (paths, URLs, ports made for this run).
"""

from __future__ import annotations

import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from support import environment_of, pipeline_settings
from yarl import URL

from contracts import PkiDir, ensure_dev_pki
from contracts.synth import generate_lines
from kpr.exits import EXIT_CODES
from kpr.localprocess import free_port

SECRET = "s3cret-Pw"  # a password that must never be shown


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    code: int
    words: tuple[str, ...]  # each must appear in stderr (or stdout for code 0)
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""


def case(
    name: str,
    argv: str,
    code: int,
    *words: str,
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
) -> Case:
    return Case(name, tuple(argv.split()), code, words, env or {}, stdin)


FAST = {"KPR_CONNECT_TIMEOUT": "2"}
PRODUCTION = {"KPR_ENVIRONMENT": "production"}
SEAL = "seal {event} --signer-cert {pki}/sender-sign.pem --recipient-cert {pki}/register-enc.pem"
OPEN = (
    "--recipient-cert {pki}/register-enc.pem --recipient-key {pki}/register-enc.key "
    "--trust {pki}/root-ca.pem --intermediates {pki}/issuing-ca.pem"
)

CASES: list[Case] = [
    # -- settings: exit 7 ----------------------------------------------------------------
    case("url-not-a-url", "consume --until-idle 1", 7, "hello", "amqp://",
         env={"KPR_AMQP_URL": "hello"}),
    case("url-http-scheme", "produce {events}", 7, "amqp://", env={"KPR_AMQP_URL": "http://h/"}),
    case("url-no-host", "dlq list", 7, "no host", env={"KPR_AMQP_URL": "amqp://"}),
    case("url-port-out-of-range", "dlq list", 7, "99999",
         env={"KPR_AMQP_URL": f"amqp://guest:{SECRET}@127.0.0.1:99999/"}),
    case("url-option-port-out-of-range", "produce {events} --amqp-url amqp://h:70000/", 7,
         "70000"),
    case("environment-unknown", "consume --until-idle 1", 7, "KPR_ENVIRONMENT",
         "production, test", env={"KPR_ENVIRONMENT": "prod"}),
    case("profile-unknown", "produce {events}", 7, "KPR_PROFILE", "national",
         env={"KPR_PROFILE": "loose"}),
    case("metrics-port-garbage", "consume --until-idle 1", 7, "KPR_METRICS_PORT",
         env={"KPR_METRICS_PORT": "abc"}),
    case("partitions-negative", "consume --until-idle 1", 7, "KPR_PARTITIONS",
         env={"KPR_PARTITIONS": "-3"}),
    case("drain-timeout-garbage", "consume --until-idle 1", 7, "KPR_DRAIN_TIMEOUT",
         env={"KPR_DRAIN_TIMEOUT": "soon"}),
    case("her-id-garbage", "dlq list", 7, "KPR_REGISTER_HER_ID",
         env={"KPR_REGISTER_HER_ID": "81339x"}),
    case("connect-timeout-negative", "dlq list", 7, "KPR_CONNECT_TIMEOUT",
         env={"KPR_CONNECT_TIMEOUT": "-1"}),
    case("ca-file-with-plain-url", "produce {events}", 7, "KPR_AMQP_CA_FILE", "amqps://",
         env={"KPR_AMQP_CA_FILE": "{pki}/root-ca.pem"}),
    case("authorisation-not-json", "consume --until-idle 1", 7, "{text_file}",
         env={"KPR_AUTHORISATION_FILE": "{text_file}"}),
    case("authorisation-missing", "consume --until-idle 1", 7, "{tmp}/no-grants.json",
         env={"KPR_AUTHORISATION_FILE": "{tmp}/no-grants.json"}),
    case("store-url-unknown-scheme", "pathways summary --store-url mysql://h/kpr", 7, "mysql://"),
    case("ca-file-missing", "produce {events}", 7, "KPR_AMQP_CA_FILE", "{tmp}/no-ca.pem",
         env={"KPR_AMQP_URL": "amqps://guest:guest@127.0.0.1:{amqp_port}/",
              "KPR_AMQP_CA_FILE": "{tmp}/no-ca.pem"}),
    case("metrics-port-in-use", "consume --until-idle 1 --metrics-port {amqp_port}", 7,
         "cannot serve metrics", "{amqp_port}"),
    case("production-without-pseudonym-key", "consume --until-idle 1", 7,
         "KPR_PSEUDONYM_KEY_FILE", env=PRODUCTION),
    # -- usage: exit 2 -------------------------------------------------------------------
    case("metrics-port-option", "consume --metrics-port 70000", 2, "--metrics-port", "70000"),
    case("until-idle-negative", "consume --until-idle -1", 2, "--until-idle"),
    case("workers-negative", "consume --workers -2", 2, "--workers"),
    case("max-in-flight-zero", "backfill {events} --checkpoint {tmp}/c --max-in-flight 0", 2,
         "--max-in-flight"),
    case("rate-negative", "backfill {events} --checkpoint {tmp}/c --rate -5", 2, "--rate"),
    case("max-replays-negative", "dlq replay --max-replays -1", 2, "--max-replays"),
    case("older-than-days-negative", "pathways incomplete --older-than-days -3", 2,
         "--older-than-days"),
    case("max-stay-days-zero", "report --out {tmp}/r --max-stay-days 0", 2, "--max-stay-days"),
    case("sender-her-id-zero", "synth --sender-her-id 0", 2, "HER-id"),
    # -- broker unreachable: exit 8 ------------------------------------------------------
    case("unknown-host", "produce {events}", 8, "nohost.invalid",
         env={"KPR_AMQP_URL": f"amqp://guest:{SECRET}@nohost.invalid/"}),
    case("closed-port-produce", "produce {events}", 8, "nothing listens", "{closed_port}",
         env={"KPR_AMQP_URL": f"amqp://guest:{SECRET}@127.0.0.1:{{closed_port}}/"}),
    case("closed-port-consume", "consume --until-idle 1", 8, "nothing listens",
         env={"KPR_AMQP_URL": "amqp://guest:guest@127.0.0.1:{closed_port}/"}),
    case("closed-port-backfill", "backfill {events} --checkpoint {tmp}/cb", 8, "nothing listens",
         env={"KPR_AMQP_URL": "amqp://guest:guest@127.0.0.1:{closed_port}/"}),
    case("not-an-amqp-server", "dlq list", 8, "does not answer as", "{http_port}",
         env={"KPR_AMQP_URL": "amqp://guest:guest@127.0.0.1:{http_port}/", **FAST}),
    case("silent-server-produce", "produce {events}", 8, "within 2 s",
         env={"KPR_AMQP_URL": "amqp://guest:guest@127.0.0.1:{silent_port}/", **FAST}),
    case("silent-server-consume", "consume --until-idle 1", 8, "within 2 s",
         env={"KPR_AMQP_URL": "amqp://guest:guest@127.0.0.1:{silent_port}/", **FAST}),
    case("tls-to-a-plain-port", "produce {events}", 8, "TLS",
         env={"KPR_AMQP_URL": "amqps://guest:guest@127.0.0.1:{amqp_port}/",
              "KPR_AMQP_CA_FILE": "{pki}/root-ca.pem"}),
    # -- broker refused: exit 9 ----------------------------------------------------------
    case("wrong-password", "produce {events}", 9, "refused the login", "******",
         env={"KPR_AMQP_URL": f"amqp://guest:{SECRET}@127.0.0.1:{{amqp_port}}/"}),
    case("unknown-user", "dlq list", 9, "refused the login",
         env={"KPR_AMQP_URL": f"amqp://nobody:{SECRET}@127.0.0.1:{{amqp_port}}/"}),
    case("unknown-vhost", "consume --until-idle 1", 9, "vhost", "no-such-vhost",
         env={"KPR_AMQP_URL": "amqp://guest:guest@127.0.0.1:{amqp_port}/no-such-vhost"}),
    # -- store: exit 10 ------------------------------------------------------------------
    case("store-text-file", "pathways summary --store-url {text_file}", 10, "{text_file}",
         "not a readable SQLite"),
    case("store-truncated", "pathways summary --store-url {truncated_store}", 10,
         "{truncated_store}"),
    case("store-folder", "pathways summary --store-url {tmp}", 10, "{tmp}"),
    case("store-foreign-sqlite", "pathways summary --store-url {foreign_sqlite}", 10,
         "not a kpr pathway store"),
    case("store-newer-sqlite", "pathways summary --store-url {newer_sqlite}", 10,
         "schema version 99", "nothing was written"),
    case("consume-into-foreign-sqlite", "consume --until-idle 1 --store-url {foreign_sqlite}",
         10, "not a kpr pathway store"),
    case("report-missing-store", "report --out {tmp}/r1 --store-url {tmp}/absent.db", 10,
         "no pathway store at {tmp}/absent.db"),
    case("report-text-file", "report --out {tmp}/r2 --store-url {text_file}", 10, "{text_file}"),
    case("postgres-closed-port", "pathways summary", 10, "127.0.0.1", "******",
         env={"KPR_STORE_URL": f"postgresql://kpr:{SECRET}@127.0.0.1:{{closed_port}}/kpr"}),
    case("postgres-unknown-database", "pathways summary --store-url {pg_missing_db}", 10,
         "kpr_no_such_db"),
    case("postgres-foreign-database", "pathways summary --store-url {pg_foreign_db}", 10,
         "not a kpr pathway store"),
    case("postgres-newer-schema", "consume --until-idle 1 --store-url {pg_newer_db}", 10,
         "schema version 99"),
    case("report-postgres-closed-port", "report --out {tmp}/r3", 10, "******",
         env={"KPR_STORE_URL": f"postgresql://kpr:{SECRET}@127.0.0.1:{{closed_port}}/kpr"}),
    # -- key material: exit 11 -----------------------------------------------------------
    case("pki-folder-missing", "produce {events}", 11, "no PKI folder {tmp}/no-pki",
         "kpr pki dev", env={"KPR_PKI_DIR": "{tmp}/no-pki"}),
    case("pki-folder-without-root", "consume --until-idle 1", 11, "root-ca.pem",
         env={"KPR_PKI_DIR": "{empty_dir}"}),
    case("pki-is-a-file", "consume --until-idle 1", 11, "is a file",
         env={"KPR_PKI_DIR": "{text_file}"}),
    case("pseudonym-key-not-hex", "consume --until-idle 1", 11, "{text_file}", "hex",
         env={"KPR_PSEUDONYM_KEY_FILE": "{text_file}"}),
    case("pseudonym-key-too-short", "consume --until-idle 1", 11, "32 bytes",
         env={"KPR_PSEUDONYM_KEY_FILE": "{short_key}"}),
    case("pseudonym-key-missing", "consume --until-idle 1", 11, "{tmp}/none.key",
         env={"KPR_PSEUDONYM_KEY_FILE": "{tmp}/none.key"}),
    case("partition-key-not-hex", "produce {events} --partitions 4", 11,
         "KPR_PARTITION_KEY_FILE", env={"KPR_PARTITION_KEY_FILE": "{text_file}"}),
    case("seal-key-does-not-match", SEAL + " --signer-key {pki}/sender-enc.key --out {tmp}/m",
         11, "does not belong"),
    case("seal-to-a-signing-certificate",
         "seal {event} --signer-cert {pki}/sender-sign.pem --signer-key {pki}/sender-sign.key "
         "--recipient-cert {pki}/register-sign.pem --out {tmp}/m", 11, "keyEncipherment"),
    case("open-trust-not-pem", "open {message} " + OPEN.replace("{pki}/root-ca.pem",
         "{text_file}"), 11, "{text_file}", "PEM"),
    case("open-trust-der", "open {message} " + OPEN.replace("{pki}/root-ca.pem", "{root_der}"),
         11, "DER", "openssl x509"),
    # -- input refused: exit 3 (and 6 for a contract) --------------------------------------
    case("produce-missing-file", "produce {tmp}/none.jsonl", 3, "{tmp}/none.jsonl"),
    case("produce-not-json", "produce {text_file}", 3, "{text_file}:1", "JSON"),
    case("produce-line-not-an-object", "produce {array_file}", 3, "{array_file}:1"),
    case("produce-a-folder", "produce {tmp}", 3, "{tmp}"),
    case("produce-synthetic-in-production", "produce {events}", 6, "KPR_ENVIRONMENT=test",
         "synthetic-id-in-production", env=PRODUCTION),
    case("open-garbage", "open {text_file} " + OPEN, 3, "malformed"),
    case("open-pem-message", "open {message_pem} " + OPEN, 3, "PEM", "DER"),
    case("seal-out-missing-folder",
         SEAL + " --signer-key {pki}/sender-sign.key --out {tmp}/no/m.der", 3, "{tmp}/no"),
    case("pki-dev-out-onto-a-file", "pki dev --out {text_file}", 3, "{text_file}", "folder"),
    case("report-out-onto-a-file", "report --out {text_file}", 3, "{text_file}", "folder"),
    case("dlq-export-out-onto-a-file", "dlq export --out {text_file}", 3, "{text_file}"),
    case("backfill-garbage-checkpoint", "backfill {events} --checkpoint {text_file}", 3,
         "{text_file}", "checkpoint"),
    case("backfill-missing-extract", "backfill {tmp}/none.jsonl --checkpoint {tmp}/c2", 3,
         "{tmp}/none.jsonl"),
    case("synth-out-missing-folder", "synth --count 2 --out {tmp}/no/e.jsonl", 3, "{tmp}/no"),
    case("national-id-empty", "pathways person --national-id-stdin", 3, "11 digits"),
    case("national-id-not-digits", "pathways person --national-id-stdin", 3, "11 digits",
         stdin=b"not-a-number\n"),
    case("national-id-bad-check-digits", "pathways person --national-id-stdin", 3,
         "check digits", stdin=b"12345678901\n"),
    # -- conventions: exit 0 with a word of warning ------------------------------------------
    case("produce-empty-file", "produce {empty_file}", 0, "holds no events"),
    case("dlq-list-before-any-dead-letter", "dlq list", 0, "nothing has been dead-lettered"),
    case("dlq-replay-before-any-dead-letter", "dlq replay", 0, "nothing has been dead-lettered"),
    case("dlq-show-before-any-dead-letter", "dlq show some-id", 1,
         "nothing has been dead-lettered", "no dead letter with message id some-id"),
]  # fmt: skip


class World(dict[str, str]):
    """The paths, URLs and ports the cases refer to, made once for the module."""


def _serve(listener: socket.socket, reply: bytes | None) -> None:
    """Accept forever; answer each connection with ``reply`` (or hold it silently)."""
    held = []
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        if reply is None:
            held.append(connection)
            continue
        connection.sendall(reply)
        connection.close()


def _listener() -> socket.socket:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(None)
    return listener


def _postgres_database(admin_url: str, name: str, *statements: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    url = str(URL(admin_url).with_path(f"/{name}"))
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)
    return url


@pytest.fixture(scope="module")
def world(
    amqp_url: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    pki = ensure_dev_pki(tmp / "pki")
    (tmp / "state").mkdir()
    settings = pipeline_settings(amqp_url, PkiDir.load(pki.directory), tmp / "state")
    env = environment_of(settings)
    env.pop("KPR_DEBUG", None)

    events = tmp / "events.jsonl"
    lines = generate_lines(3, seed=3)
    events.write_bytes(b"".join(line + b"\n" for line in lines))
    event = tmp / "event.json"
    event.write_bytes(lines[0])
    text_file = tmp / "notes.txt"
    text_file.write_text("this is not what you think\n", encoding="utf-8")
    (tmp / "empty").mkdir()
    (tmp / "array.jsonl").write_bytes(b"[1, 2, 3]\n")
    (tmp / "empty.jsonl").write_bytes(b"")
    short_key = tmp / "short.key"
    short_key.write_text("abcd1234\n", encoding="ascii")

    message = tmp / "message.der"
    sealed = subprocess.run(
        [sys.executable, "-m", "kpr", "seal", str(event),
         "--signer-cert", str(pki.directory / "sender-sign.pem"),
         "--signer-key", str(pki.directory / "sender-sign.key"),
         "--recipient-cert", str(pki.directory / "register-enc.pem"), "--out", str(message)],
        env=env, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr
    pem = subprocess.run(
        ["openssl", "cms", "-cmsout", "-inform", "DER", "-in", str(message), "-outform", "PEM"],
        capture_output=True, check=True,
    )  # fmt: skip
    (tmp / "message.pem").write_bytes(pem.stdout)
    subprocess.run(
        ["openssl", "x509", "-in", str(pki.root_path), "-outform", "DER",
         "-out", str(tmp / "root.der")],
        check=True,
    )  # fmt: skip

    foreign = tmp / "foreign.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    newer = tmp / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute("CREATE TABLE kpr_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO kpr_schema VALUES (99)")
    # A real store, cut off after its first pages.
    subprocess.run(
        [sys.executable, "-m", "kpr", "pathways", "summary", "--store-url", str(tmp / "s.db")],
        env=env, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    (tmp / "truncated.db").write_bytes((tmp / "s.db").read_bytes()[:5000])

    http, silent = _listener(), _listener()
    for listener, reply in ((http, b"HTTP/1.1 400 Bad Request\r\n\r\n"), (silent, None)):
        threading.Thread(target=_serve, args=(listener, reply), daemon=True).start()

    values = World(
        tmp=str(tmp),
        pki=str(pki.directory),
        events=str(events),
        event=str(event),
        message=str(message),
        message_pem=str(tmp / "message.pem"),
        root_der=str(tmp / "root.der"),
        text_file=str(text_file),
        empty_dir=str(tmp / "empty"),
        array_file=str(tmp / "array.jsonl"),
        empty_file=str(tmp / "empty.jsonl"),
        short_key=str(short_key),
        foreign_sqlite=str(foreign),
        newer_sqlite=str(newer),
        truncated_store=str(tmp / "truncated.db"),
        closed_port=str(free_port()),
        http_port=str(http.getsockname()[1]),
        silent_port=str(silent.getsockname()[1]),
        amqp_port=str(URL(amqp_url).port),
        pg_missing_db=str(URL(postgres_url).with_path("/kpr_no_such_db")),
        pg_foreign_db=_postgres_database(
            postgres_url, "kpr_bad_foreign", "CREATE TABLE users (id INTEGER)"
        ),
        pg_newer_db=_postgres_database(
            postgres_url,
            "kpr_bad_newer",
            "CREATE TABLE kpr_schema (version INTEGER NOT NULL)",
            "INSERT INTO kpr_schema VALUES (99)",
        ),
    )
    try:
        yield values, env
    finally:
        http.close()
        silent.close()


def _fill(text: str, values: World) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _own_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines (structured logs are the log's, not the message)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def test_the_table_has_enough_cases_and_covers_every_failure_code() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    failure_codes = {code for code in EXIT_CODES if code not in (0, 4, 5, 70, 130, 143)}
    assert failure_codes <= {c.code for c in CASES}


@pytest.mark.parametrize("bad", CASES, ids=lambda bad: bad.name)
def test_a_bad_input_gets_its_code_and_one_clear_line(
    bad: Case, world: tuple[World, dict[str, str]]
) -> None:
    values, base_env = world
    env = {**base_env, **{key: _fill(value, values) for key, value in bad.env.items()}}
    argv = [_fill(arg, values) for arg in bad.argv]
    if bad.name.startswith("dlq-") and "before-any" in bad.name:
        env["KPR_QUEUE_PREFIX"] = f"fresh{secrets.token_hex(4)}."
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kpr", *argv],
        env=env, input=bad.stdin, capture_output=True, timeout=90, check=False,
    )  # fmt: skip
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    shown = f"exit {result.returncode}\nstderr:\n{stderr[-2000:]}\nstdout:\n{stdout[-500:]}"
    assert result.returncode == bad.code, shown
    assert "Traceback" not in stdout + stderr, shown
    assert SECRET not in stdout + stderr, shown
    assert time.monotonic() - started < 60, "a bad input must not hang"
    own = _own_lines(stderr)
    if bad.code == 2:  # argparse: the usage, then one line naming the option
        assert own[-1].startswith("kpr "), shown
        assert ": error: " in own[-1], shown
    elif bad.code != 0:
        assert 1 <= len(own) <= 3, shown
        assert own[-1].startswith(f"kpr {argv[0]}"), shown
        assert ": error: " in own[-1], shown
    for words in bad.words:
        assert _fill(words, values) in stderr + stdout, shown
    if bad.stdin.strip():
        assert bad.stdin.decode().strip() not in stderr + stdout, "the national id was echoed"


@pytest.mark.parametrize(
    ("argv", "sent", "code"),
    [
        (["consume", "--until-idle", "60"], signal.SIGTERM, 143),
        (["consume", "--until-idle", "60"], signal.SIGINT, 130),
        (["produce", "{events}"], signal.SIGTERM, 143),
    ],
    ids=["consume-waiting-for-a-silent-broker-sigterm", "consume-sigint", "produce-sigterm"],
)
def test_a_signal_while_connecting_ends_cleanly(
    argv: list[str], sent: signal.Signals, code: int, world: tuple[World, dict[str, str]]
) -> None:
    """A command stuck on a broker that never answers is stopped by a signal at once:
    exit 128 + signal, one line, no traceback from any layer."""
    values, base_env = world
    env = {
        **base_env,
        "KPR_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{values['silent_port']}/",
        "KPR_CONNECT_TIMEOUT": "60",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kpr", *[_fill(arg, values) for arg in argv]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(3)  # imported, settings read, waiting on the silent port
        assert process.poll() is None
        process.send_signal(sent)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = stdout.decode() + stderr.decode()
    assert process.returncode == code, text
    assert "Traceback" not in text
    assert f"stopped by {sent.name}" in text, text
    assert len(_own_lines(stderr.decode())) <= 3, text
