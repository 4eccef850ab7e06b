"""The benchmark's machine readings: RSS sampling tells a warm-up from a leak."""

from __future__ import annotations

import asyncio
import os
import sys

from kpr.benchmarks.machine import RssSampler, cpu_s, machine_busy_s, rss_mb, wait_until_quiet


def test_growth_in_the_second_half_ignores_a_warm_up_and_shows_a_leak() -> None:
    warm_up = RssSampler(samples=[(0, 100), (1, 150), (2, 150), (3, 151), (4, 150)])
    leak = RssSampler(samples=[(0, 100), (1, 125), (2, 150), (3, 175), (4, 200)])
    assert warm_up.growth_in_second_half_mb() == 0
    assert warm_up.max_mb == 151
    assert leak.growth_in_second_half_mb() == 50


async def test_the_sampler_sees_memory_this_process_takes_while_it_runs() -> None:
    held: list[bytearray] = []
    async with RssSampler(interval_s=0.01) as sampler:
        await asyncio.sleep(0.3)
        held.append(bytearray(b"\x01") * (64 * 1024 * 1024))  # written, so resident
        await asyncio.sleep(0.05)
    assert sampler.samples[-1][1] - sampler.samples[0][1] > 50
    assert sampler.max_mb >= sampler.samples[-1][1]
    assert sampler.growth_in_second_half_mb() > 50  # taken late in the run: not a warm-up
    del held


def test_cpu_and_busy_seconds_advance_with_work() -> None:
    own, busy = cpu_s(os.getpid()), machine_busy_s()
    total = 0
    for number in range(3_000_000):
        total += number * number
    assert total > 0
    assert cpu_s(os.getpid()) > own
    assert machine_busy_s() > busy
    assert rss_mb() > 10


async def test_waiting_for_a_quiet_machine_outlasts_a_busy_core_but_is_bounded() -> None:
    """One core kept busy is more than the threshold: the wait runs to its bound."""
    cores = os.cpu_count() or 1
    busy = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        await asyncio.sleep(0.2)
        waited = await wait_until_quiet(busy_share_below=0.5 / cores, window_s=0.2, at_most_s=1.0)
    finally:
        busy.kill()
        await busy.wait()
    assert 1.0 <= waited < 2.0
