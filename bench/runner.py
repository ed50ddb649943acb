"""One benchmark run: the phases, the report, the verdict on each target.

Layout on a machine with at least two CPUs: the relay under test alone on core 0; the echo upstream and the
load generator (separate processes) on core 1. With one CPU nothing is pinned and the report says so.
Phases (each a few seconds): direct baseline (latency at 10 sessions, flood, session sweep) -> for each logging
variant a fresh relay (latency at 10, flood, CPU and p99 at 50, 100 and 200 real-time sessions) -> on the default
variant the session sweep and a py-spy profile -> the same phases for the peers (the reference relay, the splice
floor) -> memory: RSS per idle session and after a configurable stretch of streaming (a fresh relay) -> head to
head: interleaved rounds of the product and the reference relay for the targets set against it -> what-if
experiments (GC pauses, the relay on asyncio's own loop, the floors). CPU and RSS are of the relay's whole process tree.
Writes nothing but the run's temporary directory and the result file; prints progress to stderr.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profiling
from bench.measure import core_busy, machine, tree_rss_kib
from bench.relayproc import VARIANTS, EchoProcess, InteractiveLoadgen, RelayProcess, bench_env, pinned_command, run_loadgen

DEFAULT_VARIANT = "files"
CHUNKS_PER_SECOND = 50  # 20 ms chunks


@dataclass(frozen=True)
class Plan:
    """How long and how hard each phase runs. `full()` is `make bench`; `quick()` is the smoke test."""

    warmup_s: float
    measure_s: float
    latency_sessions: int
    flood_sessions: int
    flood_window: int
    sweep_steps: tuple[int, ...]
    sweep_measure_s: float
    efficiency_sessions: int
    sustainable_sessions: int
    mid_sessions: int
    memory_sessions: int
    memory_stream_s: float
    profile_s: float
    # Interleaved rounds of the product (defaults) and the reference relay, each a fresh process, for the two
    # targets judged against the reference (`Run.head_to_head`).
    head_to_head_rounds: int
    variants: tuple[str, ...] = tuple(VARIANTS)
    experiments: bool = True

    @classmethod
    def full(cls) -> Plan:
        return cls(
            warmup_s=1.0,
            measure_s=4.0,
            latency_sessions=10,
            flood_sessions=10,
            flood_window=16,
            sweep_steps=(50, 100, 200, 400, 800, 1600),
            sweep_measure_s=3.0,
            efficiency_sessions=200,
            sustainable_sessions=50,
            mid_sessions=100,
            memory_sessions=200,
            memory_stream_s=60.0,
            profile_s=4.0,
            head_to_head_rounds=4,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            warmup_s=0.2,
            measure_s=0.6,
            latency_sessions=3,
            flood_sessions=2,
            flood_window=4,
            sweep_steps=(4, 8),
            sweep_measure_s=0.5,
            efficiency_sessions=5,
            sustainable_sessions=3,
            mid_sessions=4,
            memory_sessions=5,
            memory_stream_s=0.5,
            profile_s=0.0,
            head_to_head_rounds=1,
            variants=(DEFAULT_VARIANT, "off"),
            experiments=False,
        )

    @property
    def memory_checkpoints_s(self) -> tuple[float, ...]:
        """When RSS is read while the sessions stream: halfway (for the growth rate) and at the end."""
        return (self.memory_stream_s / 2, self.memory_stream_s)


# The targets (docs/performance.md names each measurement and its target).
TARGET_ADDED_P50_MS = 0.1
TARGET_ADDED_P99_MS = 1.0
TARGET_CPU_AT_200_PERCENT = 25.0
TARGET_SESSIONS_PER_CORE = 500
SWEEP_P99_ADDED_LIMIT_MS = 5.0
TARGET_FLOOD_RATIO = 0.8
TARGET_IDLE_KIB = 100.0
TARGET_P99_AT_100_MS = 3.0
TARGET_STREAMING_RSS_MIB = 150.0
# The generator "keeps up" while its sends leave on schedule and every round trip comes back.
KEEP_UP_LATENESS_P99_MS = 5.0
KEEP_UP_DELIVERY_RATIO = 0.98
BUSY_MACHINE_PERCENT = 15.0


def log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


@dataclass
class Layout:
    relay_core: int | None
    peers_core: int | None
    note: str

    @classmethod
    def detect(cls) -> Layout:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) >= 2:
            return cls(cpus[0], cpus[1], f"relay on core {cpus[0]}; echo upstream and load generator on core {cpus[1]}")
        return cls(None, None, "fewer than 2 usable CPUs: nothing pinned, everything shares one core")


@dataclass
class Run:
    plan: Plan
    workdir: Path
    layout: Layout = field(default_factory=Layout.detect)
    echo: EchoProcess | None = None
    notes: list[str] = field(default_factory=list)

    # ---- helpers ----------------------------------------------------------------------------------------
    def spec(
        self, url: str, mode: str, sessions: int, *, measure_s: float | None = None, relay_pid: int | None = None
    ) -> dict[str, Any]:
        assert self.echo is not None
        watch = {"echo": self.echo.pid}
        if relay_pid is not None:
            watch["relay"] = relay_pid
        return {
            "url": url,
            "mode": mode,
            "sessions": sessions,
            "warmup_s": self.plan.warmup_s,
            "measure_s": self.plan.measure_s if measure_s is None else measure_s,
            "window": self.plan.flood_window,
            "watch": watch,
        }

    def load(self, spec: dict[str, Any], relay: RelayProcess | None = None) -> dict[str, Any]:
        result = run_loadgen(spec, self.layout.peers_core)
        if relay is not None:
            left = relay.wait_sessions(0)
            if left:
                self.notes.append(f"{left} relay sessions still open 15 s after a {spec['mode']} phase ended")
        result["machine_busy_other_percent"] = other_load(result, self.layout)
        return result

    def start_relay(self, variant: str, wrapper: str | None = None) -> RelayProcess:
        assert self.echo is not None
        relay = RelayProcess(variant, self.echo.url, self.workdir, self.layout.relay_core, wrapper=wrapper)
        relay.start()
        return relay

    # ---- phases -----------------------------------------------------------------------------------------
    def direct(self) -> dict[str, Any]:
        assert self.echo is not None
        plan = self.plan
        log(f"direct: latency at {plan.latency_sessions} sessions")
        latency = self.load(self.spec(self.echo.url, "realtime", plan.latency_sessions))
        log(f"direct: flood with {plan.flood_sessions} sessions")
        flood = self.load(self.spec(self.echo.url, "flood", plan.flood_sessions))
        sweep: list[dict[str, Any]] = []
        for n in plan.sweep_steps:
            log(f"direct: sweep {n} sessions")
            step = self.load(self.spec(self.echo.url, "realtime", n, measure_s=plan.sweep_measure_s))
            sweep.append(step)
            if not keeps_up(step, n):
                break
        return {"latency": latency, "flood": flood, "sweep": sweep}

    def variant(
        self,
        name: str,
        direct: dict[str, Any],
        *,
        wrapper: str | None = None,
        label: str | None = None,
        sweep: bool | None = None,
    ) -> dict[str, Any]:
        """One relay measured in every phase: the product in logging variant `name`, or a peer (the reference relay,
        the splice floor: `wrapper` names its module, `label` the result) with the same load in the same run."""
        plan = self.plan
        label = label or name
        assert self.echo is not None
        relay = RelayProcess(name, self.echo.url, self.workdir, self.layout.relay_core, wrapper=wrapper, label=label)
        relay.start()
        try:
            spec = self.spec
            log(f"relay[{label}]: latency at {plan.latency_sessions} sessions")
            latency = self.load(spec(relay.url, "realtime", plan.latency_sessions, relay_pid=relay.pid), relay)
            log(f"relay[{label}]: flood with {plan.flood_sessions} sessions")
            flood = self.load(spec(relay.url, "flood", plan.flood_sessions, relay_pid=relay.pid), relay)
            log(f"relay[{label}]: CPU at {plan.sustainable_sessions} real-time sessions")
            light = self.load(spec(relay.url, "realtime", plan.sustainable_sessions, relay_pid=relay.pid), relay)
            log(f"relay[{label}]: CPU and p99 at {plan.mid_sessions} real-time sessions")
            mid = self.load(spec(relay.url, "realtime", plan.mid_sessions, relay_pid=relay.pid), relay)
            log(f"relay[{label}]: CPU at {plan.efficiency_sessions} real-time sessions")
            efficiency = self.load(spec(relay.url, "realtime", plan.efficiency_sessions, relay_pid=relay.pid), relay)
            out: dict[str, Any] = {
                "command": " ".join(relay.command),
                "latency": latency,
                "added_latency_ms": added(latency, direct["latency"]),
                "flood": flood,
                "flood_ratio_to_direct": ratio(flood, direct["flood"]),
                "efficiency": efficiency,
                "relay_cpu_percent": relay_cpu(efficiency),
                **cpu_cost(efficiency, plan.efficiency_sessions),
                "flood_cpu": cpu_cost(flood, None),
                **echo_relative(efficiency),
                "light_load": {
                    "sessions": plan.sustainable_sessions,
                    "result": light,
                    **cpu_cost(light, plan.sustainable_sessions, offered=plan.efficiency_sessions),
                },
                "mid_load": {
                    "sessions": plan.mid_sessions,
                    "result": mid,
                    "rtt_ms": mid["rtt_ms"],
                    "relay_cpu_percent": relay_cpu(mid),
                    **cpu_cost(mid, plan.mid_sessions),
                },
            }
            if sweep if sweep is not None else name == DEFAULT_VARIANT and wrapper is None:
                out["sweep"] = self.sweep(relay, direct["sweep"], label=label)
            if name == DEFAULT_VARIANT and wrapper is None and plan.profile_s > 0:
                out["profile"] = self.profile(relay)
        finally:
            relay.stop()
        out["relay_warnings"] = relay.warnings()
        return out

    def head_to_head(self) -> dict[str, Any]:
        """The two targets set against the reference relay, judged as the contract says to judge on a noisy VM: in
        interleaved rounds. Each round measures the product (defaults) and the reference, in alternating order, each
        on a fresh process through the main phases' order (latency, flood, then the efficiency load), so both meet
        the same moments of the machine, each first equally often (an even number of rounds). The same relay on both
        sides reads up to 15% apart in flood between rounds, with no order to it (docs/performance.md, "The
        thirteenth round"): the verdict takes the medians; the single-run figures stay in the tables."""
        plan = self.plan
        assert self.echo is not None
        sides: dict[str, tuple[str, str | None]] = {
            DEFAULT_VARIANT: (DEFAULT_VARIANT, None),
            REFERENCE_PEER: ("off", PEER_MODULES[REFERENCE_PEER]),
        }
        rounds: list[dict[str, Any]] = []
        for index in range(plan.head_to_head_rounds):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            measured: dict[str, Any] = {}
            for side in order:
                variant, wrapper = sides[side]
                log(f"head to head, round {index + 1}: {side}")
                relay = RelayProcess(variant, self.echo.url, self.workdir, self.layout.relay_core, wrapper=wrapper, label=side)
                relay.start()
                try:
                    spec = self.spec
                    self.load(spec(relay.url, "realtime", plan.latency_sessions, relay_pid=relay.pid), relay)
                    flood = self.load(spec(relay.url, "flood", plan.flood_sessions, relay_pid=relay.pid), relay)
                    efficiency = self.load(spec(relay.url, "realtime", plan.efficiency_sessions, relay_pid=relay.pid), relay)
                finally:
                    relay.stop()
                cost = cpu_cost(efficiency, plan.efficiency_sessions)
                measured[side] = {
                    "cpu_percent_at_offered_load": offered_cpu({"relay_cpu_percent": relay_cpu(efficiency), **cost}),
                    "cpu_us_per_round_trip": cost["relay_cpu_us_per_round_trip"],
                    "flood_round_trips_per_s": flood["round_trips_per_s"],
                }
            rounds.append({"order": order, **measured})
        medians = {
            side: {key: _median([r[side][key] for r in rounds]) for key in rounds[0][side]} for side in sides
        } if rounds else {}
        return {"rounds": rounds, "median": medians}

    def sweep(
        self, relay: RelayProcess, direct_sweep: list[dict[str, Any]], label: str = DEFAULT_VARIANT
    ) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        direct_by_n = {d["sessions_requested"]: d for d in direct_sweep}
        for n in self.plan.sweep_steps:
            base = direct_by_n.get(n)
            log(f"relay[{label}]: sweep {n} sessions")
            result = self.load(
                self.spec(relay.url, "realtime", n, measure_s=self.plan.sweep_measure_s, relay_pid=relay.pid), relay
            )
            step = {
                "sessions": n,
                "relay_rtt_ms": result["rtt_ms"],
                "direct_rtt_ms": base["rtt_ms"] if base else None,
                "added_latency_ms": added(result, base) if base else None,
                "relay_cpu_percent": relay_cpu(result),
                "generator_keeps_up_direct": keeps_up(base, n) if base else False,
                "generator_keeps_up_relay": keeps_up(result, n),
                "send_lateness_p99_ms": result["send_lateness_ms"]["p99"],
                "round_trips_per_s": result["round_trips_per_s"],
                "machine_busy_other_percent": result["machine_busy_other_percent"],
                "errors": result["errors"][:3],
            }
            steps.append(step)
            p99 = step["added_latency_ms"]["p99"] if step["added_latency_ms"] else None
            if not step["generator_keeps_up_direct"] or not step["generator_keeps_up_relay"]:
                step["stopped"] = "the load generator (sharing its core with the echo upstream) could not keep up"
                break
            if p99 is not None and p99 >= SWEEP_P99_ADDED_LIMIT_MS:
                step["stopped"] = f"p99 added latency {p99} ms >= {SWEEP_P99_ADDED_LIMIT_MS} ms"
                break
        return steps

    def memory(self) -> dict[str, Any]:
        """RSS per idle and per active session, on a fresh relay (a used one reuses freed memory)."""
        plan = self.plan
        relay = self.start_relay(DEFAULT_VARIANT)
        try:
            # Lazy imports and first-use allocations happen on the first sessions: not per-session costs.
            self.load({**self.spec(relay.url, "realtime", 2, measure_s=0.3), "warmup_s": 0.2, "watch": {}}, relay)
            time.sleep(0.3)
            base = tree_rss_kib(relay.pid)
            n = plan.memory_sessions
            log(f"memory: {n} idle sessions on a fresh relay, then {plan.memory_stream_s:g} s of streaming")
            spec = {**self.spec(relay.url, "memory", n, measure_s=max(plan.memory_checkpoints_s)), "watch": {}}
            spec["checkpoints_s"] = list(plan.memory_checkpoints_s)
            gen = InteractiveLoadgen(spec, self.layout.peers_core)
            try:
                idle_stage = gen.read_stage()
                connected = int(idle_stage["sessions_connected"])
                time.sleep(0.5)
                idle = tree_rss_kib(relay.pid)
                gen.advance()
                active: list[dict[str, Any]] = []
                for _ in plan.memory_checkpoints_s:
                    stage = gen.read_stage()
                    rss = tree_rss_kib(relay.pid)
                    active.append(
                        {
                            "after_s": stage["t_s"],
                            "rss_kib": rss,
                            "per_session_kib": round((rss - base) / max(connected, 1), 1),
                        }
                    )
                gen.advance()
                gen.proc.wait(30)
            finally:
                gen.stop()
            relay.wait_sessions(0)
        finally:
            relay.stop()
        growth = None
        if len(active) >= 2 and active[-1]["after_s"] > active[0]["after_s"]:
            growth = round(
                (active[-1]["per_session_kib"] - active[0]["per_session_kib"]) / (active[-1]["after_s"] - active[0]["after_s"]), 1
            )
        return {
            "sessions": connected,
            "baseline_rss_kib": base,
            "idle_rss_kib": idle,
            "idle_per_session_kib": round((idle - base) / max(connected, 1), 1),
            "active": active,
            "active_per_session_kib": active[-1]["per_session_kib"] if active else None,
            "streaming_s": active[-1]["after_s"] if active else None,
            "streaming_rss_mib": round(active[-1]["rss_kib"] / 1024, 1) if active else None,
            "active_growth_kib_per_session_per_s": growth,
        }

    def profile(self, relay: RelayProcess) -> dict[str, Any]:
        n = self.plan.efficiency_sessions
        log(f"relay[{DEFAULT_VARIANT}]: py-spy profile at {n} real-time sessions")
        if profiling.py_spy_path() is None:
            return {"available": False, "reason": "py-spy is not installed (pip install py-spy)"}
        spec = self.spec(relay.url, "realtime", n, relay_pid=relay.pid)
        spec.update({"warmup_s": 1.0, "measure_s": self.plan.profile_s + 2.0})
        argv, preexec = pinned_command([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], self.layout.peers_core)
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bench_env(), preexec_fn=preexec)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (relay.ready() or 0) < n and gen.poll() is None:
                time.sleep(0.05)
            time.sleep(1.0)
            # py-spy shares the relay's core: it never pauses the relay (--nonblocking), and the core the load
            # generator needs stays free.
            summary = profiling.record(relay.pid, self.plan.profile_s, self.workdir / "profile.txt", core=self.layout.relay_core)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                gen.communicate(timeout=60)
            if gen.poll() is None:
                gen.kill()
                gen.wait()
        relay.wait_sessions(0)
        return summary

    def experiment(
        self, name: str, wrapper: str, needs: str | None, env: dict[str, str], direct: dict[str, Any], *, sweep: bool = False
    ) -> dict[str, Any]:
        """The default variant run through a bench-only wrapper (a what-if for a perf proposal)."""
        if needs is not None:
            try:
                __import__(needs)
            except ImportError:
                return {"available": False, "reason": f"{needs} is not installed"}
        plan = self.plan
        gc_stats = self.workdir / f"gc-{name}.json"
        relay = RelayProcess(
            DEFAULT_VARIANT, self.echo.url if self.echo else "", self.workdir, self.layout.relay_core, wrapper=wrapper,
            extra_env={**env, "BENCH_GC_STATS": str(gc_stats)},
        )  # fmt: skip
        relay.start()
        try:
            log(f"experiment[{name}]: latency, flood, CPU at {plan.efficiency_sessions}")
            latency = self.load(self.spec(relay.url, "realtime", plan.latency_sessions, relay_pid=relay.pid), relay)
            flood = self.load(self.spec(relay.url, "flood", plan.flood_sessions, relay_pid=relay.pid), relay)
            efficiency = self.load(self.spec(relay.url, "realtime", plan.efficiency_sessions, relay_pid=relay.pid), relay)
            steps = self.sweep(relay, direct["sweep"], label=name) if sweep else None
        finally:
            relay.stop()
        out: dict[str, Any] = {
            "available": True,
            "command": " ".join(relay.command),
            "env": env,
            "latency_rtt_ms": latency["rtt_ms"],
            "added_latency_ms": added(latency, direct["latency"]),
            "flood_round_trips_per_s": flood["round_trips_per_s"],
            "flood_ratio_to_direct": ratio(flood, direct["flood"]),
            "flood_cpu": cpu_cost(flood, None),
            "efficiency_rtt_ms": efficiency["rtt_ms"],
            "relay_cpu_percent": relay_cpu(efficiency),
            **cpu_cost(efficiency, plan.efficiency_sessions),
            "machine_busy_other_percent": [r["machine_busy_other_percent"] for r in (latency, flood, efficiency)],
        }
        if steps is not None:
            out["sweep"] = steps
            costs = cpu_cost(efficiency, plan.efficiency_sessions)
            out["capacity"] = capacity({"sweep": steps, **costs}, plan.efficiency_sessions)
        if gc_stats.exists():
            out["gc_pauses"] = json.loads(gc_stats.read_text())
        return out


