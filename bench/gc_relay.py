"""`python -m bench.gc_relay serve ...`: the unchanged relay CLI with the garbage collector's pauses timed (and,
with BENCH_GC_TUNED=1, `gc.freeze()` after imports plus a larger young-generation threshold; with
BENCH_SWITCH_INTERVAL=S, `sys.setswitchinterval(S)`), to measure how much of the relay's latency tail is collector
pauses or GIL hand-offs to the event-log writer thread, and what tuning would buy (perf proposals).

Writes one JSON summary per generation to the file named by BENCH_GC_STATS when the relay exits; otherwise
bench-only glue around `relay.cli.main`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

TUNED_GEN0_THRESHOLD = 20_000


def main() -> int:
    pauses: dict[int, list[float]] = {}
    started = [0.0]

    def timer(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.setdefault(int(info["generation"]), []).append((time.perf_counter() - started[0]) * 1000.0)

    gc.callbacks.append(timer)
    # Import what `serve` uses before freezing, so the frozen generation holds the modules' objects.
    import aiohttp.web  # noqa: F401
    import picows  # noqa: F401

    import relay.cli.serve
    import relay.server.app  # noqa: F401
    from relay.cli.main import main as relay_main

    switch = os.environ.get("BENCH_SWITCH_INTERVAL")
    if switch:
        # How long a thread may hold the GIL while another waits: the event-log writer renders whole batches.
        sys.setswitchinterval(float(switch))
    tuned = os.environ.get("BENCH_GC_TUNED") == "1"
    if tuned:
        gc.freeze()
        gc.set_threshold(TUNED_GEN0_THRESHOLD, 20, 100)
    code = relay_main(sys.argv[1:])
    out = os.environ.get("BENCH_GC_STATS")
    if out:
        summary: dict[str, Any] = {
            "tuned": tuned,
            "thresholds": list(gc.get_threshold()),
            "switch_interval_s": sys.getswitchinterval(),
        }
        for generation, values in sorted(pauses.items()):
            values.sort()
            summary[f"gen{generation}"] = {
                "collections": len(values),
                "p50_ms": round(values[len(values) // 2], 3),
                "max_ms": round(values[-1], 3),
                "total_ms": round(sum(values), 1),
            }
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(summary, handle)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
