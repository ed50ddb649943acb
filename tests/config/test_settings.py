"""Settings (docs/configuration.md): precedence, every source's bad input named with its source, secrets never shown."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from relay.cli.main import main
from relay.credentials import Credentials, parse_credentials_file, resolve_model
from relay.errors import ConfigError
from relay.redact import MASK, redact_text, register_credentials
from relay.settings import Secret, Settings, describe, load_settings, rest_base_url

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_the_contract() -> None:
    s = load_settings(env={}).settings
    assert (s.host, s.port, s.sim_port, s.log_dir, s.data_dir) == ("127.0.0.1", 8080, 8090, "./logs", "./data")
    assert (s.max_sessions, s.drain_seconds, s.token_ttl_seconds, s.retrieve_timeout_seconds) == (10, 30.0, 600, 10.0)
    assert (s.max_client_message_bytes, s.max_client_backlog_bytes, s.log_queue_max_bytes) == (16 << 20, 8 << 20, 64 << 20)
    assert s.upstream == "wss://ai.api.cloud.yandex.net/v1/realtime"


def test_precedence_is_flag_then_env_then_toml_then_default(tmp_path: Path) -> None:
    config = write(tmp_path, "port = 1001\nmax_sessions = 3\ndrain_seconds = 5\n")
    env = {"RELAY_PORT": "1002", "RELAY_MAX_SESSIONS": "4"}
    loaded = load_settings({"port": "1003"}, env, config)
    assert (loaded.settings.port, loaded.settings.max_sessions, loaded.settings.drain_seconds) == (1003, 4, 5.0)
    assert loaded.sources["port"] == "flag --port"
    assert loaded.sources["max_sessions"] == "env RELAY_MAX_SESSIONS"
    assert loaded.sources["drain_seconds"] == f"{config}:3"
    assert loaded.sources["host"] == "default"


def test_env_lists_are_comma_separated_and_tables_json() -> None:
    env = {"RELAY_CLIENT_TOKENS": "a, b,,c", "RELAY_PINNED_SESSION": '{"instructions": "x"}', "RELAY_ALLOWED_ORIGINS": "http://a"}
    s = load_settings(env=env).settings
    assert [t.reveal() for t in s.client_tokens] == ["a", "b", "c"]
    assert s.pinned_session == {"instructions": "x"}
    assert s.allowed_origins == ("http://a",)


def test_the_simulators_port_has_its_own_name() -> None:
    s = load_settings(env={"RELAY_PORT": "9000", "RELAY_SIM_PORT": "9100"}).settings
    assert (s.port, s.sim_port) == (9000, 9100)


@pytest.mark.parametrize(
    ("env", "setting", "needle"),
    [
        ({"RELAY_PORT": "eighty"}, "port", "expected an integer"),
        ({"RELAY_PORT": "70000"}, "port", "<= 65535"),
        ({"RELAY_PORT": "-1"}, "port", ">= 0"),
        ({"RELAY_MAX_CLIENT_BACKLOG_BYTES": "-5"}, "max_client_backlog_bytes", ">= 1024"),
        ({"RELAY_DRAIN_SECONDS": "nan"}, "drain_seconds", "finite"),
        ({"RELAY_RETRIEVE_AFTER_DONE": "maybe"}, "retrieve_after_done", "boolean"),
        ({"RELAY_PINNED_SESSION": "{not json"}, "pinned_session", "JSON object"),
        ({"RELAY_PINNED_SESSION": "[1]"}, "pinned_session", "table"),
        ({"RELAY_UPSTREAM": "http://example/v1/realtime"}, "upstream", "ws:// or wss://"),
        ({"RELAY_UPSTREAM": "wss://"}, "upstream", "URL"),
        ({"RELAY_REST_BASE": "ftp://x"}, "rest_base", "http:// or https://"),
        ({"RELAY_LOG_FORMAT": "xml"}, "log_format", "one of"),
        ({"RELAY_TOKEN_TTL_SECONDS": "5"}, "token_ttl_seconds", ">= 10"),
    ],
)
def test_bad_environment_values_name_the_setting_and_source(env: dict[str, str], setting: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert caught.value.setting == setting
    assert f"env RELAY_{setting.upper()}" in str(caught.value)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("text", "setting", "needle"),
    [
        ("port = 'x'\n", "port", "integer"),
        ("port = 1.5\n", "port", "integer"),
        ("retrieve_after_done = 1\n", "retrieve_after_done", "boolean"),
        ("client_tokens = 'abc'\n", "client_tokens", "list"),
        ("client_tokens = [1, 2]\n", "client_tokens", "list of strings"),
        ("pinned_session = 3\n", "pinned_session", "table"),
    ],
)
def test_bad_toml_values_name_the_setting_and_line(tmp_path: Path, text: str, setting: str, needle: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_path=config)
    assert caught.value.setting == setting
    line = text.count("\n", 0, text.index(setting)) + 1
    assert f"{config}:{line}" in str(caught.value)
    assert needle in str(caught.value)


def test_garbage_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, config_path=write(tmp_path, "port = = 3\n[[[\n"))


def test_a_directory_as_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(env={}, config_path=tmp_path)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(env={}, config_path=tmp_path / "nope.toml")


def test_a_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bin.toml"
    config.write_bytes(b"\xff\xfe\x00port")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(env={}, config_path=config)


def test_the_example_config_documents_every_setting_and_loads() -> None:
    example = REPO / "config" / "relay.example.toml"
    text = example.read_text()
    for f in fields(Settings):
        assert re.search(rf"^#? ?\[?{f.name}\b", text, re.MULTILINE), f"{f.name} is not in {example.name}"
    assert load_settings(env={}, config_path=example).settings == Settings()


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def test_the_example_config_states_every_settings_allowed_range() -> None:
    """A bound the loader enforces (exit 2 past it) is written next to the setting, not found by trial."""
    text = (REPO / "config" / "relay.example.toml").read_text()
    for f in fields(Settings):
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is None and high is None:
            continue
        if low is not None and high is not None:
            stated = f"{_bound(low)}..{_bound(high)}"
        else:
            stated = f"at least {_bound(low)}" if low is not None else f"at most {_bound(high)}"
        assert f"(env RELAY_{f.name.upper()}; {stated})" in text, f.name


def test_secrets_never_show_in_repr_str_or_print_config() -> None:
    env = {"RELAY_CLIENT_TOKENS": "tok-aaa,tok-bbb", "RELAY_TOKEN_SECRET": "hmac-ccc", "RELAY_SIM_API_KEY": "sim-ddd"}
    loaded = load_settings(env=env)
    shown = repr(loaded.settings) + str(loaded.settings) + describe(loaded)
    for secret in ("tok-aaa", "tok-bbb", "hmac-ccc", "sim-ddd"):
        assert secret not in shown
    assert "****" in describe(loaded)
    assert repr(Secret("x")) == "Secret('****')"


def test_credentials_come_from_env_or_file_and_never_show(tmp_path: Path) -> None:
    creds_file = write(tmp_path, "# comment\nexport YANDEX_IAM_TOKEN='t1.iam'\nYANDEX_FOLDER_ID=b1g\n", "creds.env")
    settings = load_settings(env={"RELAY_CREDENTIALS_FILE": str(creds_file)}).settings
    creds = Credentials.load(settings, environ={"YANDEX_API_KEY": "AQV-key"})
    assert creds.authorization_header() == {"Authorization": "Bearer t1.iam"}  # IAM token wins over the API key
    assert "t1.iam" not in repr(creds) and "AQV-key" not in repr(creds)
    assert resolve_model(settings, creds) == "gpt://b1g/speech-realtime-250923"
    only_key = Credentials.load(Settings(), environ={"YANDEX_API_KEY": "AQV-key"})
    assert only_key.authorization_header() == {"Authorization": "Api-Key AQV-key"}


def test_credentials_read_are_masked_in_whatever_the_relay_writes_next(tmp_path: Path) -> None:
    """An upstream key is not always preceded by `Api-Key` (an upstream that repeats it in a refusal, a library's
    error text): reading it registers its value with the redaction of every output."""
    try:
        Credentials.load(Settings(), environ={"YANDEX_API_KEY": "AQV-upstream-key-0001", "YANDEX_IAM_TOKEN": "t1.iam-0002"})
        assert redact_text("said AQV-upstream-key-0001 and t1.iam-0002") == f"said {MASK} and {MASK}"
    finally:
        register_credentials()  # twice: the current and the previous read are let go
        register_credentials()


@pytest.mark.parametrize("variable", ["YANDEX_API_KEY", "YANDEX_IAM_TOKEN"])
def test_a_key_no_header_can_carry_is_a_config_error_for_every_command(
    variable: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line break inside a key would end the Authorization header (or make the HTTP library refuse it): serve
    and mic refuse it at start like history does, naming the variable and never the value."""
    with pytest.raises(ConfigError) as caught:
        Credentials.load(Settings(), environ={variable: "AQV-key\r\nX-Injected: 1"})
    assert caught.value.setting == variable and "U+000D" in str(caught.value) and "AQV" not in str(caught.value)
    monkeypatch.setenv(variable, "AQV-key\nrest")
    assert main(["serve", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert variable in err and "AQV" not in err


def test_a_bad_credentials_file_line_is_named_without_its_content(tmp_path: Path) -> None:
    creds_file = write(tmp_path, "YANDEX_FOLDER_ID=b1g\nthis-line-is-a-secret-without-equals\n", "creds.env")
    with pytest.raises(ConfigError) as caught:
        parse_credentials_file(creds_file)
    assert f"{creds_file}:2" in str(caught.value)
    assert "this-line-is-a-secret" not in str(caught.value)


def test_rest_base_is_derived_from_the_upstream() -> None:
    assert rest_base_url(Settings()) == "https://ai.api.cloud.yandex.net/v1"
    assert rest_base_url(Settings(upstream="ws://127.0.0.1:9/v1/realtime?x=1")) == "http://127.0.0.1:9/v1"
    assert rest_base_url(Settings(rest_base="http://h/v1/")) == "http://h/v1"
    # The REST API is called with the relay's credentials, never with an upstream URL's user:password@.
    assert rest_base_url(Settings(upstream="wss://user:pw@h:8443/v1/realtime")) == "https://h:8443/v1"


def test_a_rest_base_with_user_and_password_is_a_config_error_that_does_not_repeat_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"RELAY_REST_BASE": "https://user:hunter2@h/v1"})
    assert caught.value.setting == "rest_base"
    assert "hunter2" not in str(caught.value)


