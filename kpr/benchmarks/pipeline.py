"""The whole pipeline's throughput next to what this machine can do at best, in one run.

Measured, in order, on one broker:

1. RSA-2048 private operations per second per core (``openssl speed``), and the cores;
2. crypto per message in-process: ``seal`` and ``open_envelope`` of a real letter;
3. the raw baseline: random bytes of the sealed size published with confirms (same
   :class:`~producers.publisher.Publisher`, same in-flight window) to a quorum queue with
   the same arguments, consumed with ack (same prefetch), then both at once;
4. producer: the back-fill of an EPJ extract (JSON Lines, written before the clock
   starts): validate + sign + encrypt + publish with confirms + checkpoint
   (:mod:`kpr.benchmarks.load`);
5. consumer: decrypt + verify + validate + dedup + commit + ack, SQLite and PostgreSQL,
   with the open step in an :class:`~consumers.pool.OpenerPool`, and SQLite once more
   opening in the consumer's own process (the ``KPR_OPEN_WORKERS=0`` default);
6. the same consumer work written with FastStream;
7. end to end: a back-fill process and the consumer at once, sustained, twice: the
   consumer opening in its own process (``KPR_OPEN_WORKERS=0``, the default) and in an
   opener pool; the faster is the end-to-end figure, and the next two phases run so
   (on two cores shared with the producer and the broker, more processes cost more
   than the pool's parallelism gives back; the consumer alone gains from the pool);
8. latency publish -> commit at a fixed offered load (half the end-to-end rate);
9. consumer RSS before and after ``memory_messages`` messages.

Every timed phase starts on a quiet machine (:func:`~kpr.benchmarks.machine.wait_until_quiet`),
so what one phase left running (the broker's log compaction, PostgreSQL's autovacuum)
is not charged to the next.

The machine limit: every message needs one RSA private operation at each end on
``cores`` cores, and the broker's raw end-to-end rate, so
``limit = 1 / (1/raw_e2e + 2/(rsa_per_core * cores))``.
"""

from __future__ import annotations

import asyncio
import functools
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from consumers.opener import Opener
from consumers.pool import OpenerPool
from consumers.processing import Processor
from consumers.pseudonym import Pseudonymiser
from consumers.store import SqlStore, open_store
from contracts.envelope import open_envelope, seal
from contracts.events import Environment
from contracts.letter import Party, encode_letter
from contracts.pki import ensure_dev_pki, org_number_of
from contracts.synth import dev_authorisation, generate_events
from kpr import eventloop
from kpr.benchmarks.crypto import measure_openssl_rsa2048
from kpr.benchmarks.drain import consume, raw_consume, republish, snapshot
from kpr.benchmarks.faststream_consumer import consume_with_faststream
from kpr.benchmarks.load import Load, start_producer, write_extract
from kpr.benchmarks.machine import (
    RssSampler,
    cpu_model,
    cpu_s,
    machine_busy_s,
    rss_mb,
    wait_until_quiet,
)
from kpr.config import Settings
from kpr.runtime import build_opener
from producers.publisher import Publisher

__all__ = [
    "TARGET_SHARE_OF_LIMIT",
    "BenchOptions",
    "cpu_budget",
    "format_table",
    "limit_per_s",
    "run_pipeline_benchmark",
]

PSEUDONYM_KEY = b"kpr-bench-pseudonym-key-not-secret!!"


@dataclass(frozen=True)
class BenchOptions:
    messages: int = 20_000
    memory_messages: int = 1_000_000
    prefetch: int = 128
    max_in_flight: int = 256
    workers: int | None = None
    openssl_seconds: int = 3
    crypto_seconds: float = 2.0
    postgres: bool = True
    quick: bool = False
    #: The consumer's group-commit linger (``KPR_GROUP_COMMIT_LINGER_MS``'s default).
    linger_s: float = Settings.group_commit_linger_s

    @classmethod
    def quick_run(cls, messages: int = 1000) -> BenchOptions:
        return cls(
            messages=messages,
            memory_messages=3 * messages,
            openssl_seconds=1,
            crypto_seconds=0.5,
            quick=True,
        )


