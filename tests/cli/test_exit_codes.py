"""relay.errors: the hierarchy its docstring draws is the one the classes have, and the command line turns each
error into its exit code (2 usage or configuration, 1 runtime failure, 130 interrupted; docs/configuration.md)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import relay.cli.devices
import relay.errors as errors
from relay.cli import SIGINT_EXIT_CODE, entry_point
from relay.cli.main import main
from relay.errors import (
    AudioDeviceError,
    ConfigError,
    RelayError,
    RestError,
    StartupError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamUnavailable,
    UsageError,
)
from tests.support.logging_state import kept_logging_state

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    with kept_logging_state():
        yield


def drawn_parents() -> dict[str, str]:
    """Class -> parent as the module docstring's tree draws them (indentation is depth)."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(\s*(?:[│ ]\s*)*(?:[├└]── )?)([A-Z]\w+)\s", line)
        if not match or not line.startswith("    "):
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_docstring_draws_every_class_under_its_real_parent() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }
    drawn = drawn_parents()
    assert set(drawn) | {"RelayError"} == set(classes)
    for name, parent in drawn.items():
        assert classes[name].__bases__ == (classes[parent],), name


def test_every_error_is_a_relay_error_and_keeps_its_details() -> None:
    config = ConfigError("port", "env RELAY_PORT", "must be 1..65535")
    assert str(config) == "setting 'port' from env RELAY_PORT: must be 1..65535"
    assert (config.setting, config.source, config.problem) == ("port", "env RELAY_PORT", "must be 1..65535")
    unavailable = UpstreamUnavailable("handshake refused", status=403)
    dropped = UpstreamDisconnected("gone", code=1006)
    assert unavailable.status == 403 and UpstreamUnavailable("x").status is None
    assert dropped.code == 1006 and UpstreamDisconnected("x").code is None
    assert isinstance(unavailable, UpstreamError) and isinstance(dropped, UpstreamError)
    for error in (config, UsageError("u"), StartupError("s"), AudioDeviceError("a"), unavailable, dropped, RestError("r")):
        assert isinstance(error, RelayError)


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (ConfigError("input_device", "flag --input-device", "no such device"), 2),
        (UsageError("--duration must be positive"), 2),
        (AudioDeviceError("ambiguous device name 'USB'"), 2),
        (StartupError("port 8080 is already in use"), 1),
        (UpstreamUnavailable("connect failed"), 1),
        (RuntimeError("a bug"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_the_command_line_maps_each_error_to_its_exit_code(
    raised: BaseException, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*_: object) -> int:
        raise raised

    monkeypatch.setattr(relay.cli.devices, "run", run)
    assert main(["devices", "--log-format", "json"]) == code
    err = capsys.readouterr().err
    if code != 130:  # the last stderr line says what went wrong; a usage, config or start-up error has no traceback
        assert err.splitlines()[-1].startswith("realtime-relay devices: ") and str(raised) in err.splitlines()[-1]
        assert ("Traceback" in err) == (code == 1 and not isinstance(raised, StartupError))


def test_an_error_message_never_prints_a_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*_: object) -> int:
        raise ConfigError("api_key", "env YANDEX_API_KEY", f"rejected: Api-Key {SECRET}")

    monkeypatch.setattr(relay.cli.devices, "run", run)
    assert main(["devices", "--log-format", "json"]) == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.err + captured.out and "****" in captured.err


def test_a_bad_setting_exits_2_before_the_command_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RELAY_PORT", "not a port")
    ran: list[object] = []
    monkeypatch.setattr(relay.cli.devices, "run", lambda *a: ran.append(a) or 0)
    assert main(["devices"]) == 2
    assert ran == [] and "RELAY_PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["sim", "--speed", "-1"], {}, "from flag --speed"),  # the flag typed, not the setting's own name
        (["serve"], {"RELAY_CONFIG": "/nonexistent/relay.toml"}, "from env RELAY_CONFIG"),
        (["serve", "--host", "0.0.0.0"], {}, "from flag --host (0.0.0.0)"),  # a check made after loading
        (["serve"], {"RELAY_CREDENTIALS_FILE": "/nonexistent/creds"}, "from env RELAY_CREDENTIALS_FILE"),
        (["sim"], {"RELAY_SIM_KNOBS": '{"delay_ms": -1}'}, "from env RELAY_SIM_KNOBS: knob delay_ms"),
    ],
)
def test_a_config_error_names_where_the_bad_value_came_from(
    argv: list[str], env: dict[str, str], names: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    assert names in capsys.readouterr().err


def test_python_dash_m_relay_is_the_command_line() -> None:
    version = subprocess.run([sys.executable, "-m", "relay", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("realtime-relay ")
    bare = subprocess.run([sys.executable, "-m", "relay"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "COMMAND" in bare.stderr


def test_print_config_refuses_an_unusable_tool_as_the_command_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tools.toml"
    config.write_text('[[tools]]\nname = "x"\nhandler = "python:no_such_module_for_tools:f"\n')
    assert main(["serve", "--config", str(config), "--print-config"]) == 2
    assert "no_such_module_for_tools" in capsys.readouterr().err


@pytest.mark.parametrize("after_s", [0.05, 0.15, 0.3, 0.6])
def test_ctrl_c_at_any_moment_of_the_start_ends_without_a_traceback(tmp_path: Path, after_s: float) -> None:
    """Whether Python is still starting (ended by the signal itself: -2, which a shell shows as 130), importing
    (exit 130) or serve is already draining (exit 0): never a traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--log-format", "json",
         "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    if "init_import_site" in err:
        # On a busy machine the signal can land while Python itself still starts (its `site` module), before any
        # of the relay runs: Python reports that itself (exit 1). Nothing of the relay's to judge.
        return
    assert process.returncode in (0, 130, -signal.SIGINT), err[-2000:]
    assert "Traceback" not in out + err


def test_a_ctrl_c_that_python_wraps_while_a_class_is_made_is_still_exit_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted_import(argv: list[str] | None = None) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from exc

    monkeypatch.setattr("relay.cli.main.main", interrupted_import)
    with pytest.raises(SystemExit) as ended:
        entry_point()
    assert ended.value.code == SIGINT_EXIT_CODE


def test_any_other_runtime_error_at_start_is_not_taken_for_a_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: list[str] | None = None) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr("relay.cli.main.main", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        entry_point()
