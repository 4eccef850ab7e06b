"""The top-level coroutine runs on uvloop when installed, and on asyncio's loop when disabled."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from kpr import eventloop
from kpr.logs import JsonFormatter


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_runs_the_coroutine_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop is a dev dependency, so here the loop is uvloop's and the result comes back."""
    monkeypatch.delenv(eventloop.UVLOOP_VARIABLE, raising=False)
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_kpr_uvloop_0_falls_back_to_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """KPR_UVLOOP=0 disables uvloop: no factory, and asyncio's own loop runs."""
    monkeypatch.setenv(eventloop.UVLOOP_VARIABLE, "0")
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()).startswith("asyncio")


async def _waiting_for_ever_to_be_dumped(release: asyncio.Event) -> None:
    await release.wait()


async def _dump_ourselves() -> str:
    release = asyncio.Event()
    waiter = asyncio.create_task(_waiting_for_ever_to_be_dumped(release), name="kpr-held-task")
    os.kill(os.getpid(), eventloop.DUMP_SIGNAL)
    await asyncio.sleep(0.05)  # the handler runs on the loop, between our steps
    release.set()
    await waiter
    return "went on"


def test_sigusr1_logs_every_task_with_its_stack_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dump names each task and where it waits; the coroutine still returns."""
    caplog.set_level(logging.WARNING, logger="kpr.diagnostics")
    assert eventloop.run(_dump_ourselves()) == "went on"
    held = [r for r in caplog.records if r.getMessage() == "task kpr-held-task"]
    assert len(held) == 1
    stack = getattr(held[0], "stack", "")
    assert "_waiting_for_ever_to_be_dumped" in stack
    assert '"stack"' in JsonFormatter().format(held[0])