def limit_per_s(raw_e2e_per_s: float, rsa_private_per_s_per_core: float, cores: int) -> float:
    """Messages/s if each needed the broker's raw path plus two RSA private operations."""
    return 1.0 / (1.0 / raw_e2e_per_s + 2.0 / (rsa_private_per_s_per_core * cores))


# --- the run --------------------------------------------------------------------------


@dataclass
class _Bench:
    options: BenchOptions
    settings: Settings
    pool: OpenerPool
    postgres_url: str | None
    say: Callable[[str], None]
    work_dir: Path

    def with_prefix(self, name: str, **changes: object) -> Settings:
        return self.settings.with_overrides(
            queue_prefix=f"bench-{secrets.token_hex(3)}-{name}.", **changes
        )

    def seed(self) -> int:
        """A fresh seed: distinct events (and message ids) in every phase and every run,
        so a reused PostgreSQL database holds no earlier duplicates."""
        return secrets.randbelow(1 << 30)

    def scratch(self, name: str) -> Path:
        """A fresh directory under the run's work directory (removed with it)."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work_dir))

    def extract(self, count: int) -> Path:
        """A fresh EPJ extract of ``count`` events (written before any clock starts)."""
        path = self.work_dir / f"extract-{secrets.token_hex(4)}.jsonl"
        return write_extract(path, count, self.seed())

    def store(self, url: str) -> SqlStore:
        """A pathway store as the consumer opens it (with its group-commit linger)."""
        return open_store(url, linger_s=self.options.linger_s)

    def processor(self, store: SqlStore, *, pooled: bool = True) -> Processor:
        """The consumer's processing: opening in the bench's pool, or in this process."""
        return Processor(
            build_opener(self.settings),
            Pseudonymiser(PSEUDONYM_KEY),
            store,
            opener_pool=self.pool if pooled else None,
        )


def _signer_org(settings: Settings) -> str:
    org = org_number_of(settings.signing_identity().certificate)
    assert org is not None  # the development PKI's signer carries one
    return org


def _crypto_cost(settings: Settings, seconds: float) -> dict[str, float]:
    """Seconds per seal and per open of a real letter, in this process (one core)."""
    [event] = generate_events(1, seed=99)
    letter = encode_letter(
        message_id="m",
        sender=Party(her_id=event.sender_her_id, org_number=_signer_org(settings)),
        recipient_her_id=settings.register_her_id,
        event_json=orjson.dumps(event.model_dump(mode="json")),
        created_at=datetime.now(UTC),
    )
    signer, recipient = settings.signing_identity(), settings.recipient_certificate()
    keys, trust = settings.decryption_keys(), settings.trust_store()
    body = seal(letter, signer=signer, recipient=recipient, profile=settings.profile)

    def per_call(operation: Callable[[], object]) -> float:
        operation()
        count, start = 0, time.perf_counter()
        while count < 10 or time.perf_counter() - start < seconds:
            operation()
            count += 1
        return (time.perf_counter() - start) / count

    return {
        "seal_s_per_message": per_call(
            lambda: seal(letter, signer=signer, recipient=recipient, profile=settings.profile)
        ),
        "open_s_per_message": per_call(lambda: open_envelope(body, keys=keys, trust=trust)),
        "sealed_bytes": float(len(body)),
    }


async def _phase_raw(bench: _Bench, size: int) -> dict[str, float]:
    options = bench.options
    settings = bench.with_prefix("raw")
    count = options.messages
    load = Load(count, options.max_in_flight, raw_size=size)
    await wait_until_quiet()
    produced = await start_producer(settings, load).result()
    publish = count / (produced["finished"] - produced["started"])
    await wait_until_quiet()
    consume_rate = count / await raw_consume(
        settings.amqp_url, settings.topology().work_queue, count, options.prefetch
    )
    await wait_until_quiet()
    both_start = time.time()
    producer = start_producer(settings, load)
    consumed = asyncio.create_task(
        raw_consume(settings.amqp_url, settings.topology().work_queue, count, options.prefetch)
    )
    produced = await producer.result()
    await consumed
    e2e = count / (time.time() - max(both_start, produced["started"]))
    return {"raw_publish_per_s": publish, "raw_consume_per_s": consume_rate, "raw_e2e_per_s": e2e}


async def _phase_producer_and_consumers(bench: _Bench) -> dict[str, float | None]:
    options = bench.options
    count = options.messages
    settings = bench.with_prefix("pc")
    extract = bench.extract(count)
    await wait_until_quiet()
    produced = await start_producer(settings, Load(count, options.max_in_flight, extract)).result()
    extract.unlink()
    figures: dict[str, float | None] = {
        "producer_per_s": produced["confirmed"] / (produced["finished"] - produced["started"])
    }
    queue = settings.topology().work_queue

    bodies = await snapshot(settings, count)
    # (figure, store, whether the consumer opens in the pool); the first drains the
    # queue as the producer left it, each later one drains a republished copy.
    runs: tuple[tuple[str, str | None, bool], ...] = (
        ("consumer_sqlite_per_s", str(bench.scratch("consumer") / "p.sqlite3"), True),
        ("consumer_sqlite_in_process_per_s", str(bench.scratch("single") / "s.sqlite3"), False),
        ("consumer_postgres_per_s", bench.postgres_url, True),
        ("faststream_consumer_per_s", str(bench.scratch("faststream") / "f.sqlite3"), True),
    )
    for number, (name, store_url, pooled) in enumerate(runs):
        if store_url is None:  # no PostgreSQL
            figures[name] = None
            continue
        if number > 0:
            await republish(settings, bodies)
        bench.say(f"  {name.removesuffix('_per_s').replace('_', ' ')} ...")
        await wait_until_quiet()
        async with bench.store(store_url) as store:
            processor = bench.processor(store, pooled=pooled)
            if name == "faststream_consumer_per_s":
                seconds = await consume_with_faststream(
                    settings.amqp_url, queue, processor, prefetch=options.prefetch, target=count
                )
            else:
                tally = await consume(settings, processor, count, prefetch=options.prefetch)
                seconds = tally.last - tally.first
        figures[name] = count / seconds
    return figures


async def _phase_e2e(
    bench: _Bench, count: int, *, rate: float | None, name: str, pooled: bool
) -> tuple[dict[str, float | None], dict[str, float], dict[str, float]]:
    """Producer process and consumer at once: (figures, sent_at, committed_at). With
    ``pooled``, the consumer opens in the bench's opener pool, else in its own process."""
    options = bench.options
    settings = bench.with_prefix(name)
    # Declare the topology first, so no early message is unroutable.
    async with Publisher(settings.amqp_url, topology=settings.topology()):
        pass
    committed_at: dict[str, float] = {}
    load = Load(
        count, options.max_in_flight, bench.extract(count), rate=rate, record_sent=rate is not None
    )
    store_path = bench.scratch(name) / "e2e.sqlite3"
    async with bench.store(str(store_path)) as store:
        processor = bench.processor(store, pooled=pooled)
        workers = bench.pool.worker_pids if pooled else ()
        workers_rss_before = sum(map(rss_mb, workers))
        await wait_until_quiet()
        cpu_before = time.process_time() + sum(map(cpu_s, workers))
        busy_before = machine_busy_s()
        async with RssSampler() as rss:
            producer = start_producer(settings, load)
            consumed = asyncio.create_task(
                consume(
                    settings, processor, count, prefetch=options.prefetch,
                    committed_at=committed_at if rate is not None else None,
                )
            )  # fmt: skip
            produced = await producer.result()
            tally = await consumed
        consumer_cpu_s = time.process_time() + sum(map(cpu_s, workers)) - cpu_before
        busy_s = machine_busy_s() - busy_before
        workers_rss_after = sum(map(rss_mb, workers))
    shutil.rmtree(store_path.parent, ignore_errors=True)
    assert load.extract is not None
    load.extract.unlink()
    done_at = time.time() - (time.perf_counter() - tally.last)
    figures: dict[str, float | None] = {
        "per_s": count / (done_at - produced["started"]),
        "rss_before_mb": rss.samples[0][1],
        "rss_after_mb": rss.samples[-1][1],
        "rss_max_mb": rss.max_mb,
        "rss_growth_second_half_mb": rss.growth_in_second_half_mb(),
        "workers_rss_before_mb": workers_rss_before if pooled else None,
        "workers_rss_after_mb": workers_rss_after if pooled else None,
        # CPU per message: the consumer (event loop + open workers), the producer while
        # publishing, and what the machine did besides (the broker, and any other load).
        "consumer_cpu_ms": consumer_cpu_s / count * 1e3,
        "producer_cpu_ms": produced["cpu_s"] / count * 1e3,
        "ack_frames_per_message": tally.ack_frames / count,
        "other_cpu_ms": max(0.0, busy_s - consumer_cpu_s - produced["cpu_s"]) / count * 1e3,
    }
    return figures, produced["sent_at"], committed_at


