"""The `tools` setting: every bad tool stops `serve` and `mic` at start with exit 2 naming the tool and the
problem; good ones load from TOML `[[tools]]` or JSON in `RELAY_TOOLS`; http headers never show in
`--print-config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli.main import main
from relay.settings import load_settings
from relay.tools.config import DEFAULT_PARAMETERS, load_tools

GOOD = '[[tools]]\nname = "current_time"\nhandler = "python:relay.tools.examples:current_time"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[[tools]]\nname = "t"\nhandler = "python:no_such_module_x:f"\n', "tool 't': handler module 'no_such_module_x' does not import"),
        (  # `http://...` where `http:http://...` was meant: the URL's password is not repeated
            '[[tools]]\nname = "t"\nhandler = "http://user:pw-SECRET@example.org/x"\n',
            "tool 't': handler URL must be http:// or https://, got '//****@example.org/x'",
        ),
        (
            '[[tools]]\nname = "t"\nhandler = "python:tests.support.tool_module_exits:f"\n',
            "tool 't': handler module 'tests.support.tool_module_exits' does not import: SystemExit",
        ),
        ('[[tools]]\nname = "t"\nhandler = "python:tests.support.tools_handlers:nope"\n', "tool 't': handler module 'tests.support.tools_handlers' has no function 'nope'"),
        ('[[tools]]\nname = "t"\nhandler = "python:tests.support.tools_handlers:NOT_A_FUNCTION"\n', "tool 't': handler tests.support.tools_handlers:NOT_A_FUNCTION is not callable"),
        ('[[tools]]\nname = "t"\nhandler = "python:relay.tools.examples"\n', "tool 't': python handler must be"),
        ('[[tools]]\nname = "t"\nhandler = "http:ftp://example.org/x"\n', "tool 't': handler URL must be http:// or https://"),
        ('[[tools]]\nname = "t"\nhandler = "http:http://"\n', "tool 't': handler URL must be"),
        ('[[tools]]\nname = "t"\nhandler = "shell:rm -rf /"\n', "tool 't': `handler` must start with python: or http:"),
        ('[[tools]]\nname = "t"\n', "tool 't': `handler` is required"),
        (GOOD + GOOD, "tool 'current_time': duplicate name"),
        (GOOD + 'parameters = "object"\n', "tool 'current_time': `parameters` must be a JSON Schema object"),
        (GOOD + 'parameters = { type = "string" }\n', "tool 'current_time': `parameters` must be a JSON Schema of type \"object\""),
        (GOOD + 'parameters = { type = "object", properties = [1] }\n', "`parameters.properties` must be an object"),
        (GOOD + "timeout_seconds = 0\n", "tool 'current_time': `timeout_seconds` must be > 0"),
        (GOOD + 'timeout_seconds = "soon"\n', "`timeout_seconds` must be a number"),
        (GOOD + 'headers = { A = "b" }\n', "`headers` applies to http handlers only"),
        (GOOD + "colour = 1\n", "unknown key(s) colour"),
        ('[[tools]]\nname = "has space"\nhandler = "python:relay.tools.examples:current_time"\n', "`name` must be"),
        ('[[tools]]\nhandler = "python:relay.tools.examples:current_time"\n', "tools[0]: `name` must be"),
        ('[[tools]]\nname = "t"\nhandler = "http:http://127.0.0.1:1/x"\nheaders = { A = 1 }\n', "`headers` must be a table of strings"),
        ('tools = "current_time"\n', "expected an array of tables"),
        ("tools = [1, 2]\n", "expected an array of tables"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "mic"])
def test_a_bad_tool_stops_the_command_at_start_with_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, says: str, command: str
) -> None:
    config = write(tmp_path, toml)
    assert main([command, "--config", str(config), "--log-dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert says in err and "'tools'" in err
    assert not (tmp_path / "logs").exists(), "nothing started"


def test_a_module_that_raises_on_import_is_reported_with_its_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_tools_mod.py").write_text("raise ValueError('no config file for the CRM')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write(tmp_path, '[[tools]]\nname = "crm"\nhandler = "python:broken_tools_mod:find"\n')
    assert main(["serve", "--config", str(config)]) == 2
    assert "tool 'crm': handler module 'broken_tools_mod' does not import: ValueError: no config file for the CRM" in capsys.readouterr().err


def test_tools_load_from_toml_with_defaults_and_from_json_in_the_environment(tmp_path: Path) -> None:
    from_toml = load_tools(load_settings(env={}, config_path=write(tmp_path, GOOD)).settings)
    assert from_toml is not None
    (spec,) = from_toml.tools
    assert spec.parameters == DEFAULT_PARAMETERS and spec.timeout_seconds == 10.0 and spec.kind == "python"
    assert from_toml.hide_events and not from_toml.details_to_client and from_toml.max_output_bytes == 64 * 1024
    env = {
        "RELAY_TOOLS": json.dumps([{"name": "find", "handler": "http:https://tools.example/find", "headers": {"K": "v"}}]),
        "RELAY_SERVER_TOOL_EVENTS": "forward",
    }
    from_env = load_tools(load_settings(env=env).settings)
    assert from_env is not None and not from_env.hide_events
    assert from_env.tools[0].url == "https://tools.example/find" and dict(from_env.tools[0].headers) == {"K": "v"}
    assert load_tools(load_settings(env={}).settings) is None
    with pytest.raises(Exception, match="expected a JSON array of objects"):
        load_settings(env={"RELAY_TOOLS": "{not json"})


def test_print_config_masks_http_tool_headers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(
        tmp_path,
        '[[tools]]\nname = "find"\nhandler = "http:https://tools.example/find"\nheaders = { Authorization = "Bearer sk-secret-1" }\n',
    )
    assert main(["serve", "--config", str(config), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "sk-secret-1" not in out
    assert '"Authorization": "****"' in out and "tools.toml:1" in out