# Peers measured in every phase, like the product, in the same run: the reference relay (a pass-through built
# like Azure's rtmt.py: what a user would otherwise pick) and the asyncio splice floor. The splice is not a relay: it
# copies bytes between the sockets with no parsing and no log, so it shows the least any asyncio relay in CPython
# can cost on this machine; each target's verdict quotes it. (name, module, with a session sweep in the full run)
REFERENCE_PEER = "reference"
FLOOR_EXPERIMENT = "splice_floor"
PEERS: tuple[tuple[str, str, bool], ...] = (
    (REFERENCE_PEER, "bench.reference_relay", False),
    (FLOOR_EXPERIMENT, "bench.splice_floor", True),
)
PEER_MODULES: dict[str, str] = {name: module for name, module, _ in PEERS}
# name, wrapper module, module it needs, environment, with a session sweep
# (The GC tuning an earlier experiment measured is now the relay's own, and so is uvloop: `asyncio_loop` is the
# relay on the standard library's loop, `event_loop = "asyncio"`.) The uvloop splice is a floor too.
EXPERIMENTS: tuple[tuple[str, str, str | None, dict[str, str], bool], ...] = (
    ("gc_pauses", "bench.gc_relay", None, {}, False),
    ("asyncio_loop", "relay", None, {"RELAY_EVENT_LOOP": "asyncio"}, False),
    ("splice_floor_uvloop", "bench.splice_floor_uvloop", "uvloop", {}, False),
)


