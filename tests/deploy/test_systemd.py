"""deploy/systemd/realtime-relay.service (deploy/README.md), checked with systemd's own analyzer.

`systemd-analyze verify` loads the unit as the manager would, without systemd running as PID 1: it needs only
the unit file and an executable at ExecStart's path, so the unit is copied to a temporary directory with
/opt/realtime-relay mapped onto a directory whose bin/realtime-relay is this venv's console script. Any message
it prints (an unknown key, a bad value) fails the check, since verify exits 0 on warnings.
`systemd-analyze security --offline` scores the hardening. MemoryDenyWriteExecute, the one sandbox rule that can
break a Python program's native code, is tried for real with the kernel's PR_SET_MDWE around a live relay session.
"""

from __future__ import annotations

import asyncio
import base64
import configparser
import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from relay.server.app import FORCED_CLOSE_WAIT_S
from tests.support import tiers
from tests.support.deploy_fixtures import (
    SYSTEMD_UNIT,
    VENV_BIN,
    free_port,
    output_tail,
    print_config,
    relay_command,
    relay_env,
    running,
    settings_env_names,
    wait_until_answering,
)
from tests.support.timing import seconds

pytestmark = pytest.mark.deploy

INSTALL_PREFIX = "/opt/realtime-relay"
# `systemd-analyze security` rates exposure 0.0 (locked down) .. 10.0 (unprotected) and calls < 2.0 "OK";
# its --threshold counts tenths (20 = 2.0).
MAX_EXPOSURE_TENTHS = 20


def systemd_analyze() -> str:
    return tiers.require("systemd-analyze", "systemd-analyze is not installed (apt-get install systemd)")


def unit_text() -> str:
    return SYSTEMD_UNIT.read_text(encoding="utf-8")


def install_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The unit under its own name in tmp, ExecStart pointing at a real executable."""
    prefix = tmp_path / "opt-realtime-relay"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "realtime-relay").symlink_to(VENV_BIN / "realtime-relay")
    unit = tmp_path / SYSTEMD_UNIT.name
    unit.write_text((text or unit_text()).replace(INSTALL_PREFIX, str(prefix)), encoding="utf-8")
    return unit


def service_section() -> dict[str, list[str]]:
    """[Service] keys with every value of repeated keys, in order."""
    values: dict[str, list[str]] = {}
    in_service = False
    for raw in unit_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            in_service = line == "[Service]"
        elif in_service and line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def unit_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for assignment in service_section().get("Environment", []):
        for item in assignment.split():
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = install_unit(tmp_path)
    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=seconds(60))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"systemd-analyze verify warned:\n{result.stderr}"


def test_verify_reports_a_misspelled_directive(tmp_path: Path) -> None:
    # The guard for the test above: a typo in a hardening key is reported, not silently ignored.
    unit = install_unit(tmp_path, unit_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=seconds(60))
    assert "ProtectSytem" in result.stderr


def test_unit_hardening_exposure_is_low(tmp_path: Path) -> None:
    unit = install_unit(tmp_path)
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", f"--threshold={MAX_EXPOSURE_TENTHS}", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=seconds(60),
    )
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert overall, result.stdout[-2000:] + result.stderr
    assert result.returncode == 0, f"exposure {overall.group(1)} above {MAX_EXPOSURE_TENTHS / 10}"


def test_unit_runs_the_relay_as_a_simple_service_under_a_dynamic_user() -> None:
    service = service_section()
    assert service["Type"] == ["simple"]  # the relay does not send sd_notify READY=1
    assert service["DynamicUser"] == ["yes"]
    assert service["ExecStart"][0].split()[:2] == [f"{INSTALL_PREFIX}/bin/realtime-relay", "serve"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["StateDirectory"] == ["realtime-relay"] and service["LogsDirectory"] == ["realtime-relay"]
    assert service["EnvironmentFile"], "secrets come from an EnvironmentFile"


def test_stop_timeout_covers_the_drain() -> None:
    service = service_section()
    assert service["KillSignal"] == ["SIGTERM"]
    timeout = float(service["TimeoutStopSec"][0].rstrip("s"))
    drain = float(unit_environment()["RELAY_DRAIN_SECONDS"])
    # After the drain, sessions it closed get FORCED_CLOSE_WAIT_S to end; then the logs are flushed.
    worst = drain + FORCED_CLOSE_WAIT_S + 5
    assert timeout >= worst, f"TimeoutStopSec={timeout} is below the drain's worst case ({worst} s)"


def test_process_metrics_can_read_proc_stat() -> None:
    """/metrics' process_* families read /proc/stat; ProcSubset=pid hides it and they vanish."""
    assert service_section().get("ProcSubset", ["all"]) != ["pid"]


