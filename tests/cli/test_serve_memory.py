"""`serve` hands freed large buffers back to the OS (relay.cli.serve.return_large_buffers_to_the_os).

glibc raises its mmap threshold after a large mapping is freed, so later large buffers come from a heap it keeps;
with small allocations alive between them (as a relay's frames and records are), freeing them returns nothing.
Each case runs in a fresh interpreter, so the allocator's state is its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.timing import seconds

SCRIPT = """
import sys
from relay.cli.serve import return_large_buffers_to_the_os
if sys.argv[1] == "tuned":
    assert return_large_buffers_to_the_os()
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
print(rss_mib() - base)
"""


def retained_mib(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=seconds(60)
    )
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (mallopt) is what is tuned")
def test_freed_large_buffers_go_back_to_the_os_once_tuned() -> None:
    assert retained_mib("plain") > 32  # what the tuning is for: the heap keeps the freed backlog
    assert retained_mib("tuned") < 4