# ---- figures ------------------------------------------------------------------------------------------------


def added(relay: dict[str, Any], direct: dict[str, Any] | None) -> dict[str, Any] | None:
    if direct is None:
        return None
    out: dict[str, Any] = {}
    for key in ("p50", "p90", "p99", "max"):
        a, b = relay["rtt_ms"].get(key), direct["rtt_ms"].get(key)
        out[key] = round(a - b, 4) if a is not None and b is not None else None
    return out


def ratio(relay: dict[str, Any], direct: dict[str, Any]) -> float | None:
    a, b = relay.get("round_trips_per_s"), direct.get("round_trips_per_s")
    return round(a / b, 3) if a and b else None


def relay_cpu(result: dict[str, Any]) -> float | None:
    watched = result.get("watched", {}).get("relay")
    return watched.get("cpu_percent") if isinstance(watched, dict) else None


REFERENCE_ECHO_CPU_PERCENT = 20.0  # the bare echo upstream itself costs about 20% of a core at 200 sessions


def echo_relative(result: dict[str, Any]) -> dict[str, Any]:
    """The relay's CPU as a multiple of the echo upstream's in the same window and load: a machine-independent
    figure (the issue's references: echo ~20%, a plain aiohttp+websockets relay 65-72% = 3.3-3.6x, the target
    25% = 1.25x). The echo shares its core with the load generator, so the ratio is a little flattering."""
    relay = relay_cpu(result)
    echo = result.get("watched", {}).get("echo", {}).get("cpu_percent")
    if not relay or not echo:
        return {"echo_cpu_percent_same_window": echo, "relay_to_echo_cpu_ratio": None}
    ratio_ = relay / echo
    return {
        "echo_cpu_percent_same_window": echo,
        "relay_to_echo_cpu_ratio": round(ratio_, 2),
        "relay_cpu_percent_scaled_to_reference_machine": round(ratio_ * REFERENCE_ECHO_CPU_PERCENT, 1),
    }


