"""What the machine did: CPU seconds, resident memory, the CPU model (Linux ``/proc``).

The benchmark shares its machine with whatever else runs there, so it reads CPU per
process and for the whole machine, and prints both next to its rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from dataclasses import dataclass, field

from contracts.resources import AsyncResource

__all__ = ["RssSampler", "cpu_model", "cpu_s", "machine_busy_s", "rss_mb", "wait_until_quiet"]


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of process ``pid`` in MB."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy so far, every process on the machine."""
    with open("/proc/stat", encoding="ascii") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def wait_until_quiet(
    *, busy_share_below: float = 0.15, window_s: float = 0.5, at_most_s: float = 30.0
) -> float:
    """Wait until the machine's cores are less than ``busy_share_below`` busy over one
    ``window_s`` (a phase's leftovers: the broker compacting its log, PostgreSQL's
    autovacuum), for at most ``at_most_s``; returns the seconds waited. Each timed phase
    then starts from the same quiet machine, whatever ran before it."""
    cores = os.cpu_count() or 1
    started = time.monotonic()
    while time.monotonic() - started < at_most_s:
        busy_before = machine_busy_s()
        await asyncio.sleep(window_s)
        if (machine_busy_s() - busy_before) / (window_s * cores) < busy_share_below:
            break
    return time.monotonic() - started


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


@dataclass
class RssSampler(AsyncResource):
    """This process's RSS every ``interval_s`` while running (``async with``).

    Before/after alone would miss memory that grows and is given back, and cannot tell a
    warm-up (growth early, then flat) from a leak (growth all the way): the samples can.
    """

    interval_s: float = 1.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def aclose(self) -> None:
        """Stop sampling, with one last sample; harmless twice."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.samples.append((time.monotonic(), rss_mb()))

    async def _sample(self) -> None:
        while True:
            self.samples.append((time.monotonic(), rss_mb()))
            await asyncio.sleep(self.interval_s)

    @property
    def max_mb(self) -> float:
        return max(mb for _, mb in self.samples)

    def growth_in_second_half_mb(self) -> float:
        """RSS at the end minus RSS halfway through the run (by time): ~0 when flat."""
        start, end = self.samples[0][0], self.samples[-1][0]
        halfway = next(mb for at, mb in self.samples if at >= (start + end) / 2)
        return self.samples[-1][1] - halfway
