"""What a newcomer meets when `serve` cannot start as asked: its own usage for a bad option, a clear one-line
message for a port in use, and a folder-less API key named at start instead of on the first client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli.main import main
from relay.cli.serve import loop_factory
from relay.settings import Settings
from tests.support.relay_fixtures import running_relay_process
from tests.support.timing import seconds


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    env.update(extra)
    return env


@pytest.mark.parametrize("argv", [["serve", "--bogus"], ["serve", "--port", "1", "extra-word"], ["serve", "--\u00ff\x01"]])
def test_an_unknown_serve_option_prints_serves_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: realtime-relay serve ")
    assert "unrecognized arguments" in err
    assert "COMMAND" not in err  # not the top-level usage


def test_a_port_in_use_is_one_clear_line_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "relay", "serve", "--port", str(port), "--log-format", "json",
             "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=seconds(30),
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "relay.command_failed" not in result.stdout


def test_an_api_key_without_a_folder_id_is_named_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, env=clean_env(YANDEX_API_KEY="sk-no-folder"), cwd=tmp_path, timeout=seconds(30),
    )
    assert result.returncode == 2
    assert "YANDEX_FOLDER_ID" in result.stderr and "sk-no-folder" not in result.stderr + result.stdout


async def test_an_api_key_and_a_bare_model_name_start_with_a_warning_naming_the_folder(tmp_path: Path) -> None:
    async with running_relay_process(
        tmp_path, upstream=None, args=["--model", "speech-realtime-250923"], env={"YANDEX_API_KEY": "sk-no-folder"}
    ) as relay:
        warning = await relay.wait_for_log("relay.folder_id_missing")
        assert warning["level"] == "warning" and "YANDEX_FOLDER_ID" in warning["detail"]
        assert not any("sk-no-folder" in line.decode() for line in relay.raw_stdout)


@pytest.mark.parametrize("setting", ["--data-dir", "--log-dir"])
def test_a_folder_serve_cannot_write_fails_the_start_naming_the_setting(tmp_path: Path, setting: str) -> None:
    """A data or log folder that cannot take a file (here: below a regular file; in a container, a volume owned by
    another user) fails the start with one line naming the setting, instead of every session's saves later."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folders = {"--data-dir": str(tmp_path / "data"), "--log-dir": str(tmp_path / "logs")}
    folders[setting] = str(blocker / "below")
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--log-format", "json",
         *(arg for pair in folders.items() for arg in pair)],
        capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=seconds(30),
    )  # fmt: skip
    assert result.returncode == 1
    assert setting in result.stderr and str(blocker / "below") in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "loop"),
    [({}, "uvloop"), ({"RELAY_EVENT_LOOP": "asyncio"}, "asyncio"), ({"RELAY_EVENT_LOOP": "uvloop"}, "uvloop")],
)
async def test_serve_runs_on_uvloop_unless_told_otherwise_and_says_which(tmp_path: Path, env: dict[str, str], loop: str) -> None:
    async with running_relay_process(tmp_path, env=env) as relay:
        listening = await relay.wait_for_log("relay.listening")
        assert listening["event_loop"] == loop


def test_with_its_own_tls_serve_runs_on_asyncios_loop() -> None:
    assert loop_factory(Settings()) is not None
    assert loop_factory(Settings(event_loop="asyncio")) is None
    assert loop_factory(Settings(tls_cert_file="cert.pem", tls_key_file="key.pem")) is None


@pytest.mark.parametrize("value", ["tornado", "", "UVLOOP", "uvloop "])
def test_an_unknown_event_loop_is_a_config_error(tmp_path: Path, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, env=clean_env(RELAY_EVENT_LOOP=value), cwd=tmp_path, timeout=seconds(30),
    )
    assert result.returncode == 2
    assert "event_loop" in result.stderr and "Traceback" not in result.stderr