def cpu_cost(result: dict[str, Any], sessions: int | None, *, offered: int | None = None) -> dict[str, Any]:
    """CPU per round trip, and what `offered` sessions (default: the phase's own) would cost at that price.

    When other work on the machine (or the relay's own saturation) lets fewer round trips through than offered,
    the measured CPU % is capped by what the relay got; the per-round-trip cost is the figure that survives."""
    cpu = relay_cpu(result)
    rate = result.get("round_trips_per_s") or 0.0
    if not cpu or not rate:
        return {"relay_cpu_us_per_round_trip": None, "relay_cpu_percent_at_offered_load": None, "delivered_ratio": None}
    per_rt_us = cpu / 100.0 / rate * 1e6
    out: dict[str, Any] = {"relay_cpu_us_per_round_trip": round(per_rt_us, 1)}
    if sessions is not None:
        target = (offered or sessions) * CHUNKS_PER_SECOND
        out["relay_cpu_percent_at_offered_load"] = round(per_rt_us * target / 1e4, 1)
        out["delivered_ratio"] = round(rate / (sessions * CHUNKS_PER_SECOND), 3)
    return out


def keeps_up(result: dict[str, Any], sessions: int) -> bool:
    """Sends left on schedule, every session connected, and the round trips came back at the offered rate."""
    if result["sessions_connected"] < sessions or result["errors"]:
        return False
    lateness = result["send_lateness_ms"]["p99"]
    if lateness is None or lateness > KEEP_UP_LATENESS_P99_MS:
        return False
    expected = sessions * CHUNKS_PER_SECOND
    rate = result.get("round_trips_per_s") or 0.0
    return rate >= KEEP_UP_DELIVERY_RATIO * expected


