"""A check shared by tests of callback-driven code: nothing may reach the event loop's exception handler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def no_unhandled_loop_errors() -> AsyncIterator[None]:
    """Fails the test when anything inside reported an error to the running loop's exception handler (an
    exception escaping a protocol callback, a task never awaited...)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