def test_unit_environment_names_only_real_settings() -> None:
    unknown = {k for k in unit_environment() if k.startswith("RELAY_")} - settings_env_names()
    assert not unknown, f"Environment= sets variables no setting reads: {sorted(unknown)}"


def test_unit_environment_is_accepted_by_the_relay(tmp_path: Path) -> None:
    # systemd's specifiers as the manager expands them for this unit: %S=/var/lib, %L=/var/log, %d=credentials.
    specifiers = {"%S": str(tmp_path / "state"), "%L": str(tmp_path / "log"), "%d": str(tmp_path / "credentials")}
    # What systemd's LoadCredential= puts in %d: the token secret, which --print-config reads as serve does.
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "token_secret").write_text("s" * 48 + "\n")
    env = relay_env(tmp_path)
    for key, value in unit_environment().items():
        for specifier, path in specifiers.items():
            value = value.replace(specifier, path)
        env[key] = value
    shown = print_config(env)
    assert shown["host"] == ('"127.0.0.1"', "env RELAY_HOST")
    assert shown["data_dir"] == (f'"{tmp_path / "state"}/realtime-relay"', "env RELAY_DATA_DIR")
    assert shown["token_secret_file"][1] == "env RELAY_TOKEN_SECRET_FILE"


def test_unit_file_parses_as_ini() -> None:
    # Catches a stray section or line that systemd would skip with only a warning in the journal.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit_text())
    assert parser.sections() == ["Unit", "Service", "Install"]


# The unit sets MemoryDenyWriteExecute=yes. The kernel's own form of that rule (prctl PR_SET_MDWE, Linux >= 6.3)
# applied to a real relay before exec, then a session that crosses every native-code path serve uses: JSON,
# sockets, audio decode and the WAV write of retrieve-after-done.
MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(99)
os.execv(sys.argv[1], sys.argv[1:])
"""
MDWE_UNSUPPORTED = 99


def test_mdwe_emulation_refuses_writable_executable_memory(under_mdwe: list[str]) -> None:
    # The guard for the test below: under the prefix, a W+X mapping really fails.
    wx = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    result = subprocess.run([*under_mdwe, sys.executable, "-c", wx], capture_output=True, text=True, timeout=seconds(30))
    assert result.returncode != 0
    assert "PermissionError" in result.stderr


@pytest.fixture
def under_mdwe() -> list[str]:
    """A command prefix that execs its arguments with write+execute memory refused, or a skip."""
    probe = subprocess.run([sys.executable, "-c", MDWE_EXEC, "/bin/true"], timeout=seconds(30))
    if probe.returncode == MDWE_UNSUPPORTED:
        tiers.missing("this kernel has no PR_SET_MDWE (Linux >= 6.3) to emulate MemoryDenyWriteExecute")
    assert probe.returncode == 0
    return [sys.executable, "-c", MDWE_EXEC]


async def test_relay_serves_a_session_under_memory_deny_write_execute(tmp_path: Path, under_mdwe: list[str]) -> None:
    assert service_section()["MemoryDenyWriteExecute"] == ["yes"]
    port = free_port()
    env = relay_env(tmp_path, RELAY_SIM_SPEED="0")
    command = [*under_mdwe, *relay_command("serve", "--upstream", "sim", "--port", str(port))]
    output = tmp_path / "relay.out"
    with running(command, env, output) as relay:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/healthz", relay, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output_tail(output)}") from None
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime?relay_events=1", open_timeout=seconds(15)) as ws:
            await next_of_type(ws, "session.created")
            manual_turns = {"audio": {"input": {"turn_detection": None}}}
            await ws.send(json.dumps({"type": "session.update", "session": manual_turns}))
            await next_of_type(ws, "session.updated")
            tone = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 24000))) for i in range(24000))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(tone).decode()}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "response.create"}))
            done = await next_of_type(ws, "response.done")
            assert done["response"]["status"] == "completed"
            saved = await next_of_type(ws, "relay.audio_saved")
            assert saved["duration_ms"] > 0
        assert relay.poll() is None, output_tail(output)


async def next_of_type(ws: ClientConnection, event_type: str) -> dict[str, Any]:
    async with asyncio.timeout(seconds(20)):
        while True:
            event = json.loads(await ws.recv())
            assert event.get("type") != "error", event
            if event.get("type") == event_type:
                return dict(event)