def _rate(figures: dict[str, float | None]) -> float:
    rate = figures["per_s"]
    assert rate is not None  # every phase measures its rate
    return rate


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _run(bench: _Bench) -> dict[str, Any]:
    options, say = bench.options, bench.say
    result: dict[str, Any] = {}
    cores = bench.pool.workers
    say("openssl speed rsa2048 ...")
    private_per_s, public_per_s = await asyncio.to_thread(
        measure_openssl_rsa2048, options.openssl_seconds
    )
    result |= {
        "rsa_private_ops_per_s_per_core": private_per_s,
        "rsa_public_ops_per_s_per_core": public_per_s,
        "cores": cores,
    }
    say("crypto per message ...")
    crypto = _crypto_cost(bench.settings, options.crypto_seconds)
    result |= {k: v for k, v in crypto.items() if k != "sealed_bytes"}
    result["crypto_cost_ratio"] = (crypto["seal_s_per_message"] + crypto["open_s_per_message"]) / (
        2.0 / private_per_s
    )
    say("raw baseline ...")
    result |= await _phase_raw(bench, int(crypto["sealed_bytes"]))
    say("producer and consumers ...")
    result |= await _phase_producer_and_consumers(bench)
    say("end to end, opening in the consumer's process ...")
    in_process, _, _ = await _phase_e2e(
        bench, options.messages, rate=None, name="e2e", pooled=False
    )
    say("end to end, opening in the pool ...")
    in_pool, _, _ = await _phase_e2e(bench, options.messages, rate=None, name="e2ep", pooled=True)
    pooled = _rate(in_pool) > _rate(in_process)
    e2e = in_pool if pooled else in_process
    result["e2e_open_in"] = "pool" if pooled else "process"
    result["e2e_in_process_per_s"] = in_process["per_s"]
    result["e2e_pool_per_s"] = in_pool["per_s"]
    result["e2e_per_s"] = e2e["per_s"]
    result["e2e_ack_frames_per_message"] = e2e["ack_frames_per_message"]
    result |= {
        f"e2e_{part}_cpu_ms_per_message": e2e[f"{part}_cpu_ms"]
        for part in ("consumer", "producer", "other")
    }
    offered = 0.5 * _rate(e2e)
    latency_count = max(100, min(options.messages, int(offered * 20)))
    say(f"latency at {offered:,.0f}/s offered ...")
    _, sent_at, committed_at = await _phase_e2e(
        bench, latency_count, rate=offered, name="lat", pooled=pooled
    )
    latencies = [
        (committed_at[event_id] - sent) * 1000
        for event_id, sent in sent_at.items()
        if event_id in committed_at
    ]
    result |= {
        "latency_offered_per_s": offered,
        "latency_messages": len(latencies),
        "latency_p50_ms": statistics.median(latencies) if latencies else None,
        "latency_p99_ms": _percentile(latencies, 0.99) if latencies else None,
    }
    say(f"memory over {options.memory_messages:,} messages ...")
    memory, _, _ = await _phase_e2e(
        bench, options.memory_messages, rate=None, name="mem", pooled=pooled
    )
    result |= {
        "memory_messages": options.memory_messages,
        **{
            key: memory[key]
            for key in (
                "rss_before_mb",
                "rss_after_mb",
                "rss_max_mb",
                "rss_growth_second_half_mb",
                "workers_rss_before_mb",
                "workers_rss_after_mb",
            )
        },
        "memory_e2e_per_s": memory["per_s"],
    }
    limit = limit_per_s(result["raw_e2e_per_s"], private_per_s, cores)
    faststream = result.get("faststream_consumer_per_s")
    result |= cpu_budget(result, limit, cores)
    result |= {
        "limit_per_s": limit,
        "ratio_to_limit": result["e2e_per_s"] / limit,
        "e2e_to_raw_ratio": result["e2e_per_s"] / result["raw_e2e_per_s"],
        "consumer_to_faststream_ratio": (
            result["consumer_sqlite_per_s"] / faststream if faststream else None
        ),
    }
    return result


