"""The processes a benchmark run starts: the relay under test (`realtime-relay serve`), the echo upstream, the
load generator. Each is pinned to a core (`taskset -c N`, else `os.sched_setaffinity`), started, waited for,
and stopped by its own pid.

I/O: subprocesses, HTTP GETs of the relay's `/readyz` on 127.0.0.1, files under the run's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# Variants (docs/performance.md): event files on with session recording on (the defaults, where the targets
# apply), the same with recording off (what recording costs), files + event_log_stdout with stdout to /dev/null,
# and both logs off.
VARIANTS: dict[str, dict[str, str]] = {
    "files": {"RELAY_EVENT_LOG_FILES": "true", "RELAY_EVENT_LOG_STDOUT": "false"},
    "files-norecording": {"RELAY_EVENT_LOG_FILES": "true", "RELAY_EVENT_LOG_STDOUT": "false", "RELAY_RECORD_SESSIONS": "false"},
    "files+stdout": {"RELAY_EVENT_LOG_FILES": "true", "RELAY_EVENT_LOG_STDOUT": "true"},
    "off": {"RELAY_EVENT_LOG_FILES": "false", "RELAY_EVENT_LOG_STDOUT": "false"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned_command(argv: list[str], core: int | None) -> tuple[list[str], Any]:
    """(argv, preexec_fn): prefixed with `taskset -c core` when taskset exists, else pinned in the child."""
    if core is None:
        return argv, None
    taskset = shutil.which("taskset")
    if taskset:
        return [taskset, "-c", str(core), *argv], None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return argv, pin


def bench_env() -> dict[str, str]:
    """The child environment: this interpreter's, with the project root importable and no upstream credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class EchoProcess:
    core: int | None
    proc: subprocess.Popen[str] | None = None
    port: int = 0

    def start(self) -> None:
        argv, preexec = pinned_command([sys.executable, "-m", "bench.echo", "--port", "0"], self.core)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=bench_env(), preexec_fn=preexec
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the echo upstream did not start")
        self.port = int(json.loads(line)["port"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class RelayProcess:
    """A `realtime-relay serve` subprocess in one logging variant. `wrapper` runs it through a bench module
    instead of `-m relay` (e.g. `bench.gc_relay` to time the relay's GC pauses)."""

    variant: str
    upstream: str
    workdir: Path
    core: int | None
    wrapper: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    label: str | None = None  # names its files; the variant's name by default (a peer relay runs in a variant too)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    command: list[str] = field(default_factory=list)
    _stdout: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.port = free_port()
        name = self.name
        logs = self.workdir / f"logs-{name}"
        data = self.workdir / f"data-{name}"
        module = self.wrapper or "relay"
        argv = [
            sys.executable, "-m", module, "serve", "--upstream", self.upstream, "--port", str(self.port),
            "--log-dir", str(logs), "--data-dir", str(data), "--log-format", "json", "--model", "bench",
        ]  # fmt: skip
        env = bench_env()
        env.update(VARIANTS[self.variant])
        env.update({"RELAY_MAX_SESSIONS": "100000", "RELAY_DRAIN_SECONDS": "0"})
        env.update(self.extra_env)
        self.command, preexec = pinned_command(argv, self.core)
        if env["RELAY_EVENT_LOG_STDOUT"] == "true":
            self._stdout = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        else:
            self._stdout = open(self.workdir / f"relay-{name}.stdout", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command, stdout=self._stdout, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.proc.returncode} at start ({self.variant})")
            if self.ready() is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the relay did not become ready within {timeout} s; its output ends:\n{self.output_tail()}")

    def output_tail(self, lines: int = 15) -> str:
        """The last lines the relay wrote (empty when its output goes to /dev/null)."""
        path = self.workdir / f"relay-{self.name}.stdout"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def name(self) -> str:
        return self.label or self.variant

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def ready(self) -> int | None:
        """The relay's live session count from /readyz, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2.0) as response:
                return int(json.loads(response.read())["sessions"])
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return None

    def wait_sessions(self, at_most: int, timeout: float = 15.0) -> int | None:
        """Wait until the relay has at most `at_most` live sessions (sessions end after their clients leave)."""
        deadline = time.monotonic() + timeout
        count = self.ready()
        while time.monotonic() < deadline:
            count = self.ready()
            if count is not None and count <= at_most:
                return count
            time.sleep(0.05)
        return count

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, grace=10.0)
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def warnings(self) -> dict[str, int]:
        """Warning and error records of the relay's own stdout log by event name (e.g. relay.log_queue_full:
        dropped event records would make a logging variant look cheaper than it is). Empty when stdout went to
        /dev/null (the event_log_stdout variant)."""
        path = self.workdir / f"relay-{self.name}.stdout"
        counts: dict[str, int] = {}
        if not path.exists() or self.proc is None:
            return counts
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
                name = str(record.get("msg"))
                counts[name] = counts.get(name, 0) + 1
        return counts


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)


def run_loadgen(spec: dict[str, Any], core: int | None, timeout: float = 120.0) -> dict[str, Any]:
    """One load generator process, pinned; returns its JSON result (raises with its stderr on failure)."""
    argv, preexec = pinned_command([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], core)
    done = subprocess.run(argv, capture_output=True, text=True, env=bench_env(), preexec_fn=preexec, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class InteractiveLoadgen:
    """A `memory`-mode generator driven stage by stage over stdin/stdout."""

    def __init__(self, spec: dict[str, Any], core: int | None) -> None:
        argv, preexec = pinned_command([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], core)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bench_env(),
            preexec_fn=preexec,
        )  # fmt: skip

    def read_stage(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr is not None else ""
            raise RuntimeError(f"load generator ended early: {err.strip()[-2000:]}")
        stage: dict[str, Any] = json.loads(line)
        return stage

    def advance(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        stop_process(self.proc)
