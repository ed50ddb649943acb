"""Settings: one frozen `Settings` object, loaded in one place with precedence flag > env > TOML > default.

Every setting has one snake_case name, which is its TOML key and (upper-cased, prefixed `RELAY_`) its environment
variable. Environment lists are comma-separated and tables are JSON (CONTRACT C2). `load_settings` reads the TOML
file it is given and nothing else; bad values raise `ConfigError` naming the setting and its source (file:line
where the value came from a file). Secrets are `Secret` objects whose repr and str never show the value.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from relay.errors import ConfigError
from relay.redact import redact_text

DEFAULT_UPSTREAM: Final = "wss://ai.api.cloud.yandex.net/v1/realtime"
DEFAULT_MODEL_NAME: Final = "speech-realtime-250923"
UPSTREAM_SIM: Final = "sim"
ENV_PREFIX: Final = "RELAY_"
MiB: Final = 1024 * 1024


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _setting(default: Any, doc: str, **rules: Any) -> Any:
    """A dataclass field carrying its doc line and validation rules (min, max, choices, url, secret)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples / a factory for mutable defaults")
    return field(default=default, metadata={"doc": doc, **rules})


def _table_setting(doc: str) -> Any:
    return field(default_factory=dict, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    # --- upstream (C3)
    upstream: str = _setting(
        DEFAULT_UPSTREAM, "Upstream realtime URL (ws:// or wss://), or 'sim' for the embedded simulator.", url="ws"
    )
    model: str = _setting("", f"Upstream model; empty = gpt://$YANDEX_FOLDER_ID/{DEFAULT_MODEL_NAME}.")
    rest_base: str = _setting(
        "", "Conversations REST base URL; empty = derived from `upstream` (wss://H/v1/realtime -> https://H/v1).", url="http"
    )
    credentials_file: str = _setting(
        "", "File of KEY=VALUE lines (YANDEX_API_KEY / YANDEX_IAM_TOKEN / YANDEX_FOLDER_ID), re-read on every upstream connect."
    )
    upstream_connect_timeout_seconds: float = _setting(10.0, "Seconds to wait for the upstream handshake.", min=0.1, max=300)
    allow_client_model: bool = _setting(False, "Use the client's ?model= instead of the configured model.")
    forward_query_params: tuple[str, ...] = _setting(
        ("conversation_id",), "Client query parameters forwarded to the upstream URL (a session keeps its conversation)."
    )
    # --- files and logging (C6)
    log_dir: str = _setting("./logs", "Directory of per-session JSONL event logs.")
    data_dir: str = _setting("./data", "Directory of saved audio (<data_dir>/sessions/<session_id>/<item_id>.wav).")
    log_format: str = _setting(
        "auto", "Daemon log format: auto (console on a TTY, else JSON), json or console.", choices=("auto", "json", "console")
    )
    log_level: str = _setting("info", "Daemon log level.", choices=("debug", "info", "warning", "error"))
    log_content: bool = _setting(True, "Keep instructions, text and transcripts in event logs (false: their lengths only).")
    # --- event-log audio hash (see docs/performance.md)
    log_audio_hash: bool = _setting(
        False, "Add a sha256 (first 16 hex digits of the base64) to each audio summary in event logs."
    )
    event_log_files: bool = _setting(True, "Write per-session JSONL event logs under log_dir.")
    event_log_stdout: bool = _setting(False, "Also write every event record (same bytes) to stdout.")
    log_queue_max_bytes: int = _setting(
        64 * MiB, "Bound of the event-log queue; past it records are dropped and counted.", min=1024
    )
    # --- serve: listener and client side (C4)
    host: str = _setting("127.0.0.1", "Address `serve` listens on.")
    port: int = _setting(8080, "Port `serve` listens on (0 = any free port, logged).", min=0, max=65535)
    insecure_no_auth: bool = _setting(False, "Allow binding a non-loopback address without client tokens.")
    client_tokens: tuple[Secret, ...] = _setting(
        (), "Static client tokens (Authorization: Bearer/Api-Key, or the browser subprotocol).", secret=True
    )
    token_secret: Secret | None = _setting(
        None, "HMAC secret for ephemeral client tokens (unset: random per process).", secret=True
    )
    token_secret_file: str = _setting("", "File holding the HMAC secret for ephemeral client tokens.")
    token_ttl_seconds: int = _setting(
        600, "Default lifetime of minted client tokens; bounds of expires_after.seconds are 10..7200.", min=10, max=7200
    )
    allowed_origins: tuple[str, ...] = _setting(
        (), "Browser origins allowed besides the relay's own; only these get CORS headers."
    )
    max_client_message_bytes: int = _setting(16 * MiB, "Largest client frame; larger closes the socket with 1009.", min=1024)
    max_client_backlog_bytes: int = _setting(
        8 * MiB, "Outbound buffer per client; past it the session closes with 1008 client_too_slow.", min=1024
    )
    max_sessions: int = _setting(10, "Concurrent sessions (the upstream quota is 10 per cloud).", min=1, max=100000)
    max_session_seconds: float = _setting(0.0, "Session length limit in seconds (0 = none).", min=0)
    drain_seconds: float = _setting(30.0, "On SIGTERM, how long live sessions may run before they are closed with 1001.", min=0)
    pinned_session: dict[str, Any] = _table_setting(
        "Session fields deep-merged over every client session.update and sent at session start."
    )
    blocked_client_events: tuple[str, ...] = _setting((), "Client event types refused with error event_blocked.")
    # --- security: connection bounds, token scope, proxies, log size, metrics listener (see docs/security.md)
    header_timeout_seconds: float = _setting(
        10.0, "A connection that has not sent a whole request head within this many seconds is closed.", min=0.5, max=600
    )
    max_connections: int = _setting(
        1000, "Open client sockets at once; more are closed as soon as they are accepted (counted).", min=1, max=1000000
    )
    token_max_sessions: int = _setting(2, "Sessions one minted client token may have open at once.", min=1, max=100000)
    forwarded_allow_ips: tuple[str, ...] = _setting(
        (), "Proxy addresses (IPs or CIDRs) whose X-Forwarded-For names the client; empty: the socket peer is the client."
    )
    max_session_log_bytes: int = _setting(
        256 * MiB, "Size cap of one session's event log; past it records are dropped (relay.log_gap size_limit).", min=4096
    )
    metrics_port: int = _setting(
        0, "Serve /metrics on its own listener at this port (same host) instead of the main one; 0 = main listener.",
        min=0, max=65535,
    )
    # --- upstream resume: a dropped upstream is reconnected and the session rebuilt (docs/resume.md)
    upstream_resume: bool = _setting(True, "Reconnect an upstream that drops mid-session instead of ending the session.")
    upstream_resume_attempts: int = _setting(3, "Reconnect attempts per drop (backoff 0.5 s, 1 s, 2 s... +-50%).", min=1, max=20)
    resume_buffer_seconds: float = _setting(
        5.0, "Audio appended since the last commit (and during the gap) that is re-sent to the new upstream.", min=0, max=60
    )
    resume_history_max_bytes: int = _setting(
        256 * 1024, "Bound of the compact history (texts, call ids) a resume restores; oldest items dropped first.", min=0
    )
    # --- retrieve-after-done (C5)
    retrieve_after_done: bool = _setting(True, "Retrieve every audio item after it is done and save its post-processed audio.")
    retrieve_timeout_seconds: float = _setting(10.0, "How long to wait for a retrieve's answer.", min=0.1, max=600)
    max_item_audio_seconds: float = _setting(
        120.0, "Audio kept per item from the stream as fallback for retrieves without audio.", min=0
    )
    # --- memory bound on kept audio (see docs/client-input.md)
    kept_audio_max_bytes: int = _setting(
        64 * MiB, "Audio kept for fallback saves across all sessions; past it the oldest is released.", min=0
    )
    clamp_truncate: bool = _setting(True, "Clamp a client truncate's audio_end_ms to the audio the relay forwarded.")
    # --- simulator (C8)
    sim_host: str = _setting("127.0.0.1", "Address of the simulator (`sim` command).")
    sim_port: int = _setting(8090, "Port of the simulator (0 = any free port).", min=0, max=65535)
    sim_flavour: str = _setting("yandex", "Simulator flavour.", choices=("yandex", "openai"))
    sim_speed: float = _setting(1.0, "Simulator pacing factor (0 = as fast as possible).", min=0, max=1000)
    sim_api_key: Secret | None = _setting(None, "Key the simulator requires (unset: none).", secret=True)
    sim_knobs: dict[str, Any] = _table_setting(
        "Default fault knobs of the simulator (query parameters on its URL override them)."
    )
    # --- mic mode (C7)
    input_device: str = _setting("", "Microphone: device index or name substring (empty = default).")
    output_device: str = _setting("", "Speaker: device index or name substring (empty = default).")
    duplex: str = _setting("half", "half: mic muted while the assistant speaks; full: for headphones.", choices=("half", "full"))
    chunk_ms: int = _setting(20, "Milliseconds of audio per input_audio_buffer.append.", min=5, max=500)
    playback_buffer_ms: int = _setting(80, "Jitter buffer before playback starts.", min=0, max=5000)
    # --- configuration checking (docs/configuration.md)
    strict_config: bool = _setting(
        False, "Unknown TOML keys and RELAY_* environment variables are errors (exit 2) instead of warnings."
    )
    # --- server-side tools (see docs/tools.md; validated and imported by relay.tools.config at start)
    tools: tuple[dict[str, Any], ...] = _setting(
        (), "Server-side tools ([[tools]] tables: name, description, parameters, handler, timeout_seconds, headers)."
    )
    server_tool_events: str = _setting(
        "hide", "hide: clients see nothing of server-tool calls; forward: pass them through.", choices=("hide", "forward")
    )
    tool_details_to_client: bool = _setting(False, "relay.tool_call events to clients carry arguments and output.")
    max_tool_output_bytes: int = _setting(64 * 1024, "Longest tool output sent upstream; longer is cut with a note.", min=256)
    # --- session recording: one stereo WAV per session, and how long session files are kept (docs/recording.md)
    record_sessions: bool = _setting(
        True, "Record each session as <data_dir>/sessions/<id>/recording.wav (default off when log_content = false)."
    )
    recording_rate: int = _setting(24000, "Sample rate of session recordings (Hz).", min=8000, max=48000)
    recording_max_lead_seconds: float = _setting(
        5.0, "Audio landing further than this ahead of the wall clock is not recorded (counted as dropped_ms).", min=0.1, max=600
    )
    recording_max_seconds: float = _setting(14400.0, "Longest recording per session, in seconds (4 h).", min=1)
    retention_days: float = _setting(
        0.0, "Delete session folders and log files older than this many days, hourly (0 = keep forever).", min=0
    )


SETTING_NAMES: Final = tuple(f.name for f in fields(Settings))
_HINTS: Final = typing.get_type_hints(Settings)


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: Mapping[str, str]
    # Unknown TOML keys and RELAY_* variables, one message each (errors instead under `strict_config`).
    warnings: tuple[str, ...] = ()

    def secret_values(self) -> tuple[str, ...]:
        """Every secret setting's raw value, so output redaction can mask them (see docs/security.md)."""
        found: list[str] = []
        for name in SETTING_NAMES:
            value = getattr(self.settings, name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Secret) and item.reveal():
                    found.append(item.reveal())
        return tuple(found)


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


_ENV_NAMES: Final = frozenset(ENV_PREFIX + name.upper() for name in SETTING_NAMES)


def unknown_env_variables(env: Mapping[str, str]) -> list[str]:
    return sorted(
        variable
        for variable in env
        if variable.startswith(ENV_PREFIX)
        and variable not in ENV_NOT_SETTINGS
        and not variable.startswith(ENV_NOT_SETTINGS_PREFIXES)
        and variable not in _ENV_NAMES  # exact: RELAY_port is not RELAY_PORT, so it is reported
    )


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


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


def _coerce(name: str, raw: object, source: str, *, from_text: bool = True) -> object:
    """Turn a raw value (a string from env/flags, or a TOML value) into the setting's type, or fail clearly.

    Strings are parsed (numbers, booleans, comma lists, JSON tables) only when they come from text sources
    (`from_text`: environment and flags); a TOML file must use the TOML type itself.
    """
    kind = _kind(name)

    def bad(problem: str) -> ConfigError:
        return ConfigError(name, source, problem)

    if not from_text and isinstance(raw, str) and kind not in ("str", "secret"):
        expected = {
            "int": "an integer",
            "float": "a number",
            "bool": "a boolean (true/false)",
            "table": "a table",
            "table_list": "an array of tables",
        }
        raise bad(f"expected {expected.get(kind, 'a list of strings')}, got the string {raw!r}")

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
        return Secret(raw) if raw else None
    if kind in ("str_list", "secret_list"):
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            items = list(raw)
        else:
            raise bad("expected a list of strings")
        if kind == "secret_list":
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
    meta = next(f.metadata for f in fields(Settings) if f.name == name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise ConfigError(name, source, f"must be >= {meta['min']}, got {value}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(name, source, f"must be <= {meta['max']}, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(name, source, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
    url_kind = meta.get("url")
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


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=|^\s*\[{{1,2}}\s*{re.escape(key)}\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML config file; every failure is a ConfigError on the `config` setting."""
    source = f"--config {path}"
    if path.is_dir():
        raise ConfigError("config", source, "is a directory, not a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config", source, "file not found") from None
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
) -> LoadedSettings:
    """Build Settings from defaults, the TOML file, `RELAY_*` environment variables and flags, in that order.

    `flags` holds only the options actually given on the command line (argparse.SUPPRESS defaults), keyed by
    setting name; keys that are not settings are ignored so a parsed Namespace can be passed as is.
    Unknown TOML keys and `RELAY_*` variables end up in `warnings`, or raise ConfigError when `strict_config`
    is on (from any source).
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    unknown: list[tuple[str, str, str]] = []
    for f in fields(Settings):
        values[f.name] = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        sources[f.name] = "default"

    if config_path is None and env.get(env_name("config")):
        config_path = env[env_name("config")]
    if config_path:
        path = Path(config_path)
        data, text = read_toml(path)
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
        source = f"flag --{name.replace('_', '-')}"
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


def setting_doc(name: str) -> str:
    return str(next(f.metadata["doc"] for f in fields(Settings) if f.name == name))


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


def rest_base_url(settings: Settings) -> str:
    """The Conversations REST base: `rest_base` if set, else derived from the upstream URL (C3)."""
    if settings.rest_base:
        return settings.rest_base.rstrip("/")
    parts = urlsplit(settings.upstream if settings.upstream != UPSTREAM_SIM else DEFAULT_UPSTREAM)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if path.endswith("/realtime"):
        path = path[: -len("/realtime")]
    return f"{scheme}://{parts.netloc}{path.rstrip('/')}"
