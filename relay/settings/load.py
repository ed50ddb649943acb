"""Loading the settings: defaults, the TOML file, `RELAY_*` environment variables and flags, in that order.

Boundary: where values come from and whether they are acceptable, over the schema in `relay.settings.schema`.
Text sources are parsed here (environment lists are comma-separated and tables are JSON, docs/configuration.md);
bad values raise `ConfigError` naming the setting and its source (file:line where the value came from a file);
unknown TOML keys and `RELAY_*` variables become warnings (errors under `strict_config`) with the closest
setting's name as a hint. `load_settings` reads the TOML file it is given and nothing else. `describe` shows the
loaded result with its sources for `--print-config`, secrets masked.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from relay.errors import ConfigError
from relay.redact import redact_text
from relay.settings.schema import (
    ENV_PREFIX,
    SETTING_NAMES,
    UPSTREAM_SIM,
    LoadedSettings,
    Secret,
    Settings,
    env_name,
    setting_metadata,
)

_HINTS: Final = typing.get_type_hints(Settings)

# RELAY_* variables that are not settings: the --config twin, and the test suite's own switches.
ENV_NOT_SETTINGS: Final = frozenset({"RELAY_CONFIG", "RELAY_REQUIRE_ALL_TIERS"})
ENV_NOT_SETTINGS_PREFIXES: Final = ("RELAY_TEST_",)


def closest_setting(name: str) -> str | None:
    """The setting a misspelled name most likely meant, or None when nothing is close."""
    matches = difflib.get_close_matches(name.lower(), SETTING_NAMES, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown(name: str, source: str, *, env: bool) -> tuple[str, str, str]:
    """(name as written, source, message) for a key or variable that is no setting."""
    guess = closest_setting(name[len(ENV_PREFIX) :] if env else name)
    hint = f"; did you mean {env_name(guess) if env else guess}?" if guess else ""
    return name, source, f"unknown setting{hint}"


_ENV_NAMES: Final = frozenset(env_name(name) for name in SETTING_NAMES)


def unknown_env_variables(env: Mapping[str, str]) -> list[str]:
    return sorted(
        variable
        for variable in env
        if variable.startswith(ENV_PREFIX)
        and variable not in ENV_NOT_SETTINGS
        and not variable.startswith(ENV_NOT_SETTINGS_PREFIXES)
        and variable not in _ENV_NAMES  # exact: RELAY_port is not RELAY_PORT, so it is reported
    )


def _kind(name: str) -> str:
    hint = _HINTS[name]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is str:
        return "str"
    if origin is tuple:
        if args and typing.get_origin(args[0]) is dict:
            return "table_list"
        return "secret_list" if args and args[0] is Secret else "str_list"
    if origin is dict:
        return "table"
    if origin in (typing.Union, types.UnionType) and Secret in args:
        return "secret"
    raise TypeError(f"unsupported setting type for {name}: {hint}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def is_utf8_text(value: str) -> bool:
    """False for a string holding bytes that were not UTF-8 (the environment and argv keep them as lone
    surrogates): no URL, header, token or file name can carry it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _coerce(name: str, raw: object, source: str, *, from_text: bool = True) -> object:
    """Turn a raw value (a string from env/flags, or a TOML value) into the setting's type, or fail clearly.

    Strings are parsed (numbers, booleans, comma lists, JSON tables) only when they come from text sources
    (`from_text`: environment and flags); a TOML file must use the TOML type itself.
    """
    kind = _kind(name)

    def bad(problem: str) -> ConfigError:
        return ConfigError(name, source, problem)

    if isinstance(raw, str) and not is_utf8_text(raw):
        # Caught here, they would fail in the middle of a session instead.
        raise bad("is not valid UTF-8 text")

    if not from_text and isinstance(raw, str) and kind not in ("str", "secret"):
        expected = {
            "int": "an integer",
            "float": "a number",
            "bool": "a boolean (true/false)",
            "table": "a table",
            "table_list": "an array of tables",
        }
        # A secret's value is never repeated: a token written as a string instead of a list is still a token.
        got = "a string" if kind == "secret_list" else f"the string {raw!r}"
        raise bad(f"expected {expected.get(kind, 'a list of strings')}, got {got}")

    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise bad(f"expected a boolean (true/false), got {raw!r}")
    if kind in ("int", "float"):
        if isinstance(raw, bool):
            raise bad(f"expected a number, got {raw!r}")
        try:
            if kind == "int":
                if isinstance(raw, float):
                    raise ValueError
                value: float = int(raw.strip()) if isinstance(raw, str) else int(typing.cast(int, raw))
            else:
                value = float(raw.strip()) if isinstance(raw, str) else float(typing.cast(float, raw))
        except (TypeError, ValueError):
            raise bad(f"expected {'an integer' if kind == 'int' else 'a number'}, got {raw!r}") from None
        if kind == "float" and not math.isfinite(value):
            raise bad(f"expected a finite number, got {raw!r}")
        return value
    if kind == "str":
        if not isinstance(raw, str):
            raise bad(f"expected a string, got {raw!r}")
        return raw
    if kind == "secret":
        if not isinstance(raw, str):
            raise bad("expected a string")
        if not raw and setting_metadata(name).get("gates_access"):
            # A key that turns access control on must not read as "no key" when a template left it empty: that
            # would open what it was meant to close.
            raise bad("an empty string is not a key (leave the setting out for none)")
        return Secret(raw) if raw else None
    if kind in ("str_list", "secret_list"):
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            items = list(raw)
        else:
            raise bad("expected a list of strings")
        if kind == "secret_list":
            if any(not x.strip() for x in items):
                # A token list with an empty entry (a template's unset variable) must not read as "no tokens":
                # that would turn client auth off, and the checks that guard an open relay would not see it.
                raise bad("an empty string is not a token (remove it, or set the value it was meant to hold)")
            return tuple(Secret(x) for x in items)
        return tuple(items)
    if kind in ("table", "table_list") and isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise bad(f"expected {'a JSON object' if kind == 'table' else 'a JSON array of objects'}: {exc}") from None
    if kind == "table_list":
        if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
            raise bad("expected an array of tables ([[tools]] in TOML, a JSON array of objects in the environment)")
        return tuple(raw)
    if kind == "table":
        if not isinstance(raw, dict):
            raise bad("expected a table (a JSON object in the environment)")
        return raw
    raise AssertionError(kind)


