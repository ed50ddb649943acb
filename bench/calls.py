"""`python -m bench.calls [--mode realtime|flood] [--sessions N] [--variant V] [--reference]`: Python function calls
per round trip inside the running relay (or the reference relay), counted by `cProfile` over a window of a load
run, in total and by module (a builtin counts for the module that called it). Deterministic where CPU figures are
noisy: it says how much Python each frame executes and where (docs/performance.md, "The fifth round").

Counts are normalized by a function that runs exactly once per frame each way (the relay's `parse_event`, the
reference's `json.loads`), not by the load generator's rate, which profiling slows. Prints one JSON document.
I/O: the subprocesses of `bench.relayproc` and the profile file in a temporary directory.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.relayproc import VARIANTS, EchoProcess, RelayProcess, run_loadgen
from bench.runner import Layout

# (file name ends with, function name): called once per client frame and once per upstream frame.
ANCHORS = {"relay": ("relay/core/frames.py", "parse_event"), "reference": ("json/__init__.py", "loads")}
WARMUP_S = 2.0


def _module(filename: str) -> str:
    return "/".join(Path(filename).parts[-2:]) if filename != "~" else "builtins"


def calls_per_round_trip(stats_file: Path, anchor: tuple[str, str]) -> dict[str, Any]:
    """Total calls and calls by module per round trip, from one cProfile stats file."""
    stats: dict[Any, Any] = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    by_module: collections.Counter[str] = collections.Counter()
    anchor_calls = 0
    for (filename, _line, name), (_prim, calls, _tt, _ct, callers) in stats.items():
        if filename.endswith(anchor[0]) and name == anchor[1]:
            anchor_calls += calls
        if filename == "~":  # a builtin: counted for whoever called it
            for (caller_file, _cl, _cn), caller_row in callers.items():
                by_module[_module(caller_file)] += caller_row[1]
        else:
            by_module[_module(filename)] += calls
    if anchor_calls == 0:
        raise RuntimeError(f"{anchor[1]} never ran in the profiled window: no round trip to count")
    round_trips = anchor_calls / 2
    return {
        "round_trips_profiled": round(round_trips),
        "calls_per_round_trip": round(sum(by_module.values()) / round_trips, 1),
        "by_module": {name: round(n / round_trips, 1) for name, n in by_module.most_common() if n / round_trips >= 0.5},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    target = "reference" if args.reference else "relay"
    layout = Layout.detect()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "calls.prof"
        env = {"BENCH_PROFILED_OUT": str(out), "BENCH_PROFILED_TARGET": target}
        echo = EchoProcess(layout.peers_core)
        echo.start()
        relay = RelayProcess(args.variant, echo.url, Path(tmp), layout.relay_core, wrapper="bench.profiled", extra_env=env)
        try:
            relay.start()
            spec = {
                "url": relay.url, "mode": args.mode, "sessions": args.sessions, "warmup_s": WARMUP_S,
                "measure_s": args.seconds + 1.0, "window": 16, "watch": {"relay": relay.pid},
            }  # fmt: skip

            def window() -> None:  # profile `seconds` inside the generator's measured stretch
                time.sleep(WARMUP_S + 0.5)
                os.kill(relay.pid, signal.SIGUSR1)
                time.sleep(args.seconds)
                os.kill(relay.pid, signal.SIGUSR1)

            toggler = threading.Thread(target=window)
            toggler.start()
            load = run_loadgen(spec, layout.peers_core)
            toggler.join()
            deadline = time.monotonic() + 10.0
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            counted = calls_per_round_trip(out, ANCHORS[target])
        finally:
            relay.stop()
            echo.stop()
    return {
        "target": target, "variant": None if args.reference else args.variant, "mode": args.mode,
        "sessions": args.sessions, "round_trips_per_s": load["round_trips_per_s"], **counted,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls")
    parser.add_argument("--mode", choices=["realtime", "flood"], default="realtime")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--variant", default="files", choices=sorted(VARIANTS))
    parser.add_argument("--reference", action="store_true", help="count the reference relay instead")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the profiled window")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.seconds <= 0:
        parser.error("--sessions must be >= 1 and --seconds > 0")
    print(json.dumps(measure(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
