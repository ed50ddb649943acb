"""Helpers for the deployment checks (tests/test_deploy_*.py): read deploy/ files, run real processes.

What it does: parses the Dockerfile and .dockerignore the way Docker reads them (enough of it for deploy/), maps
the absolute paths an image or a host install would use onto a temporary directory, starts `realtime-relay serve`
(and nginx) as real subprocesses on 127.0.0.1 and waits for them to answer. No mocks: every check drives the real
relay, the real nginx and the real command-line tools.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.timing import seconds

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SYSTEMD_UNIT = DEPLOY / "systemd" / "realtime-relay.service"
NGINX_SITE = DEPLOY / "nginx" / "realtime-relay.conf"
K8S_DIR = DEPLOY / "k8s"
VENV_BIN = Path(sys.prefix) / "bin"

# The upstream quota: concurrent realtime sessions per cloud (docs/configuration.md `max_sessions`).
UPSTREAM_SESSION_QUOTA = 10


# ---------------------------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class DockerInstruction:
    stage: str
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[DockerInstruction]:
    """Instructions with continuation lines joined and comments dropped; `stage` is the current FROM's name."""
    instructions: list[DockerInstruction] = []
    stage = ""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
        instructions.append(DockerInstruction(stage, keyword, args.strip(), start))
    if pending:
        raise ValueError("Dockerfile ends inside a continued instruction")
    return instructions


def stage_names(instructions: Sequence[DockerInstruction]) -> list[str]:
    return [i.stage for i in instructions if i.keyword == "FROM"]


def in_stage(instructions: Sequence[DockerInstruction], stage: str, keyword: str) -> list[DockerInstruction]:
    return [i for i in instructions if i.stage == stage and i.keyword == keyword]


def expand(value: str, env: Mapping[str, str]) -> str:
    """Docker's `$NAME` / `${NAME}` substitution in ENV, WORKDIR and COPY (not in RUN: the shell does that)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def parse_env(args: str, env: Mapping[str, str]) -> dict[str, str]:
    """One ENV instruction (`K=V K2="V 2"` form) expanded against the variables set before it."""
    values: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"ENV in the legacy `ENV KEY value` form: {args!r}")
        values[key] = expand(value, {**env, **values})
    return values


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD (shell form is rejected: no signals)."""
    parsed = json.loads(args)
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        raise ValueError(f"not an exec-form array: {args!r}")
    return parsed


def healthcheck_command(instructions: Sequence[DockerInstruction], stage: str) -> list[str]:
    (check,) = in_stage(instructions, stage, "HEALTHCHECK")
    _, found, command = check.args.partition(" CMD ")
    if not found:
        raise ValueError(f"HEALTHCHECK without CMD: {check.args!r}")
    return exec_form(command.strip())


# -------------------------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`, as moby's patternmatcher reads it)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, pattern) in file order; the last rule matching a path or one of its parents decides."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if negated else line).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_ignored(relative: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def build_context_files(root: Path, dockerignore: Path) -> list[str]:
    """Every file `docker build root` would send, as paths relative to root."""
    text = dockerignore.read_text(encoding="utf-8")
    rules = dockerignore_rules(text)
    exceptions = [line.strip()[1:].strip().lstrip("/") for line in text.splitlines() if line.strip().startswith("!")]
    kept: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        # Skip an ignored directory (.git, .venv) unless an exception names something inside it: the walk's
        # answer is the same, minus the time.
        dirnames[:] = [
            d
            for d in dirnames
            if not is_ignored((base / d).as_posix(), rules) or any(e.startswith((base / d).as_posix() + "/") for e in exceptions)
        ]
        for name in filenames:
            relative = (base / name).as_posix()
            if not is_ignored(relative, rules):
                kept.append(relative)
    return sorted(kept)


# ------------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0, context: object | None = None) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # type: ignore[arg-type]
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def wait_until_answering(url: str, process: subprocess.Popen[bytes], timeout: float, context: object | None = None) -> None:
    """Poll url until it answers 200; fail early if the process died (its output is in the message)."""
    deadline = time.monotonic() + seconds(timeout)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before {url} answered")
        if http_status(url, timeout=1.0, context=context) == 200:
            return
        time.sleep(0.05)  # polling a readiness URL, not synchronising on a guessed delay
    raise AssertionError(f"{url} did not answer 200 within {seconds(timeout):.0f} s")


def relay_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def relay_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The test process's environment without RELAY_* / YANDEX_* leaking in, plus tmp dirs and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    env.update(
        RELAY_LOG_DIR=str(tmp / "logs"),
        RELAY_DATA_DIR=str(tmp / "data"),
        RELAY_LOG_FORMAT="json",
        RELAY_DRAIN_SECONDS="2",
    )
    env.update(settings)
    return env


@contextlib.contextmanager
def running(
    command: Sequence[str], env: Mapping[str, str], output: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess with stdout+stderr in `output`; SIGTERM (then SIGKILL) on exit so nothing outlives the test."""
    with output.open("wb") as sink:
        process = subprocess.Popen(list(command), env=dict(env), stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=seconds(15))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def output_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


def settings_env_names() -> set[str]:
    """RELAY_<NAME> for every setting, plus RELAY_CONFIG (the TOML file's path)."""
    from relay.settings import SETTING_NAMES, env_name

    return {env_name(name) for name in SETTING_NAMES} | {env_name("config")}


def print_config(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`realtime-relay serve --print-config` under env: {setting: (shown value, source)}; asserts exit 0."""
    result = subprocess.run(
        relay_command("serve", "--print-config"), env=dict(env), capture_output=True, text=True, timeout=seconds(60)
    )
    assert result.returncode == 0, f"--print-config exited {result.returncode}: {result.stderr.strip()}"
    shown: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(\w+) = (.*?)  # (.*)$", line)
        if match:
            shown[match.group(1)] = (match.group(2), match.group(3))
    return shown
