"""`python -m bench.ab --a REV --b REV [--rounds N] [--variant files] [--reference] [--phases top,mid,flood]`: an
interleaved A/B of two trees of the relay (with `--reference`, the reference relay as a third side, R).

Single runs on a shared VM spread by 10% or more, so a design change is judged here: both revisions (git revs of
this repository, or `.` for the working tree) run against the same echo upstream, alternating A, B, A, B... for
`--rounds` rounds, each a fresh relay measured at 200 and 100 real-time sessions and in flood (`--phases` picks
some of them: `--phases flood` for a flood-only change). The figure compared is CPU
seconds per round trip of the relay's whole process tree (robust to other work on the machine, unlike wall time),
plus p99 at 100 sessions and flood round trips/s. Prints one JSON document (per round and the medians).
I/O: `git archive` into a temporary directory (plus `setup.py build_ext` there), the subprocesses of `bench.relayproc`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.relayproc import VARIANTS, EchoProcess, RelayProcess, run_loadgen
from bench.runner import Layout, cpu_cost, log, relay_cpu

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, into: Path) -> Path:
    """The tree of `rev` as a directory (`.`: this working tree itself, as installed), its native module built in
    place as an install builds it, so both sides run what users run."""
    if rev == ".":
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    if (into / "setup.py").exists():  # optional, as at install: without a compiler that side runs the Python builder
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=into, capture_output=True, check=False)
    return into


def has_native_writer(tree: Path) -> bool:
    """Whether `tree` holds a built native record writer (else that side runs the Python builder)."""
    return any((tree / "relay" / "eventlog").glob("_flatrecord*.so"))


def measure(
    tree: Path | None, variant: str, echo: EchoProcess, layout: Layout, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One side's phases in a fresh process: the relay of `tree`, or (None) the reference relay."""
    if tree is None:
        relay = RelayProcess(variant, echo.url, workdir, layout.relay_core, wrapper="bench.reference_relay", label="reference")
    else:
        relay = RelayProcess(variant, echo.url, workdir, layout.relay_core, extra_env={"PYTHONPATH": f"{tree}:{ROOT}"})
    relay.start()
    try:
        out: dict[str, Any] = {}
        phases = (("top", "realtime", args.sessions), ("mid", "realtime", args.mid), ("flood", "flood", 10))
        for name, mode, sessions in (phase for phase in phases if phase[0] in args.phases):
            spec = {
                "url": relay.url, "mode": mode, "sessions": sessions, "warmup_s": 1.0, "measure_s": args.seconds,
                "window": 16, "watch": {"relay": relay.pid},
            }  # fmt: skip
            result = run_loadgen(spec, layout.peers_core)
            relay.wait_sessions(0)
            out[name] = {
                "cpu_percent": relay_cpu(result),
                "round_trips_per_s": result["round_trips_per_s"],
                "p99_ms": result["rtt_ms"]["p99"],
                **cpu_cost(result, sessions if mode == "realtime" else None),
            }
        return out
    finally:
        relay.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("--a", required=True, help="git revision of A ('.' = the working tree)")
    parser.add_argument("--b", default=".", help="git revision of B (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", default="files", choices=sorted(VARIANTS))
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--mid", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--reference", action="store_true", help="interleave the reference relay as a third side, R")
    parser.add_argument(
        "--phases", default="top,mid,flood", help="which phases each side runs, comma-separated (default: top,mid,flood)"
    )
    args = parser.parse_args(argv)
    args.phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    unknown = sorted(set(args.phases) - {"top", "mid", "flood"})
    if unknown or not args.phases:
        parser.error(f"--phases takes top, mid and flood (got {', '.join(unknown) or 'none'})")
    layout = Layout.detect()
    with tempfile.TemporaryDirectory(prefix="relay-ab-") as tmp:
        trees: dict[str, Path | None] = {"A": export(args.a, Path(tmp) / "a"), "B": export(args.b, Path(tmp) / "b")}
        if args.reference:
            trees["R"] = None
        sides = tuple(trees)
        native = {side: tree is not None and has_native_writer(tree) for side, tree in trees.items()}
        echo = EchoProcess(layout.peers_core)
        echo.start()
        rounds: list[dict[str, Any]] = []
        try:
            for i in range(args.rounds):
                order = sides if i % 2 == 0 else sides[::-1]
                row: dict[str, Any] = {}
                for side in order:
                    log(f"round {i + 1}: {side}")
                    row[side] = measure(trees[side], args.variant, echo, layout, Path(tmp), args)
                rounds.append(row)
        finally:
            echo.stop()

    def median(side: str, phase: str, key: str) -> float | None:
        values = [r[side][phase][key] for r in rounds if r[side].get(phase, {}).get(key) is not None]
        return round(statistics.median(values), 2) if values else None

    summary = {
        side: {
            "us_per_round_trip_at_top": median(side, "top", "relay_cpu_us_per_round_trip"),
            "cpu_percent_at_top": median(side, "top", "cpu_percent"),
            "cpu_percent_at_mid": median(side, "mid", "cpu_percent"),
            "p99_ms_at_mid": median(side, "mid", "p99_ms"),
            "flood_round_trips_per_s": median(side, "flood", "round_trips_per_s"),
            "flood_us_per_round_trip": median(side, "flood", "relay_cpu_us_per_round_trip"),
        }
        for side in sides
    }
    report = {"a": args.a, "b": args.b, "variant": args.variant, "native_record_writer": native, "rounds": rounds}
    json.dump({**report, "median": summary}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
