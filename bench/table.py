"""`python -m bench.table [bench/results/latest.json]`: the README's figures-versus-targets table, in Markdown,
from a benchmark result file. Reads the file, prints to stdout; nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).resolve().parent / "results" / "latest.json"


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return f"{value}{unit}"


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("met" if flag else "**missed**")


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    layout = report["layout"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpus_online']} CPUs, Python {machine['python']}, "
        f"aiohttp {machine['packages'].get('aiohttp')}, websockets {machine['packages'].get('websockets')}, "
        f"native record writer {'on' if machine.get('native_record_writer') else 'off (Python fallback)'}; "
        f"{layout['note']}; {layout.get('priority', 'default priority')}. Run {report['started_utc']}, "
        f"{report['duration_s']} s. Command: `make bench` (or `.venv/bin/python -m bench`).",
        "",
        "| Target | Goal | Measured (event files on) | Verdict | Floor: a byte splice, same run |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["targets"].items():
        how = f" ({entry['how']})" if entry.get("how") else ""
        floor = _fmt(entry["asyncio_splice_floor"]) if "asyncio_splice_floor" in entry else "n/a"
        lines.append(f"| {name} | {entry['target']} | {_fmt(entry['measured'])}{how} | {_met(entry['met'])} | {floor} |")
    rows = report.get("comparison") or {}
    if rows:
        workload = report["workload"]
        mid_n, top_n = workload.get("mid_sessions"), workload.get("efficiency_sessions")
        lines += [
            "",
            f"| Relay | CPU % of one core at {mid_n} / {top_n} sessions (whole process tree) | p99 at {mid_n} sessions (ms) "
            "| flood round trips/s | CPU us per round trip at {top_n} / flood |".replace("{top_n}", str(top_n)),
            "|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            top = _fmt(row.get("cpu_percent_at_top"))
            offered = row.get("cpu_percent_at_top_offered")
            if offered is not None and offered != row.get("cpu_percent_at_top"):
                top += f" (saturated: {_fmt(offered)} at the offered load)"
            lines.append(
                f"| {name} | {_fmt(row.get('cpu_percent_at_mid'))} / {top} | {_fmt(row.get('p99_ms_at_mid'))} "
                f"| {_fmt(row.get('flood_round_trips_per_s'))} "
                f"| {_fmt(row.get('cpu_us_per_round_trip_at_top'))} / {_fmt(row.get('flood_cpu_us_per_round_trip'))} |"
            )
    lines += [
        "",
        "| Logging variant | added p50 / p99 / max (ms) | flood rt/s (ratio to direct) | CPU % at 200 (delivered) "
        "| CPU us per round trip (50 / 200 real-time sessions / flood) | relay / echo CPU at 200 |",
        "|---|---|---|---|---|---|",
    ]
    for name, summary in report["summary"].items():
        if name == "direct":
            continue
        lat = summary["added_latency_ms"] or {}
        measured_keys = (k for k in summary if k.startswith("relay_cpu_percent_at_") and not k.endswith("offered_load"))
        cpu_key = next(measured_keys, "")
        lines.append(
            f"| {name} | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p99'))} / {_fmt(lat.get('max'))} "
            f"| {_fmt(summary['flood_round_trips_per_s'])} ({_fmt(summary['flood_ratio_to_direct'])}) "
            f"| {_fmt(summary.get(cpu_key))} ({_fmt(summary.get('delivered_ratio'))}) "
            f"| {_fmt(summary.get('light_load_cpu_us_per_round_trip'))} / {_fmt(summary.get('relay_cpu_us_per_round_trip'))} "
            f"/ {_fmt(summary.get('flood_cpu_us_per_round_trip'))} "
            f"| {_fmt(summary.get('relay_to_echo_cpu_ratio'))} |"
        )
    direct = report["summary"]["direct"]
    rtt = direct["rtt_ms_at_latency_sessions"]
    memory = report.get("memory") or {}
    lines += [
        "",
        f"Direct (no relay): RTT p50 {_fmt(rtt['p50'])} ms, p99 {_fmt(rtt['p99'])} ms at 10 sessions; flood "
        f"{_fmt(direct['flood_round_trips_per_s'])} round trips/s. Memory: {_fmt(memory.get('idle_per_session_kib'))} KiB "
        f"per idle session, {_fmt(memory.get('active_per_session_kib'))} KiB per active session after "
        f"{_fmt((memory.get('active') or [{}])[-1].get('after_s'))} s (growing "
        f"{_fmt(memory.get('active_growth_kib_per_session_per_s'))} KiB/s); RSS at {_fmt(memory.get('sessions'))} "
        f"streaming sessions {_fmt(memory.get('streaming_rss_mib'))} MiB. Capacity: {report['capacity'].get('extrapolation')}.",
    ]
    head_to_head = report.get("head_to_head") or {}
    if head_to_head.get("rounds"):
        lines += [
            "",
            "| Head to head (interleaved rounds, each side a fresh process) | CPU % at 200 sessions | CPU us per round "
            "trip at 200 | flood round trips/s |",
            "|---|---|---|---|",
        ]
        for number, round_ in enumerate(head_to_head["rounds"], start=1):
            for side in round_["order"]:
                got = round_[side]
                lines.append(
                    f"| round {number}: {side} | {_fmt(got.get('cpu_percent_at_offered_load'))} "
                    f"| {_fmt(got.get('cpu_us_per_round_trip'))} | {_fmt(got.get('flood_round_trips_per_s'))} |"
                )
        for side, got in (head_to_head.get("median") or {}).items():
            lines.append(
                f"| **median: {side}** | {_fmt(got.get('cpu_percent_at_offered_load'))} "
                f"| {_fmt(got.get('cpu_us_per_round_trip'))} | {_fmt(got.get('flood_round_trips_per_s'))} |"
            )
    experiments = {k: v for k, v in (report.get("experiments") or {}).items() if v.get("available")}
    if experiments:
        lines += [
            "",
            "| What-if experiment (files on) | added p50 / p99 (ms) | flood us/rt | us/rt at 200 (delivered) "
            "| slowest GC pause (ms) | sessions at p99 < 5 ms |",
            "|---|---|---|---|---|---|",
        ]
        for name, exp in experiments.items():
            lat = exp.get("added_latency_ms") or {}
            pauses = exp.get("gc_pauses") or {}
            slowest = max((g["max_ms"] for key, g in pauses.items() if key.startswith("gen")), default=None)
            cap = (exp.get("capacity") or {}).get("sessions_per_core")
            lines.append(
                f"| {name} | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p99'))} "
                f"| {_fmt((exp.get('flood_cpu') or {}).get('relay_cpu_us_per_round_trip'))} "
                f"| {_fmt(exp.get('relay_cpu_us_per_round_trip'))} ({_fmt(exp.get('delivered_ratio'))}) "
                f"| {_fmt(slowest)} | {_fmt(cap) if exp.get('capacity') else 'not swept'} |"
            )
    if report.get("notes"):
        lines += ["", "Notes: " + " ".join(report["notes"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"bench.table: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(render(report))
    except (KeyError, TypeError) as exc:
        print(f"bench.table: {path} is not a benchmark result: {exc!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
