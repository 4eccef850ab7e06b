"""The top-level coroutine runs on uvloop when installed, and on asyncio's loop when disabled."""

from __future__ import annotations

import asyncio

import pytest

from kpr import eventloop


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