#: The issue's target: end to end at this share of the machine limit.
TARGET_SHARE_OF_LIMIT = 0.7


def cpu_budget(result: dict[str, Any], limit: float, cores: int) -> dict[str, float]:
    """Where a message's CPU goes end to end, next to what the target leaves for it.

    With every core busy, ``cores / rate`` is the CPU one message may use at that rate:
    at the target that is the budget. The raw path's share is an upper bound (its run
    keeps the cores busy too); crypto is seal + open measured on one core. What is left
    of the budget after those two is what validation, pseudonymising, the store, the
    worker hand-off and the event loops may cost together.
    """
    spent = sum(
        result[f"e2e_{part}_cpu_ms_per_message"] for part in ("consumer", "producer", "other")
    )
    budget = cores / (TARGET_SHARE_OF_LIMIT * limit) * 1e3
    raw = cores / result["raw_e2e_per_s"] * 1e3
    crypto = (result["seal_s_per_message"] + result["open_s_per_message"]) * 1e3
    return {
        "e2e_cpu_ms_per_message": spent,
        "target_cpu_ms_per_message": budget,
        "raw_cpu_ms_per_message": raw,
        "crypto_cpu_ms_per_message": crypto,
        "target_cpu_ms_left_for_the_rest": budget - raw - crypto,
        "e2e_cpu_ms_for_the_rest": spent - raw - crypto,
    }


