"""`python -m bench.profiled serve ...`: the unchanged relay CLI, or with BENCH_PROFILED_TARGET=reference the
reference relay, with `cProfile` switched on by a first SIGUSR1 and off by a second, which writes the stats to the
file named by BENCH_PROFILED_OUT (`bench.calls` drives it). Bench-only glue; the relay itself is untouched.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from types import FrameType


def main() -> int:
    profile = cProfile.Profile()
    out = os.environ["BENCH_PROFILED_OUT"]
    running = False

    def toggle(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        if running:
            profile.disable()
            profile.dump_stats(out)
        else:
            profile.enable()
        running = not running

    signal.signal(signal.SIGUSR1, toggle)
    if os.environ.get("BENCH_PROFILED_TARGET") == "reference":
        from bench.reference_relay import main as reference_main

        return reference_main(sys.argv[1:])
    from relay.cli.main import main as relay_main

    return relay_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
