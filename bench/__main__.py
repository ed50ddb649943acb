"""`python -m bench` (`make bench`): run the benchmark, print ONE JSON document, write bench/results/latest.json.

Progress goes to stderr; stdout carries only the JSON. `--quick` is the few-seconds smoke plan used by the test
suite; `--out PATH` writes elsewhere (`--out -` writes no file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bench.runner import Plan, execute

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="realtime-relay benchmark (docs/performance.md)")
    parser.add_argument("--quick", action="store_true", help="a few-seconds smoke run (tiny loads, short phases)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="result file (default bench/results/latest.json; '-' = none)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every benchmark process at this nice value (negative needs root): on a shared machine, keeps "
        "other work from landing in the figures",
    )
    parser.add_argument(
        "--memory-seconds",
        type=float,
        default=None,
        help="how long the memory phase's sessions stream before RSS is read (default 60, --quick 0.5)",
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    if args.memory_seconds is not None:
        if args.memory_seconds <= 0:
            parser.error("--memory-seconds must be positive")
        plan = dataclasses.replace(plan, memory_stream_s=args.memory_seconds)
    report = execute(plan, None if args.out == "-" else Path(args.out), nice=args.nice)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
