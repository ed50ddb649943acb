"""Profile the relay under load with py-spy (sampling, all threads, no pause) and summarize what costs most.

`record(pid, seconds)` runs `py-spy record --format raw` against a live process and returns a summary: the top
functions by self time and by inclusive time, time per thread, and a few buckets (JSON parsing, base64/sha256,
event log, aiohttp, picows, asyncio) as a percentage of one core. When py-spy is missing or not permitted,
the summary says why instead. I/O: one py-spy subprocess and its output file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure import CpuWindow

FRAME_RE = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

# Cost categories. A sample goes to the category of the frame nearest its leaf that matches one (so the
# base64 decoding the event log does lands in "base64_decode", not in "event_log"). Patterns are matched against
# `_frame_key`, which keeps the last three parts of a path ("relay/eventlog/records.py:audio_summary").
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base64_decode", ("base64.py:", "core/frames.py:b64_bytes")),
    ("sha256_audio_summary", ("eventlog/records.py:audio_summary",)),
    ("json_parse", ("core/frames.py:parse_event",)),
    ("log_timestamp_format", ("eventlog/records.py:__call__", "eventlog/records.py:_Rfc3339.__call__")),
    ("socket_write_syscalls", ("selector_events.py:_SelectorSocketTransport.write", "eventlog/writer.py:_write_all")),
    ("event_log(other)", ("eventlog/records.py:", "eventlog/writer.py:", "eventlog/session_log.py:")),
    ("metrics", ("relay/metrics.py:",)),
    ("recording", ("relay/recording/", "audio/resample.py", "audio/pcm.py")),
    ("session_core(other)", ("relay/core/",)),
    ("bridge(other)", ("relay/bridge.py:", "relay/retrieve_timers.py:")),
    ("client_side(aiohttp+wsclient)", ("aiohttp/", "links/client.py:")),
    ("upstream_side(picows)", ("links/upstream.py:", "links/upstream_listener.py:", "links/writebatch.py:", "trsock.py:")),
    ("kept_audio_spool", ("relay/spool.py:",)),
    ("gil_and_thread_wakeups", ("threading.py:",)),
    # The event loop: asyncio's selector loop in Python, or uvloop's compiled one, whose time (its socket reads
    # and writes included) py-spy sees as `asyncio.Runner.run` itself.
    ("event_loop_and_its_syscalls", ("asyncio/", "selectors.py:", "contextlib.py:")),
)


def py_spy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    return shutil.which("py-spy")


def _frame_key(frame: str) -> str:
    match = FRAME_RE.match(frame)
    if not match:
        return frame
    path = match.group("file")
    # Keep the last three path parts: enough to tell relay/core/session.py from aiohttp/web_ws.py and
    # relay/recording/ from numpy/_core/.
    short = "/".join(path.replace("\\", "/").split("/")[-3:])
    return f"{short}:{match.group('name')}"


def _bucket(keys: list[str]) -> str:
    for key in reversed(keys):
        for name, patterns in BUCKETS:
            if any(p in key for p in patterns):
                return name
    return "other"


def summarize_raw(text: str, cpu_percent: float | None = None, top: int = 20) -> dict[str, Any]:
    """Shares of py-spy's raw samples (percent of all non-idle samples) by thread, bucket and function.

    Sampling percentages of a core are unreliable for a process whose threads wait on the GIL (py-spy counts a
    GIL wait as running), so shares are reported, and, given the relay's CPU measured from /proc over the same
    window, each share is also turned into percent of one core ([name, share %, core %])."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        keys = [_frame_key(f) for f in frames if not f.startswith(("thread", "process"))]
        if not keys:
            continue
        total += count
        threads[thread] += count
        self_time[keys[-1]] += count
        for key in set(keys):
            inclusive[key] += count
        buckets[_bucket(keys)] += count

    def row(name: str, n: int) -> list[Any]:
        share = 100.0 * n / max(total, 1)
        return [name, round(share, 1), round(share * cpu_percent / 100.0, 1) if cpu_percent is not None else None]

    return {
        "samples": total,
        "columns": ["name", "share_of_samples_percent", "percent_of_one_core"],
        "by_thread": [row(k, v) for k, v in threads.most_common()],
        "buckets": [row(k, v) for k, v in buckets.most_common()],
        "top_self": [row(k, v) for k, v in self_time.most_common(top)],
        "top_inclusive": [row(k, v) for k, v in inclusive.most_common(top)],
    }


def record(
    pid: int, seconds: float, out: Path, *, rate: int = 200, core: int | None = None, gil_only: bool = False
) -> dict[str, Any]:
    """py-spy on `pid` for `seconds`; the relay's own CPU over the same window (from /proc) scales the shares.
    `gil_only`: sample only the thread holding the GIL (py-spy `--gil`), so threads waiting for it do not count."""
    tool = py_spy_path()
    if tool is None:
        return {"available": False, "reason": "py-spy is not installed (pip install py-spy)"}
    duration = max(1, round(seconds))
    argv = [tool, "record", "-p", str(pid), "-d", str(duration), "-r", str(rate), "-f", "raw", "-o", str(out)]
    argv += ["--threads", "--nonblocking", "--function"] + (["--gil"] if gil_only else [])
    if core is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(core), *argv]
    window = CpuWindow(pid)
    window.start(time.perf_counter())
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": f"py-spy failed to run: {exc}"}
    cpu = window.stop(time.perf_counter())
    if done.returncode != 0 or not out.exists():
        return {"available": False, "reason": f"py-spy exited {done.returncode}: {done.stderr.strip()[-500:]}"}
    summary = summarize_raw(out.read_text(errors="replace"), cpu["cpu_percent"])
    return {"available": True, "tool": "py-spy", "rate_hz": rate, "seconds": duration, "relay_cpu": cpu, **summary}
