"""Free heap memory goes back to the OS after sessions end (relay.server.heap).

The allocator's behaviour runs in a fresh interpreter, so its state is its own: glibc serves buffers up to its
raised mmap threshold from a heap that small live allocations pin, and `malloc_trim(0)` returns those pages."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from relay.server import heap
from relay.server.heap import HeapTrimmer, find_malloc_trim
from tests.support.timing import seconds

SCRIPT = """
import sys
from relay.server.heap import find_malloc_trim
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
first = bytearray(8 << 20)
del first  # glibc now serves buffers up to 8 MiB from its heap
base = rss_mib()
kept, chunks = [], []
for _ in range(64):
    chunks.append(bytearray(1 << 20))  # a slow client's backlog: 64 MiB of 1 MiB frames
    kept.append(bytes(600))  # small buffers allocated between them, still alive after them
del chunks
if sys.argv[1] == "trimmed":
    find_malloc_trim()(0)
print(rss_mib() - base)
"""


def retained_mib(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=seconds(60))
    return float(done.stdout)


def test_a_trim_gives_back_the_free_pages_the_heap_kept() -> None:
    assert HeapTrimmer(find_malloc_trim()).available  # glibc here
    assert retained_mib("plain") > 32  # what the trim is for
    assert retained_mib("trimmed") < 4


async def test_sessions_ending_together_get_one_trim_after_they_end_then_one_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "AFTER_SESSION_S", 0.01)
    calls: list[int] = []
    trimmer = HeapTrimmer(calls.append, min_interval_s=0.2)
    for _ in range(5):
        trimmer.session_ended()
    await asyncio.sleep(0.1)
    assert calls == [0] and trimmer.trims == 1
    trimmer.session_ended()  # within the interval: deferred to its end, not dropped
    await asyncio.sleep(0.05)
    assert calls == [0]
    async with asyncio.timeout(seconds(5)):
        while len(calls) < 2:
            await asyncio.sleep(0.01)
    assert calls == [0, 0]


async def test_without_malloc_trim_nothing_is_scheduled() -> None:
    trimmer = HeapTrimmer(None)  # a C library without malloc_trim
    trimmer.session_ended()
    assert trimmer.trims == 0 and not trimmer.available
