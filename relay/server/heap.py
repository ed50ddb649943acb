"""Giving the heap's free memory back to the OS after sessions end (glibc's `malloc_trim`).

glibc keeps what a process frees for its next allocations, and small allocations still alive between freed large
ones keep the heap from shrinking. After a slow client's backlog (megabytes of frames) or a long retrieved item,
a relay's RSS stayed tens of MiB above its start once those sessions were gone: 60 -> 119 MiB over five rounds of
two slow clients, each sent ~36 MB it never read. `malloc_trim(0)` returns every free page, the middle of the
heap included (docs/performance.md, "Memory after sessions end").

It holds the allocator's lock for a few milliseconds, so it runs on a worker thread, at most once per
`MIN_INTERVAL_S`, one second after a session ended (its buffers are freed by then); a session that ends while a
trim is pending or too recent is covered by the next one. Nothing happens where the C library has no
`malloc_trim` (not glibc).
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Callable
from typing import Final

MIN_INTERVAL_S: Final = 10.0
AFTER_SESSION_S: Final = 1.0


def find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Call `session_ended()` on the event loop when a session is over. `trim` is `find_malloc_trim()`'s answer."""

    def __init__(self, trim: Callable[[int], int] | None, *, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self._trim = trim
        self._min_interval_s = min_interval_s
        self._last = float("-inf")
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def session_ended(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        delay = max(AFTER_SESSION_S, self._last + self._min_interval_s - time.monotonic())
        self._pending = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        self.trims += 1
        asyncio.get_running_loop().run_in_executor(None, self._run)

    def _run(self) -> None:
        assert self._trim is not None
        self._trim(0)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