def other_load(result: dict[str, Any], layout: Layout) -> list[float] | None:
    """Per core: busy % minus what this benchmark's own processes used: other work on a shared machine."""
    cores = result.get("cores_busy_percent")
    if not cores:
        return None
    ours = [0.0] * len(cores)
    watched = result.get("watched", {})
    gen = result.get("generator_cpu_percent") or 0.0
    if layout.peers_core is not None and layout.peers_core < len(cores):
        ours[layout.peers_core] += gen + float(watched.get("echo", {}).get("cpu_percent", 0.0) or 0.0)
    if layout.relay_core is not None and layout.relay_core < len(cores):
        ours[layout.relay_core] += float(watched.get("relay", {}).get("cpu_percent", 0.0) or 0.0)
    return [round(max(0.0, c - o), 1) for c, o in zip(cores, ours, strict=False)]


def capacity(variant: dict[str, Any], efficiency_sessions: int) -> dict[str, Any]:
    sweep = variant.get("sweep") or []
    held = [
        s["sessions"]
        for s in sweep
        if s["generator_keeps_up_direct"]
        and s["generator_keeps_up_relay"]
        and s["added_latency_ms"]
        and s["added_latency_ms"]["p99"] is not None
        and s["added_latency_ms"]["p99"] < SWEEP_P99_ADDED_LIMIT_MS
    ]
    stopped = next((s.get("stopped") for s in sweep if s.get("stopped")), None)
    generator_limited = bool(stopped and "generator" in stopped) or (not stopped and bool(sweep))
    # The per-round-trip price at the efficiency load: batching makes it cheaper than at light load, so the
    # light-load price would understate capacity.
    per_rt = variant.get("relay_cpu_us_per_round_trip")
    by_cpu = round(1e6 / (per_rt * CHUNKS_PER_SECOND)) if per_rt else None
    if sweep and not generator_limited:
        # The relay itself broke the 5 ms p99 bound: that step, not the CPU arithmetic, is the capacity
        # (0 = not even the first step held).
        method = "sweep (the relay broke p99 < 5 ms before the generator ran out)"
        value = max(held) if held else 0
    else:
        method = "cpu_extrapolation (the load generator ran out first)"
        value = by_cpu
    return {
        "sessions_per_core": value,
        "method": method,
        "largest_step_held_in_sweep": max(held) if held else None,
        "first_step": sweep[0]["sessions"] if sweep else None,
        "sweep_stopped_by": stopped or "the last step",
        "by_cpu_extrapolation": by_cpu,
        "extrapolation": (
            f"at {efficiency_sessions} real-time sessions the relay spent {per_rt} us of CPU per round trip; a session "
            f"is {CHUNKS_PER_SECOND} round trips/s, so one saturated core carries about {by_cpu} sessions "
            "(an upper bound: p99 under 5 ms needs some headroom)"
            if per_rt
            else None
        ),
    }


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    default = report["relay"][DEFAULT_VARIANT]
    lat = default["added_latency_ms"]
    cap = report["capacity"]
    memory = report.get("memory") or {}
    flood = default["flood_ratio_to_direct"]
    cpu = default["relay_cpu_percent"]
    cpu_how = "measured from /proc over the window"
    delivered = default.get("delivered_ratio")
    if delivered is not None and delivered < KEEP_UP_DELIVERY_RATIO:
        cpu = default.get("relay_cpu_percent_at_offered_load")
        cpu_how = (
            f"only {delivered:.0%} of the offered round trips got through at {report['workload']['efficiency_sessions']} "
            f"sessions, so the measured {default['relay_cpu_percent']}% is capped (saturated or crowded out); this is its "
            f"CPU per round trip ({default.get('relay_cpu_us_per_round_trip')} us) x the offered rate"
        )

    ratio_note = default.get("relay_to_echo_cpu_ratio")
    if ratio_note:
        cpu_how += (
            f"; {ratio_note}x the echo upstream's CPU in the same window (issue's reference machine: echo ~20%, so "
            f"~{default.get('relay_cpu_percent_scaled_to_reference_machine')}% there)"
        )

    floor = report.get("peers", {}).get(FLOOR_EXPERIMENT) or {}
    floor_values: dict[str, Any] = {}
    if floor:
        floor_lat = floor.get("added_latency_ms") or {}
        floor_values = {
            "added_latency_p50": floor_lat.get("p50"),
            "added_latency_p99": floor_lat.get("p99"),
            "cpu_at_200_sessions": floor.get("relay_cpu_percent"),
            "sessions_per_core": (floor.get("capacity") or {}).get("sessions_per_core"),
            "flood_ratio": floor.get("flood_ratio_to_direct"),
            "cpu_at_200_vs_reference": offered_cpu(floor),
            "flood_vs_reference": floor.get("flood", {}).get("round_trips_per_s"),
            "p99_at_100_sessions": (floor.get("mid_load") or {}).get("rtt_ms", {}).get("p99"),
        }

    def target(name: str, goal: str, measured: Any, met: bool | None, how: str = "") -> dict[str, Any]:
        entry = {"target": goal, "measured": measured, "met": met}
        if how:
            entry["how"] = how
        if name in floor_values:
            # What a byte-for-byte asyncio splice did in this run: no asyncio relay can do better here.
            entry["asyncio_splice_floor"] = floor_values[name]
        return {name: entry}

    out: dict[str, Any] = {}
    out |= target(
        "added_latency_p50", f"<= {TARGET_ADDED_P50_MS} ms at 10 sessions", lat["p50"], _le(lat["p50"], TARGET_ADDED_P50_MS)
    )
    out |= target(
        "added_latency_p99", f"<= {TARGET_ADDED_P99_MS} ms at 10 sessions", lat["p99"], _le(lat["p99"], TARGET_ADDED_P99_MS)
    )
    out |= target(
        "cpu_at_200_sessions",
        f"<= {TARGET_CPU_AT_200_PERCENT}% of one core, files on",
        cpu,
        _le(cpu, TARGET_CPU_AT_200_PERCENT),
        cpu_how,
    )
    out |= target(
        "sessions_per_core",
        f">= {TARGET_SESSIONS_PER_CORE} at p99 added < {SWEEP_P99_ADDED_LIMIT_MS} ms",
        cap["sessions_per_core"] if cap["sessions_per_core"] != 0 else f"< {cap.get('first_step')} (the first step failed)",
        None if cap["sessions_per_core"] is None else cap["sessions_per_core"] >= TARGET_SESSIONS_PER_CORE,
        cap["method"],
    )
    out |= target(
        "flood_ratio", f">= {TARGET_FLOOD_RATIO} of direct", flood, None if flood is None else flood >= TARGET_FLOOD_RATIO
    )
    idle = memory.get("idle_per_session_kib")
    out |= target("idle_session_rss", f"<= {TARGET_IDLE_KIB} KiB", idle, _le(idle, TARGET_IDLE_KIB))
    # The contract's targets, against the reference relay measured in the same run: the medians of the interleaved
    # head-to-head rounds (single runs on this VM spread by 10% or more); the main phases' single figures are quoted
    # beside them.
    reference = report.get("peers", {}).get(REFERENCE_PEER) or {}
    medians = (report.get("head_to_head") or {}).get("median") or {}
    own_h2h, ref_h2h = medians.get(DEFAULT_VARIANT) or {}, medians.get(REFERENCE_PEER) or {}
    rounds = len((report.get("head_to_head") or {}).get("rounds") or [])
    single_cpu = (offered_cpu(default), offered_cpu(reference) if reference else None)
    own_cpu, ref_cpu = own_h2h.get("cpu_percent_at_offered_load"), ref_h2h.get("cpu_percent_at_offered_load")
    out |= target(
        "cpu_at_200_vs_reference",
        "<= the reference relay's, same run, files on",
        own_cpu,
        None if own_cpu is None or ref_cpu is None else own_cpu <= ref_cpu,
        f"reference relay: {ref_cpu}% (medians of {rounds} interleaved rounds, each side a fresh process; the main "
        f"phases' single run read {single_cpu[0]} against {single_cpu[1]}; CPU of each whole process tree; where less "
        f"than {KEEP_UP_DELIVERY_RATIO:.0%} of the load got through, CPU per round trip x the offered rate)",
    )
    ref_single_flood = reference.get("flood", {}).get("round_trips_per_s") if reference else None
    single_flood = (default["flood"]["round_trips_per_s"], ref_single_flood)
    own_flood, ref_flood = own_h2h.get("flood_round_trips_per_s"), ref_h2h.get("flood_round_trips_per_s")
    out |= target(
        "flood_vs_reference",
        "round trips/s >= the reference relay's, same run",
        own_flood,
        None if own_flood is None or ref_flood is None else own_flood >= ref_flood,
        f"reference relay: {ref_flood} (medians of {rounds} interleaved rounds; the main phases' single run read "
        f"{single_flood[0]} against {single_flood[1]})",
    )
    mid = default.get("mid_load") or {}
    p99 = (mid.get("rtt_ms") or {}).get("p99")
    out |= target(
        "p99_at_100_sessions",
        f"round trip p99 <= {TARGET_P99_AT_100_MS} ms at {report['workload'].get('mid_sessions')} real-time sessions",
        p99,
        _le(p99, TARGET_P99_AT_100_MS),
        f"direct: {direct_step(report, report['workload'].get('mid_sessions')).get('rtt_ms', {}).get('p99')} ms",
    )
    rss = memory.get("streaming_rss_mib")
    out |= target(
        "rss_at_200_streaming",
        f"<= {TARGET_STREAMING_RSS_MIB} MiB after {memory.get('streaming_s')} s of streaming, no completed items",
        rss,
        _le(rss, TARGET_STREAMING_RSS_MIB),
        f"{memory.get('sessions')} sessions",
    )
    return out