def run_pipeline_benchmark(
    options: BenchOptions,
    *,
    amqp_url: str,
    postgres_url: str | None,
    work_dir: Path,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every figure of the module docstring, as one flat dict (see :func:`format_table`)."""
    pki = ensure_dev_pki(work_dir / "pki")
    authorisation = work_dir / "authorisation.json"
    authorisation.write_bytes(dev_authorisation(pki.sender.info.org_number))
    settings = Settings().with_overrides(
        amqp_url=amqp_url,
        pki_dir=pki.directory,
        state_dir=work_dir,
        environment=Environment.TEST,
        authorisation_file=authorisation,
    )
    opener_factory: Callable[[], Opener] = functools.partial(build_opener, settings)
    with OpenerPool(
        opener_factory,
        workers=options.workers,
        pseudonymiser_factory=functools.partial(Pseudonymiser, PSEUDONYM_KEY),
    ) as pool:
        bench = _Bench(options, settings, pool, postgres_url, say, work_dir)
        result = eventloop.run(_run(bench))
    result |= {
        "quick": options.quick,
        "messages": options.messages,
        "prefetch": options.prefetch,
        "max_in_flight": options.max_in_flight,
        "group_commit_linger_ms": options.linger_s * 1000,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {cpu_model()}",
        "python": platform.python_version(),
    }
    return result


def format_table(result: dict[str, Any]) -> str:
    """The figures as an aligned two-column table."""

    def show(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    rows = [
        ("RSA-2048 private ops/s per core (openssl)", "rsa_private_ops_per_s_per_core"),
        ("cores used", "cores"),
        ("seal us/message (one core)", "seal_us_per_message"),
        ("open us/message (one core)", "open_us_per_message"),
        ("crypto cost / two RSA private ops", "crypto_cost_ratio"),
        ("raw publish/s (confirms)", "raw_publish_per_s"),
        ("raw consume/s (ack)", "raw_consume_per_s"),
        ("raw end-to-end/s", "raw_e2e_per_s"),
        ("producer/s (back-fill: validate+seal+publish)", "producer_per_s"),
        ("consumer/s SQLite", "consumer_sqlite_per_s"),
        ("consumer/s SQLite, opening in its own process", "consumer_sqlite_in_process_per_s"),
        ("consumer/s PostgreSQL", "consumer_postgres_per_s"),
        ("FastStream consumer/s (same work, SQLite)", "faststream_consumer_per_s"),
        ("consumer / FastStream", "consumer_to_faststream_ratio"),
        ("end-to-end/s, opening in the consumer process", "e2e_in_process_per_s"),
        ("end-to-end/s, opening in the pool", "e2e_pool_per_s"),
        ("end-to-end/s sustained (the faster)", "e2e_per_s"),
        ("  opening there (and in the phases below)", "e2e_open_in"),
        ("end-to-end / raw", "e2e_to_raw_ratio"),
        ("e2e CPU ms/message: consumer (+ pool)", "e2e_consumer_cpu_ms_per_message"),
        ("e2e CPU ms/message: producer", "e2e_producer_cpu_ms_per_message"),
        ("e2e CPU ms/message: broker + rest of machine", "e2e_other_cpu_ms_per_message"),
        ("e2e basic.ack frames / message", "e2e_ack_frames_per_message"),
        ("e2e CPU ms/message, all", "e2e_cpu_ms_per_message"),
        ("  budget at 0.7 of the limit", "target_cpu_ms_per_message"),
        ("  of which raw path (upper bound)", "raw_cpu_ms_per_message"),
        ("  of which seal + open", "crypto_cpu_ms_per_message"),
        ("  left for everything else at 0.7", "target_cpu_ms_left_for_the_rest"),
        ("  spent on everything else", "e2e_cpu_ms_for_the_rest"),
        ("latency offered load/s", "latency_offered_per_s"),
        ("latency p50 ms (publish -> commit)", "latency_p50_ms"),
        ("latency p99 ms", "latency_p99_ms"),
        ("consumer group-commit linger ms", "group_commit_linger_ms"),
        ("memory run messages", "memory_messages"),
        ("consumer RSS MB before", "rss_before_mb"),
        ("consumer RSS MB after", "rss_after_mb"),
        ("consumer RSS MB max", "rss_max_mb"),
        ("consumer RSS MB growth in the second half", "rss_growth_second_half_mb"),
        ("open workers RSS MB before / after (sum)", "workers_rss"),
        ("machine limit/s", "limit_per_s"),
        ("end-to-end / limit", "ratio_to_limit"),
    ]
    result = {
        **result,
        "seal_us_per_message": result["seal_s_per_message"] * 1e6,
        "open_us_per_message": result["open_s_per_message"] * 1e6,
        "workers_rss": (
            f"{result['workers_rss_before_mb']:,.0f} / {result['workers_rss_after_mb']:,.0f}"
            if result.get("workers_rss_before_mb") is not None
            else None
        ),
    }
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {show(result.get(key)):>12}" for label, key in rows]
    if result.get("quick"):
        lines.append(
            f"(quick run: {result['messages']} messages per phase, "
            f"memory over {result['memory_messages']}, not the full million)"
        )
    lines.append(f"{result.get('date')}  {result.get('machine')}")
    return "\n".join(lines)
