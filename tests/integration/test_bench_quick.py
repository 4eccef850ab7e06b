"""``kpr bench --quick --json`` at tiny size: every figure is there, ratios follow from them.

Not a timing assertion: the machine's load decides the figures; this checks that the
benchmark runs end to end on the session's broker and PostgreSQL and reports honestly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from kpr.benchmarks.pipeline import TARGET_SHARE_OF_LIMIT, limit_per_s

REQUIRED_KEYS = {
    "raw_e2e_per_s",
    "e2e_per_s",
    "rsa_private_ops_per_s_per_core",
    "limit_per_s",
    "ratio_to_limit",
    "crypto_cost_ratio",
    "raw_publish_per_s",
    "raw_consume_per_s",
    "producer_per_s",
    "consumer_sqlite_per_s",
    "consumer_postgres_per_s",
    "faststream_consumer_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "rss_before_mb",
    "rss_after_mb",
    "cores",
    "e2e_consumer_cpu_ms_per_message",
    "e2e_producer_cpu_ms_per_message",
    "e2e_cpu_ms_per_message",
    "target_cpu_ms_per_message",
    "raw_cpu_ms_per_message",
    "crypto_cpu_ms_per_message",
    "rss_max_mb",
    "e2e_in_process_per_s",
    "consumer_sqlite_in_process_per_s",
    "e2e_pool_per_s",
}


@pytest.mark.slow
def test_quick_bench_reports_every_figure_and_derives_the_ratios_from_them(
    amqp_url: str, postgres_url: str
) -> None:
    """The JSON has the agreed keys, all measured (positive), and the ratios are the
    documented functions of the measured figures."""
    env = {**os.environ, "KPR_AMQP_URL": amqp_url, "KPR_TEST_POSTGRES_URL": postgres_url}
    completed = subprocess.run(
        [sys.executable, "-m", "kpr", "bench", "--quick", "--json",
         "--messages", "60", "--memory-messages", "120"],
        env=env, capture_output=True, timeout=280, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode()[-2000:]
    result = orjson.loads(completed.stdout)

    assert result.keys() >= REQUIRED_KEYS
    for key in REQUIRED_KEYS:
        assert result[key] > 0, key
    assert result["quick"] is True
    assert result["memory_messages"] == 120
    assert result["group_commit_linger_ms"] == pytest.approx(10.0)  # the consumer's default
    limit = limit_per_s(
        result["raw_e2e_per_s"], result["rsa_private_ops_per_s_per_core"], result["cores"]
    )
    assert result["limit_per_s"] == pytest.approx(limit)
    assert result["ratio_to_limit"] == pytest.approx(result["e2e_per_s"] / limit)
    two_rsa_ops_s = 2 / result["rsa_private_ops_per_s_per_core"]
    assert result["crypto_cost_ratio"] == pytest.approx(
        (result["seal_s_per_message"] + result["open_s_per_message"]) / two_rsa_ops_s
    )
    # Both ways of opening ran; the faster is the figure, and the later phases ran so.
    assert result["e2e_per_s"] == max(result["e2e_in_process_per_s"], result["e2e_pool_per_s"])
    pooled = result["e2e_per_s"] == result["e2e_pool_per_s"]
    assert result["e2e_open_in"] == ("pool" if pooled else "process")
    for key in ("workers_rss_before_mb", "workers_rss_after_mb"):
        assert (result[key] is not None and result[key] > 0) if pooled else result[key] is None
    assert result["latency_p99_ms"] >= result["latency_p50_ms"]
    assert result["rss_max_mb"] >= max(result["rss_before_mb"], result["rss_after_mb"])
    # The CPU budget: the target's share of the limit, spread over the cores.
    cores = result["cores"]
    assert result["target_cpu_ms_per_message"] == pytest.approx(
        cores / (TARGET_SHARE_OF_LIMIT * limit) * 1e3
    )
    assert result["e2e_cpu_ms_per_message"] == pytest.approx(
        sum(result[f"e2e_{part}_cpu_ms_per_message"] for part in ("consumer", "producer", "other"))
    )
    assert result["e2e_cpu_ms_for_the_rest"] == pytest.approx(
        result["e2e_cpu_ms_per_message"]
        - result["raw_cpu_ms_per_message"]
        - result["crypto_cpu_ms_per_message"]
    )


@pytest.mark.slow
def test_sigterm_stops_a_bench_and_the_broker_it_started(tmp_path: Path) -> None:
    """A bench stopped by SIGTERM (as a CI runner or ``timeout`` stops it) exits 143,
    prints no traceback from any of its processes, and leaves no broker running and no
    work directory behind."""
    env = {key: value for key, value in os.environ.items() if key != "KPR_AMQP_URL"}
    env["TMPDIR"] = str(tmp_path)
    log = tmp_path / "bench.log"
    with log.open("wb") as stderr:
        bench = subprocess.Popen(
            [sys.executable, "-m", "kpr", "bench", "--quick", "--no-postgres"],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while b"openssl speed" not in log.read_bytes():  # the broker is up by then
                assert bench.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the bench did not start its broker"
                time.sleep(0.2)
            bench.send_signal(signal.SIGTERM)
            assert bench.wait(timeout=120) == 143, log.read_text()[-2000:]
        finally:
            if bench.poll() is None:
                bench.kill()
    assert b"interrupted" in log.read_bytes()
    assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]
    assert not list(tmp_path.glob("kpr-bench-*"))
    left = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert left.stdout == "", f"still running: {left.stdout}"
