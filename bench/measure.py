"""Measurement helpers for the benchmark: percentiles, /proc readers (CPU ticks, RSS, per-thread CPU), machine facts.

Reads /proc and a few version strings; writes nothing. Linux only (the benchmark pins processes to cores).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def summarize(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max/mean of `values` multiplied by `scale`, and the sample count."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None, "mean": None}
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 50) * scale, digits),
        "p90": round(percentile(ordered, 90) * scale, digits),
        "p99": round(percentile(ordered, 99) * scale, digits),
        "p999": round(percentile(ordered, 99.9) * scale, digits),
        "max": round(ordered[-1] * scale, digits),
        "mean": round(sum(ordered) / len(ordered) * scale, digits),
    }


def cpu_ticks(pid: int) -> int:
    """utime + stime of a whole process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (children, grandchildren...), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children.get(child, [])
    return out


def tree_cpu_ticks(pid: int) -> int:
    """CPU of a whole process tree in clock ticks: the process (all its threads), the children it has waited for,
    and every live descendant (a helper process's work counts as the relay's)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    total = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for child in descendants(pid):
        try:
            total += cpu_ticks(child)
        except (OSError, ValueError):
            continue  # it just ended
    return total


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its live descendants (KiB); shared pages count once per process, an upper bound."""
    total = rss_kib(pid)
    for child in descendants(pid):
        try:
            total += rss_kib(child)
        except (OSError, ValueError):
            continue
    return total


def thread_ticks(pid: int) -> dict[str, int]:
    """utime + stime per thread: "main" for the process's first thread, "<comm>-<tid>" for the others (Python
    threads all share the comm "python", so the tid is what tells the event loop from the log writer)."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        key = "main" if task.name == str(pid) else f"{name}-{task.name}"
        out[key] = int(fields[11]) + int(fields[12])
    return out


def core_busy() -> list[tuple[int, int]]:
    """(busy ticks, total ticks) per CPU from /proc/stat (busy = everything but idle and iowait)."""
    out: list[tuple[int, int]] = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            values = [int(v) for v in line.split()[1:]]
            total = sum(values[:8])  # guest time is already inside user
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            out.append((total - idle, total))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


@dataclass
class CpuWindow:
    """CPU used by a process tree between `start()` and `stop()`, as a percentage of one core."""

    pid: int
    _ticks: int = 0
    _threads: dict[str, int] | None = None
    _wall: float = 0.0

    def start(self, now: float) -> None:
        self._ticks = tree_cpu_ticks(self.pid)
        self._threads = thread_ticks(self.pid)
        self._wall = now

    def stop(self, now: float) -> dict[str, Any]:
        ticks = tree_cpu_ticks(self.pid) - self._ticks
        wall = max(now - self._wall, 1e-9)
        threads_now = thread_ticks(self.pid)
        before = self._threads or {}
        per_thread = {
            name: round(100.0 * (value - before.get(name, 0)) / CLOCK_TICKS / wall, 1) for name, value in threads_now.items()
        }
        return {
            "cpu_percent": round(100.0 * ticks / CLOCK_TICKS / wall, 1),
            "window_s": round(wall, 3),
            "per_thread_percent": {k: v for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if v > 0},
        }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": package_versions(["realtime-relay", "aiohttp", "websockets", "orjson", "structlog", "uvloop", "py-spy"]),
        "native_record_writer": native_record_writer(),
    }


def native_record_writer() -> bool:
    """Whether the relay measured writes its hot records in native code (built at install when a C compiler is
    there) or in the Python fallback: the two differ in CPU per record (docs/performance.md)."""
    from relay.eventlog.records import native_audio_record

    return native_audio_record is not None
