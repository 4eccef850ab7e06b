"""The one shape every resource has (after trio's ``AsyncResource``).

``aclose()`` releases the resource and is harmless to call twice; ``async with`` calls
it on the way out, whatever the outcome, and never swallows the exception (or the
cancellation) that ended the block.
"""

from __future__ import annotations

from types import TracebackType

__all__ = ["AsyncResource"]


class AsyncResource:
    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
