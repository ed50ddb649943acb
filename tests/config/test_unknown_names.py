"""Misspelled settings are reported, not silently ignored: an unknown TOML key or RELAY_* variable is a warning
naming it and the closest setting, and an error (exit 2) under --strict-config; variables the test suite reads
are not settings. `--print-config` says what `serve` will really use and whether credentials were found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.cli.main import main
from relay.errors import ConfigError
from relay.settings import closest_setting, load_settings

SECRET_KEY = "sk-print-config-never-shows-this"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("RELAY_", "YANDEX_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_an_unknown_relay_variable_is_a_warning_naming_it_and_the_closest_setting() -> None:
    loaded = load_settings(env={"RELAY_PROT": "9000", "RELAY_PORT": "9001"})
    assert loaded.settings.port == 9001
    (warning,) = loaded.warnings
    assert "RELAY_PROT" in warning and "did you mean RELAY_PORT?" in warning


def test_an_unknown_toml_key_is_a_warning_naming_the_line_and_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("port = 9000\n\nmax_sesions = 3\n")
    loaded = load_settings(env={}, config_path=config)
    assert loaded.settings.port == 9000
    (warning,) = loaded.warnings
    assert f"{config}:3" in warning and "max_sesions" in warning and "did you mean max_sessions?" in warning


@pytest.mark.parametrize(
    "env",
    [{"RELAY_REQUIRE_ALL_TIERS": "1"}, {"RELAY_TEST_TIMEOUT_FACTOR": "3"}, {"RELAY_TEST_ANYTHING": "x"}, {"RELAY_CONFIG": ""}],
)
def test_variables_of_the_test_suite_and_relay_config_are_not_reported(env: dict[str, str]) -> None:
    assert load_settings(env={**env, "RELAY_STRICT_CONFIG": "true"}).warnings == ()


@pytest.mark.parametrize("strict", [{"RELAY_STRICT_CONFIG": "1"}, {}])
def test_strict_config_makes_an_unknown_variable_a_config_error(strict: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"strict_config": "true"} if not strict else None, env={"RELAY_MAX_SESION": "3", **strict})
    assert caught.value.setting == "RELAY_MAX_SESION"
    assert "did you mean RELAY_MAX_SESSIONS?" in str(caught.value)


@pytest.mark.parametrize("garbage", ["RELAY_", "RELAY_\u00e9\u00e9", "RELAY_" + "X" * 500, "RELAY_port"])
def test_garbage_variable_names_are_reported_without_a_crash(garbage: str) -> None:
    (warning,) = load_settings(env={garbage: "1"}).warnings
    assert repr(garbage) in warning


def test_nothing_close_gives_no_guess() -> None:
    assert closest_setting("zzzzqqqq") is None
    (warning,) = load_settings(env={"RELAY_ZZZZQQQQ": "1"}).warnings
    assert "did you mean" not in warning


def test_cli_warns_on_stderr_and_exits_2_under_strict_config(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("RELAY_LOG_DIRR", "/tmp/x")
    assert main(["serve", "--print-config"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "RELAY_LOG_DIRR" in err and "RELAY_LOG_DIR?" in err
    assert main(["serve", "--strict-config", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "RELAY_LOG_DIRR" in err


def test_print_config_shows_the_simulator_when_serve_falls_back_to_it(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--print-config"]) == 0
    out = capsys.readouterr().out
    (upstream,) = [line for line in out.splitlines() if line.startswith("upstream =")]
    assert upstream.startswith('upstream = "sim"') and "simulator" in upstream and "no credentials" in upstream
    assert "# upstream credentials: not found" in out and "YANDEX_API_KEY" in out


def test_print_config_says_credentials_were_found_without_showing_them(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("YANDEX_API_KEY", SECRET_KEY)
    clean_env.setenv("YANDEX_FOLDER_ID", "b1gfolder")
    assert main(["serve", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert 'upstream = "wss://ai.api.cloud.yandex.net/v1/realtime"' in out
    assert "# upstream credentials: found (YANDEX_API_KEY, YANDEX_FOLDER_ID set" in out
    assert SECRET_KEY not in out


def test_print_config_names_a_credentials_file_it_read(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    creds = tmp_path / "creds.env"
    creds.write_text(f"YANDEX_IAM_TOKEN={SECRET_KEY}\n")
    clean_env.setenv("RELAY_CREDENTIALS_FILE", str(creds))
    capsys.readouterr()
    assert main(["serve", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "found (YANDEX_IAM_TOKEN, YANDEX_FOLDER_ID not set" in out and str(creds) in out
    assert SECRET_KEY not in out


def test_forward_query_params_defaults_to_conversation_id() -> None:
    assert load_settings(env={}).settings.forward_query_params == ("conversation_id",)