def _median(values: list[Any]) -> float | None:
    """The median of the figures that were measured (None when none was)."""
    present = [v for v in values if v is not None]
    return round(float(statistics.median(present)), 1) if present else None


def offered_cpu(variant: dict[str, Any]) -> float | None:
    """CPU % at the efficiency load: as measured, or (when the load did not all get through) CPU per round trip x
    the offered rate, so a saturated relay is not read as a cheap one."""
    delivered = variant.get("delivered_ratio")
    if delivered is not None and delivered < KEEP_UP_DELIVERY_RATIO:
        value: float | None = variant.get("relay_cpu_percent_at_offered_load")
        return value
    measured: float | None = variant.get("relay_cpu_percent")
    return measured


def direct_step(report: dict[str, Any], sessions: int | None) -> dict[str, Any]:
    """The direct run's sweep step at `sessions` (the echo alone under the same load), or {}."""
    for step in report.get("direct", {}).get("sweep", []):
        if step.get("sessions_requested") == sessions:
            found: dict[str, Any] = step
            return found
    return {}


def comparison(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The side-by-side rows: direct (the echo's own CPU), the peers, the product in each logging variant."""
    workload = report["workload"]
    mid_n, top_n = workload["mid_sessions"], workload["efficiency_sessions"]
    rows: dict[str, dict[str, Any]] = {}
    direct = report["direct"]
    mid_d, top_d = direct_step(report, mid_n), direct_step(report, top_n)
    rows["direct"] = {
        "cpu_percent_at_mid": (mid_d.get("watched", {}).get("echo") or {}).get("cpu_percent"),
        "cpu_percent_at_top": (top_d.get("watched", {}).get("echo") or {}).get("cpu_percent"),
        "p99_ms_at_mid": (mid_d.get("rtt_ms") or {}).get("p99"),
        "flood_round_trips_per_s": direct["flood"]["round_trips_per_s"],
        "rtt_ms_at_latency_sessions": direct["latency"]["rtt_ms"],
        "what": "the echo upstream's own CPU (no relay)",
    }
    named = {f"{name} (peer)": v for name, v in report.get("peers", {}).items()}
    named |= {f"relay, {name}": v for name, v in report["relay"].items()}
    for name, v in named.items():
        mid = v.get("mid_load") or {}
        rows[name] = {
            "cpu_percent_at_mid": mid.get("relay_cpu_percent"),
            "cpu_percent_at_top": v.get("relay_cpu_percent"),
            "cpu_percent_at_top_offered": offered_cpu(v),
            "delivered_ratio_at_top": v.get("delivered_ratio"),
            "cpu_us_per_round_trip_at_top": v.get("relay_cpu_us_per_round_trip"),
            "p99_ms_at_mid": (mid.get("rtt_ms") or {}).get("p99"),
            "flood_round_trips_per_s": v["flood"]["round_trips_per_s"],
            "flood_cpu_us_per_round_trip": v["flood_cpu"]["relay_cpu_us_per_round_trip"],
            "added_latency_ms": v["added_latency_ms"],
        }
    return rows


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def background_load(seconds: float = 1.0) -> list[float]:
    """Busy % per core over `seconds` before anything of the benchmark runs: other work on a shared machine."""
    before = core_busy()
    time.sleep(seconds)
    after = core_busy()
    return [round(100.0 * (b1 - b0) / max(t1 - t0, 1), 1) for (b0, t0), (b1, t1) in zip(before, after, strict=False)]


@contextlib.contextmanager
def priority(nice: int) -> Iterator[str]:
    """Run the benchmark's processes at `nice` (children inherit it); yields what was done, for the report.

    With sched_autogroup on, a nice value only weighs within the session's group: the group's own nice is what
    counts against other sessions' work on a shared machine. The group is the caller's whole login session, so
    its previous nice is put back on the way out."""
    if not nice:
        yield "default priority"
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        note = f"every benchmark process at nice {nice}"
    except OSError as exc:
        note = f"nice {nice} refused ({exc}); default priority"
    autogroup = Path("/proc/self/autogroup")
    previous: str | None = None
    if autogroup.exists():
        try:
            previous = autogroup.read_text().split()[-1]
            autogroup.write_text(str(nice))
            note += f", its scheduler autogroup at nice {nice}"
        except (OSError, IndexError) as exc:
            previous = None
            note += f" (autogroup nice refused: {exc})"
    try:
        yield note
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                autogroup.write_text(previous)


def execute(plan: Plan, out_path: Path | None, *, nice: int = 0) -> dict[str, Any]:
    with priority(nice) as nice_note:
        return _execute(plan, out_path, nice_note)


def _execute(plan: Plan, out_path: Path | None, nice_note: str) -> dict[str, Any]:
    started = time.monotonic()
    started_utc = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    idle_before = background_load()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        run = Run(plan, Path(tmp))
        layout = run.layout
        log(layout.note)
        run.echo = EchoProcess(layout.peers_core)
        run.echo.start()
        try:
            direct = run.direct()
            relays = {name: run.variant(name, direct) for name in plan.variants}
            peers = {
                name: run.variant("off", direct, wrapper=module, label=name, sweep=with_sweep and plan.experiments)
                for name, module, with_sweep in PEERS
            }
            for peer in peers.values():
                if "sweep" in peer:
                    peer["capacity"] = capacity(peer, plan.efficiency_sessions)
            memory = run.memory()
            head_to_head = run.head_to_head()
            experiments = {
                name: run.experiment(name, wrapper, needs, env, direct, sweep=with_sweep)
                if plan.experiments
                else {"available": False}
                for name, wrapper, needs, env, with_sweep in EXPERIMENTS
            }
        finally:
            run.echo.stop()
    report: dict[str, Any] = {
        "schema": "realtime-relay-bench/1",
        "started_utc": started_utc,
        "duration_s": None,
        "machine": machine(),
        "layout": {
            "relay_core": layout.relay_core,
            "echo_upstream_core": layout.peers_core,
            "load_generator_core": layout.peers_core,
            "note": layout.note,
            "priority": nice_note,
            "cores_busy_before_start_percent": idle_before,
        },
        "workload": {
            "audio": "input_audio_buffer.append of 20 ms PCM16 mono 24 kHz (480 samples, 960 bytes, base64) -> "
            "echoed as one response.output_audio.delta of the same size",
            "upstream": "bench.echo (raw asyncio, answers in the same read callback)",
            "latency_sessions": plan.latency_sessions,
            "flood_sessions": plan.flood_sessions,
            "flood_window": plan.flood_window,
            "efficiency_sessions": plan.efficiency_sessions,
            "mid_sessions": plan.mid_sessions,
            "memory_sessions": plan.memory_sessions,
            "memory_stream_s": plan.memory_stream_s,
            "phase_warmup_s": plan.warmup_s,
            "phase_measure_s": plan.measure_s,
        },
        "direct": direct,
        "relay": relays,
        "peers": peers,
        "memory": memory,
        "head_to_head": head_to_head,
        "experiments": experiments,
    }
    default = relays[DEFAULT_VARIANT]
    report["capacity"] = capacity(default, plan.efficiency_sessions)
    report["summary"] = {
        name: {
            "added_latency_ms": v["added_latency_ms"],
            "flood_round_trips_per_s": v["flood"]["round_trips_per_s"],
            "flood_ratio_to_direct": v["flood_ratio_to_direct"],
            f"relay_cpu_percent_at_{plan.efficiency_sessions}": v["relay_cpu_percent"],
            "relay_cpu_us_per_round_trip": v["relay_cpu_us_per_round_trip"],
            "relay_cpu_percent_at_offered_load": v["relay_cpu_percent_at_offered_load"],
            "delivered_ratio": v["delivered_ratio"],
            "light_load_cpu_us_per_round_trip": v["light_load"]["relay_cpu_us_per_round_trip"],
            "flood_cpu_us_per_round_trip": v["flood_cpu"]["relay_cpu_us_per_round_trip"],
            "relay_to_echo_cpu_ratio": v["relay_to_echo_cpu_ratio"],
        }
        for name, v in relays.items()
    }
    report["summary"]["direct"] = {
        "rtt_ms_at_latency_sessions": direct["latency"]["rtt_ms"],
        "flood_round_trips_per_s": direct["flood"]["round_trips_per_s"],
    }
    report["comparison"] = comparison(report)
    report["targets"] = verdict(report)
    busy = [
        max(r.get("machine_busy_other_percent") or [0.0])
        for v in relays.values()
        for r in (v["latency"], v["flood"], v["efficiency"])
    ]
    report["machine_busy_other_percent_max"] = max(busy) if busy else None
    if busy and max(busy) > BUSY_MACHINE_PERCENT:
        run.notes.append(
            f"other processes used up to {max(busy)}% of a core during measurements: figures are pessimistic; "
            "rerun on a quiet machine"
        )
    report["notes"] = run.notes
    report["duration_s"] = round(time.monotonic() - started, 1)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2) + "\n")
    return report