def test_cli_config_errors_exit_2_with_the_setting_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--port", "eighty", "--print-config"]) == 2
    assert "'port'" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path), "--print-config"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_config_error_never_repeats_a_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A token list written as a string (an easy slip), and a tool URL with a password and a key in its query,
    are refused at start and with --print-config alike, without the values."""
    as_string = write(tmp_path, 'client_tokens = "tok-LEAK-AAAA1111"\n', "tokens.toml")
    for argv in (["serve", "--config", str(as_string)], ["serve", "--config", str(as_string), "--print-config"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "client_tokens" in err and "tok-LEAK" not in err
    tool = write(
        tmp_path,
        '[[tools]]\nname = "t"\nhandler = "http:ftp://admin:pw-USERINFO-LEAK@example.org/x?api_key=QUERY-LEAK-1"\n',
        "tool.toml",
    )
    assert main(["serve", "--config", str(tool), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "tool 't'" in err and "USERINFO-LEAK" not in err and "QUERY-LEAK" not in err


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        ("serve", {"RELAY_SIM_KNOBS": '{"bogus": 1}'}, "sim_knobs"),  # the simulator serve falls back to
        ("serve", {"RELAY_SIM_KNOBS": '{"close_after": "x"}', "RELAY_UPSTREAM": "sim"}, "sim_knobs"),
        ("sim", {"RELAY_SIM_KNOBS": '{"bogus": 1}'}, "sim_knobs"),
        ("mic", {"RELAY_SIM_KNOBS": '{"bogus": 1}'}, "sim_knobs"),
        ("serve", {"RELAY_TOKEN_SECRET_FILE": "/dev/zero"}, "token_secret_file"),
        ("serve", {"RELAY_TOKEN_SECRET": "short"}, "token_secret"),
        ("serve", {"RELAY_HOST": "0.0.0.0"}, "host"),
    ],
)
def test_print_config_exits_2_for_whatever_the_command_would_refuse_at_start(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str, env: dict[str, str], named: str
) -> None:
    for key in [k for k in os.environ if k.startswith(("RELAY_", "YANDEX_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([command, "--print-config"]) == 2
    assert named in capsys.readouterr().err


def test_print_config_names_where_a_bad_tool_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "[[tools]]\nname = 1\n", "tools.toml")
    assert main(["serve", "--config", str(config), "--print-config"]) == 2
    assert f"setting 'tools' from {config}:1" in capsys.readouterr().err
    monkeypatch.setenv("RELAY_TOOLS", '[{"name": 1}]')
    assert main(["serve", "--print-config"]) == 2
    assert "setting 'tools' from env RELAY_TOOLS" in capsys.readouterr().err


def test_print_config_shows_the_rest_base_derived_from_the_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--upstream", "wss://api.example/v1/realtime", "--print-config"]) == 0
    assert 'rest_base = "https://api.example/v1"  # derived from upstream' in capsys.readouterr().out


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["serve", "--log-format", "xml"]) == 2


def test_print_config_shows_sources(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_MAX_SESSIONS", "7")
    assert main(["serve", "--port", "0", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "port = 0  # flag --port" in out
    assert "max_sessions = 7  # env RELAY_MAX_SESSIONS" in out


def test_help_lists_working_subcommands_and_python_dash_m_works() -> None:
    result = subprocess.run([sys.executable, "-m", "relay", "--help"], capture_output=True, text=True, timeout=60, check=True)
    for command in ("serve", "sim", "history", "logs", "devices", "mic"):
        assert command in result.stdout


def test_a_non_loopback_bind_without_tokens_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RELAY_CLIENT_TOKENS": ""},
    )
    assert result.returncode == 2
    assert "client_tokens" in result.stderr


@pytest.mark.parametrize("tokens", [[""], ["  "], ["real-token-0123456789", ""]])
def test_an_empty_client_token_is_a_config_error_not_auth_turned_off(tmp_path: Path, tokens: list[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f"client_tokens = {json.dumps(tokens)}\n")
    with pytest.raises(ConfigError, match="empty string is not a token"):
        load_settings({}, env={}, config_path=config)


def test_serve_falls_back_to_the_simulator_only_when_nobody_chose_the_upstream() -> None:
    from relay.credentials import simulator_fallback
    from relay.settings import DEFAULT_UPSTREAM

    unconfigured = Settings()
    assert simulator_fallback(unconfigured, "default") == (Settings(upstream="sim"), True)
    chosen, fell_back = simulator_fallback(Settings(upstream=DEFAULT_UPSTREAM), "env RELAY_UPSTREAM")
    assert (chosen.upstream, fell_back) == (DEFAULT_UPSTREAM, False)
