"""Recording settings: defaults, `log_content = false` turning recording off unless asked for, and the first
log line of `serve` and `mic` saying whether sessions are recorded and where."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.settings import load_settings
from tests.support.relay_fixtures import running_relay_process
from tests.support.timing import seconds


def test_recording_is_on_by_default_with_the_documented_limits() -> None:
    loaded = load_settings({}, env={})
    s = loaded.settings
    assert (s.record_sessions, s.recording_rate, s.recording_max_lead_seconds) == (True, 24000, 5.0)
    assert (s.recording_max_seconds, s.retention_days) == (4 * 3600, 0)
    assert loaded.sources["record_sessions"] == "default"


def test_log_content_off_turns_recording_off_unless_it_is_set_explicitly(tmp_path: Path) -> None:
    off = load_settings({}, env={"RELAY_LOG_CONTENT": "false"})
    assert off.settings.record_sessions is False
    assert "log_content" in off.sources["record_sessions"]
    explicit = load_settings({}, env={"RELAY_LOG_CONTENT": "false", "RELAY_RECORD_SESSIONS": "true"})
    assert explicit.settings.record_sessions is True
    config = tmp_path / "relay.toml"
    config.write_text("log_content = false\nrecord_sessions = true\n")
    assert load_settings({}, env={}, config_path=config).settings.record_sessions is True


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"RELAY_RECORDING_RATE": "4000"}, ">= 8000"),
        ({"RELAY_RECORDING_RATE": "fast"}, "integer"),
        ({"RELAY_RECORDING_MAX_LEAD_SECONDS": "0"}, ">= 0.1"),
        ({"RELAY_RETENTION_DAYS": "-1"}, ">= 0"),
        ({"RELAY_RECORD_SESSIONS": "maybe"}, "boolean"),
    ],
)
def test_bad_recording_values_name_the_setting(env: dict[str, str], problem: str) -> None:
    from relay.errors import ConfigError

    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings({}, env=env)
    assert next(iter(env)).removeprefix("RELAY_").lower() in str(caught.value)


async def test_the_first_line_of_serve_says_recording_is_on_and_where(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path) as relay:
        first = relay.log_lines[0]
    assert first["msg"] == "relay.recording_configured" and first["recording"] == "on"
    assert first["recordings"] == str(tmp_path / "data" / "sessions" / "<session_id>" / "recording.wav")


async def test_the_simulator_fallback_line_stays_first_and_says_it_too(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, upstream=None, env={"RELAY_RECORD_SESSIONS": "false"}) as relay:
        first = relay.log_lines[0]
    assert first["msg"] == "relay.using_simulator" and first["recording"] == "off"


def test_the_first_line_of_mic_says_whether_it_records(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "mic", "--upstream", "sim", "--log-format", "json", "--data-dir", str(tmp_path),
         "--input-device", "no-such-device-anywhere"],
        capture_output=True, text=True, env=env, timeout=seconds(30), cwd=tmp_path,
    )
    assert done.returncode == 2  # no such device: a usage error, after the first line
    first = json.loads(done.stderr.splitlines()[0])
    assert first["msg"] == "relay.recording_configured" and first["recording"] == "on"
    assert first["recordings"].startswith(str(tmp_path / "sessions"))


def test_mic_without_credentials_says_on_its_first_line_that_the_simulator_answers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "mic", "--log-format", "json", "--data-dir", str(tmp_path),
         "--input-device", "no-such-device-anywhere"],
        capture_output=True, text=True, env=env, timeout=seconds(30), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    first = json.loads(done.stderr.splitlines()[0])
    assert first["msg"] == "relay.using_simulator" and first["recording"] == "on"
    assert "simulator" in first["detail"]
