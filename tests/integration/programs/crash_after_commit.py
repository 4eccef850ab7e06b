"""A consumer that dies the moment its first commit returns, before the ack.

Run as a separate process by the tests: ``os._exit`` leaves no chance to ack, flush or
close, like ``kill -9`` at exactly that point. Settings come from the environment.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from consumers.processing import Disposition, Outcome, Processor
from kpr.config import Settings
from kpr.runtime import consume

_process = Processor.process


async def _process_then_die(self: Processor, body: bytes, **kwargs: Any) -> Outcome:
    outcome = await _process(self, body, **kwargs)
    if outcome.disposition is Disposition.COMMITTED:
        os._exit(137)
    return outcome


Processor.process = _process_then_die  # type: ignore[method-assign]
asyncio.run(consume(Settings.from_env(), until_idle_s=10.0))
