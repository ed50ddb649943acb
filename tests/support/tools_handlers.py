"""Server-tool handlers for the tool tests, named in `tools` settings as `python:tests.support.tools_handlers:NAME`.

Real handlers, as an operator would write them: each does one thing a test needs (answer, fail, hang, be slow).
`EVENTS` lets a test see from its own thread or loop what a handler did, without sleeping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from relay.tools import ToolContext

SYNC_HANG = threading.Event()  # set by a test to let `hang_sync` return
STARTED: dict[str, threading.Event] = {}  # call_id -> set when the handler began


def _started(context: ToolContext) -> None:
    STARTED.setdefault(context.call_id, threading.Event()).set()


def lookup(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Sync: echoes its arguments with the thread it ran on."""
    return {"found": arguments, "thread": threading.current_thread().name}


async def context_of(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Async: what the relay told it about the call."""
    return {"session_id": context.session_id, "call_id": context.call_id, "tool": context.tool, "arguments": arguments}


def explode(arguments: dict[str, Any], context: ToolContext) -> str:
    raise RuntimeError("the order database is down")


CANCELLED: set[str] = set()  # call ids whose async handler saw its cancellation


async def hang(arguments: dict[str, Any], context: ToolContext) -> str:
    _started(context)
    try:
        await asyncio.Event().wait()  # never set: only a timeout or a cancellation ends it
    except asyncio.CancelledError:
        CANCELLED.add(context.call_id)
        raise
    return "unreachable"


def hang_sync(arguments: dict[str, Any], context: ToolContext) -> str:
    _started(context)
    SYNC_HANG.wait(timeout=30)
    return "late"


async def slow(arguments: dict[str, Any], context: ToolContext) -> str:
    """Answers after `ms` milliseconds (default 300): long enough for a client to act first."""
    delay = arguments.get("ms", 300)
    await asyncio.sleep(float(delay) / 1000.0 if isinstance(delay, (int, float)) else 0.3)
    return "slow done"


def not_serializable(arguments: dict[str, Any], context: ToolContext) -> object:
    return {"when": object()}


def big(arguments: dict[str, Any], context: ToolContext) -> str:
    return "x" * int(arguments.get("n", 100_000))


NOT_A_FUNCTION = 42


GATE = threading.Event()  # set by a test to let `gated` answer


def gated(arguments: dict[str, Any], context: ToolContext) -> str:
    """Sync: answers once the test opens the gate (so the test decides what happens first)."""
    _started(context)
    GATE.wait(timeout=30)
    return "gate opened"


def exits(arguments: dict[str, Any], context: ToolContext) -> str:
    """Sync: a handler that calls sys.exit (a script turned into a tool)."""
    raise SystemExit(3)


async def exits_async(arguments: dict[str, Any], context: ToolContext) -> str:
    raise SystemExit(4)


def interrupts(arguments: dict[str, Any], context: ToolContext) -> str:
    raise KeyboardInterrupt


async def stubborn(arguments: dict[str, Any], context: ToolContext) -> str:
    """Async: swallows its cancellation and answers a second later anyway."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(1.0)
    return "ignored the cancellation"


async def cancels_itself(arguments: dict[str, Any], context: ToolContext) -> str:
    """Async: awaits work that someone else cancelled, so a CancelledError comes out of the handler itself."""
    other = asyncio.get_running_loop().create_future()
    other.cancel()
    return str(await other)


def cancels_itself_sync(arguments: dict[str, Any], context: ToolContext) -> str:
    raise asyncio.CancelledError("the library gave up")


class HandlerGaveUp(BaseException):
    """Not an Exception: what a careless library may raise."""


async def gives_up(arguments: dict[str, Any], context: ToolContext) -> str:
    raise HandlerGaveUp("no")


def gives_up_sync(arguments: dict[str, Any], context: ToolContext) -> str:
    raise HandlerGaveUp("no")


STUBBORN_RELEASE = threading.Event()  # set by a test to let `stubborn_forever` end


async def stubborn_forever(arguments: dict[str, Any], context: ToolContext) -> str:
    """Async: swallows every cancellation until the test lets it go."""
    while not STUBBORN_RELEASE.is_set():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            CANCELLED.add(context.call_id)
    return "finally"


async def blocks(arguments: dict[str, Any], context: ToolContext) -> str:
    """Async, but calls something blocking (a sync HTTP client, say) for `ms` milliseconds."""
    time.sleep(float(arguments.get("ms", 500)) / 1000.0)
    return "blocked and done"