def _validate(name: str, value: object, source: str) -> None:
    meta = setting_metadata(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise ConfigError(name, source, f"must be >= {meta['min']}, got {value}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(name, source, f"must be <= {meta['max']}, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(name, source, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
    url_kind = meta.get("url")
    if url_kind == "ws" and value == "":
        raise ConfigError(name, source, "must not be empty: leave it unset for the default, or use 'sim' for the simulator")
    if url_kind and isinstance(value, str) and value and any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ConfigError(name, source, f"a URL has no spaces or control characters, got {value!r}")
    if url_kind and isinstance(value, str) and value:
        if url_kind == "ws" and value == UPSTREAM_SIM:
            return
        schemes = ("ws", "wss") if url_kind == "ws" else ("http", "https")
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
            parts = urlsplit("")
        if parts.scheme not in schemes or not parts.hostname or not port_ok:
            raise ConfigError(name, source, f"expected a {' or '.join(s + '://' for s in schemes)} URL, got {value!r}")
        if url_kind == "http" and "@" in parts.netloc:
            # The REST API is called with the relay's credentials; the URL (its password) is not repeated here.
            raise ConfigError(
                name, source, "must not carry user:password@: the REST API is called with YANDEX_API_KEY / YANDEX_IAM_TOKEN"
            )


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=|^\s*\[{{1,2}}\s*{re.escape(key)}\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


MAX_SETTINGS_FILE_BYTES: Final = 1024 * 1024


class FileRefused(Exception):
    """A file named by a setting that is not one to read: not a regular file, or far too large. The message
    names the reason only (never the content)."""


def read_settings_file(path: Path, max_bytes: int = MAX_SETTINGS_FILE_BYTES) -> str:
    """The text of a small file named by a setting (the config file, the credentials file, the token secret
    file). Only a regular file is opened, so a FIFO (which would block the start) or a device such as /dev/zero
    (which never ends) is refused, and so is anything over `max_bytes`. OSError and UnicodeDecodeError as
    reading raises them."""
    mode = path.stat().st_mode  # follows symlinks: what would be read
    if stat.S_ISDIR(mode):
        raise FileRefused("is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise FileRefused("is not a regular file")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(f"is larger than {max_bytes} bytes")
    return data.decode("utf-8")


def read_toml(path: Path, named_by: str = "--config") -> tuple[dict[str, Any], str]:
    """Parse a TOML config file; every failure is a ConfigError on the `config` setting, naming where the path
    came from (`named_by`: the flag or the environment variable)."""
    source = f"{named_by} {path}"
    try:
        text = read_settings_file(path)
    except FileNotFoundError:
        raise ConfigError("config", source, "file not found") from None
    except FileRefused as exc:
        raise ConfigError("config", source, str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", source, f"cannot read: {exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", source, f"not valid TOML: {exc}") from None


def load_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Build Settings from defaults, the TOML file, `RELAY_*` environment variables and flags, in that order.

    `flags` holds only the options actually given on the command line (argparse.SUPPRESS defaults), keyed by
    setting name; keys that are not settings are ignored so a parsed Namespace can be passed as is.
    Unknown TOML keys and `RELAY_*` variables end up in `warnings`, or raise ConfigError when `strict_config`
    is on (from any source). `flag_names` maps a setting to the flag that sets it where the two differ (`sim`'s
    `--speed` sets `sim_speed`), so an error names what the user typed.
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    unknown: list[tuple[str, str, str]] = []
    for f in fields(Settings):
        values[f.name] = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        sources[f.name] = "default"

    config_named_by = "--config"
    if config_path is None and env.get(env_name("config")):
        config_path = env[env_name("config")]
        config_named_by = f"env {env_name('config')}"
    if config_path:
        path = Path(config_path)
        data, text = read_toml(path, config_named_by)
        for key, raw in data.items():
            line = _line_of(text, key)
            source = f"{path}:{line}" if line else str(path)
            if key not in SETTING_NAMES:
                unknown.append(_unknown(key, source, env=False))
                continue
            values[key] = _coerce(key, raw, source, from_text=False)
            _validate(key, values[key], source)
            sources[key] = source

    unknown.extend(_unknown(variable, f"env {variable}", env=True) for variable in unknown_env_variables(env))
    for name in SETTING_NAMES:
        variable = env_name(name)
        if variable in env:
            source = f"env {variable}"
            values[name] = _coerce(name, env[variable], source)
            _validate(name, values[name], source)
            sources[name] = source

    for name, raw in (flags or {}).items():
        if name not in SETTING_NAMES:
            continue
        source = f"flag {(flag_names or {}).get(name) or '--' + name.replace('_', '-')}"
        values[name] = _coerce(name, raw, source)
        _validate(name, values[name], source)
        sources[name] = source

    # Recording keeps what people said; with log_content off it stays off unless asked for explicitly.
    if sources["record_sessions"] == "default" and values["log_content"] is False:
        values["record_sessions"] = False
        sources["record_sessions"] = "default (off: log_content = false)"
    if unknown and values["strict_config"]:
        raise ConfigError(*unknown[0])
    warnings = tuple(f"setting {name!r} from {source}: {problem}" for name, source, problem in unknown)
    return LoadedSettings(Settings(**values), sources, warnings)  # type: ignore[arg-type]


def describe(loaded: LoadedSettings) -> str:
    """`--print-config`: every effective setting with its source, secrets masked."""
    lines = []
    for name in SETTING_NAMES:
        value = getattr(loaded.settings, name)
        if isinstance(value, tuple) and value and isinstance(value[0], Secret):
            shown = f"[{', '.join('****' for _ in value)}]"
        elif isinstance(value, Secret):
            shown = '"****"'
        elif name == "tools":
            # http handlers' headers usually carry credentials: only their names are shown.
            masked = [
                {**t, "headers": {k: "****" for k in t["headers"]}} if isinstance(t.get("headers"), dict) else t
                for t in value
            ]
            shown = json.dumps(masked)
        elif isinstance(value, (dict, tuple, bool)):
            shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        else:
            shown = json.dumps(value)
        # URL userinfo and secret-looking query values never reach the terminal (see docs/security.md).
        lines.append(redact_text(f"{name} = {shown}  # {loaded.sources[name]}"))
    return "\n".join(lines)
