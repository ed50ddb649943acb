"""Any value from any source loads or is a config error naming its source, never a crash (docs/configuration.md).

Property tests over every setting: any TOML value in a config file, any text in its `RELAY_*` variable, and any
command line of real and made-up options (with `--print-config`, so nothing starts) end in Settings, a
`ConfigError`, or exit 0 or 2; never another exception and never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.cli.main import main
from relay.errors import ConfigError
from relay.server.app import token_secret
from relay.settings import SETTING_NAMES, Settings, load_settings
from relay.tools.config import load_tools

TOOL_KEYS = ["name", "description", "parameters", "handler", "timeout_seconds", "headers", "extra"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def toml_value(value: Any) -> str:
    """`value` spelled as a TOML inline value (strings in JSON's spelling, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e309",
            "sim",
            "ws://",
            "http://[::1",
            "a,b",
            "{}",
            "[]",
            "null",
            "\x00",
            "python:relay.tools.examples:current_time",
            "python:relay.tools.examples:",
            "python:no_such:x",
            "http://127.0.0.1:1/tool",
            "http:",
            "object",
        ]
    ),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10
)


@PROPERTY
@given(name=st.sampled_from(SETTING_NAMES), value=values)
def test_any_toml_value_for_any_setting_loads_or_is_a_config_error_naming_it(name: str, value: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "relay.toml"
        config.write_text(f"{name} = {toml_value(value)}\n", encoding="utf-8")
        try:
            loaded = load_settings(env={}, config_path=config)
        except ConfigError as exc:
            assert str(config) in str(exc)  # names where the bad value came from
            return
        with contextlib.suppress(ConfigError):  # the tools' own check at start (handlers, schemas)
            load_tools(loaded.settings)


@PROPERTY
@given(tools=st.lists(st.dictionaries(st.sampled_from(TOOL_KEYS), values, max_size=6), max_size=3))
def test_any_tools_table_loads_or_is_a_config_error(tools: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "relay.toml"
        config.write_text("".join("[[tools]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items()) for t in tools))
        with contextlib.suppress(ConfigError):
            load_tools(load_settings(env={}, config_path=config).settings)


env_text = st.one_of(
    st.text(max_size=40).filter(lambda t: "\x00" not in t),  # an environment variable cannot hold NUL
    st.sampled_from(["", " ", "true", "0", "-5", "1e400", "nan", "a,,b", '{"x": 1}', "[1]", "[[", "sim", "ws://h:99999/x"]),
)


@PROPERTY
@given(name=st.sampled_from(SETTING_NAMES), text=env_text)
def test_any_environment_text_for_any_setting_loads_or_is_a_config_error_naming_it(name: str, text: str) -> None:
    variable = f"RELAY_{name.upper()}"
    try:
        load_settings(env={variable: text})
    except ConfigError as exc:
        assert variable in str(exc)


COMMANDS = ["serve", "mic", "sim", "history", "logs", "devices"]
OPTIONS = [
    "--config", "--upstream", "--rest-base", "--model", "--log-dir", "--data-dir", "--log-format", "--log-level",
    "--strict-config", "--host", "--port", "--insecure-no-auth", "--flavour", "--speed", "--api-key", "--limit",
    "--order", "--after", "--all", "--json", "--session", "--html", "--bogus",
]  # fmt: skip
argument = st.one_of(st.sampled_from(OPTIONS), st.text(max_size=20).filter(lambda t: "\x00" not in t))


@PROPERTY
@given(command=st.sampled_from(COMMANDS), args=st.lists(argument, max_size=6))
def test_any_command_line_is_settings_or_a_usage_or_config_error(
    command: str, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith(("RELAY_", "YANDEX_"))]:
        monkeypatch.delenv(variable)
    with tempfile.TemporaryDirectory() as folder:
        monkeypatch.chdir(folder)
        code = main([command, *args, "--print-config"])
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    assert "Traceback" not in out + err


@pytest.mark.parametrize("setting", ["config", "credentials_file", "token_secret_file"])
@pytest.mark.parametrize("kind", ["fifo", "endless device", "too large"])
def test_a_settings_file_that_is_no_small_regular_file_is_refused_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, kind: str
) -> None:
    """A FIFO would block the start until someone writes to it, /dev/zero never ends, a huge file is a mistake:
    each is a config error naming the setting, at once."""
    if kind == "fifo":
        target = tmp_path / "settings.fifo"
        os.mkfifo(target)
    elif kind == "endless device":
        target = tmp_path / "settings.link"
        target.symlink_to("/dev/zero")
    else:
        target = tmp_path / "settings.big"
        target.write_bytes(b"# " + b"x" * (2 * 1024 * 1024) + b"\n")
    if setting == "token_secret_file":  # read when serve builds its app
        with pytest.raises(ConfigError) as caught:
            token_secret(Settings(token_secret_file=str(target)))
        code, err = 2, str(caught.value)
    else:
        argv = ["serve", "--config", str(target)] if setting == "config" else ["serve"]
        with pytest.MonkeyPatch.context() as patch:
            if setting == "credentials_file":
                patch.setenv("RELAY_CREDENTIALS_FILE", str(target))
            code = main([*argv, "--print-config"])
        err = capsys.readouterr().err
    assert code == 2 and setting in err, err
    assert "not a regular file" in err or "larger than" in err, err


# A byte that is not UTF-8 in the environment or argv arrives as a lone surrogate (os.fsdecode's surrogateescape).
NOT_UTF8 = b"ab\xffcd".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("model", NOT_UTF8),
        ("client_tokens", NOT_UTF8),
        ("token_secret", NOT_UTF8 * 10),
        ("sim_api_key", NOT_UTF8),
        ("allowed_origins", "http://a," + NOT_UTF8),
        ("pinned_session", '{"instructions": "' + NOT_UTF8 + '"}'),
        ("upstream", "ws://h/" + NOT_UTF8),
    ],
)
def test_bytes_that_are_not_utf8_are_a_config_error_naming_the_setting_and_never_its_secret(name: str, text: str) -> None:
    variable = f"RELAY_{name.upper()}"
    with pytest.raises(ConfigError, match="not valid UTF-8") as caught:
        load_settings(env={variable: text})
    assert variable in str(caught.value) and NOT_UTF8 not in str(caught.value)


@pytest.mark.parametrize("text", ["", "ws://up\nstream.example/v1/realtime", "ws://upstream.example/v1/real time", "\twss://h/x"])
def test_an_empty_or_spaced_upstream_url_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="upstream"):
        load_settings(env={"RELAY_UPSTREAM": text})
    with pytest.raises(ConfigError, match="upstream"):
        load_settings(flags={"upstream": text})


def test_a_folder_id_that_is_no_plain_text_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.credentials import Credentials

    for folder in (NOT_UTF8, "b1g\nfolder"):
        monkeypatch.setenv("YANDEX_API_KEY", "AQVN-key")
        monkeypatch.setenv("YANDEX_FOLDER_ID", folder)
        with pytest.raises(ConfigError, match="YANDEX_FOLDER_ID") as caught:
            Credentials.load(Settings())
        assert folder not in str(caught.value)
