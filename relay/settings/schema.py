"""The settings schema: every setting's name, type, default, doc line and validation rules, and `Secret`.

Boundary: what the settings are, not where they come from. `Settings` is the one frozen object every part reads;
each field carries its doc line and rules (min, max, choices, url, secret) as metadata, which the loader
(`relay.settings.load`) checks and `--print-config` shows. Every setting has one snake_case name, which is its TOML
key and (upper-cased, prefixed `RELAY_`, see `env_name`) its environment variable (docs/configuration.md).
Secrets are `Secret` objects whose repr and str never show the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import urlsplit

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
    """A dataclass field carrying its doc line and validation rules (min, max, choices, url, secret, gates_access:
    a secret whose empty value is an error, not "unset")."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples / a factory for mutable defaults")
    return field(default=default, metadata={"doc": doc, **rules})


def _table_setting(doc: str) -> Any:
    return field(default_factory=dict, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    # --- upstream (docs/forwarding.md, "Upstream URL, model and query")
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
    # --- files and logging (docs/event-log.md)
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
    # --- serve: listener and client side (docs/lifecycle.md, docs/client-input.md)
    host: str = _setting("127.0.0.1", "Address `serve` listens on.")
    event_loop: str = _setting(
        "uvloop", "Event loop `serve` runs on: uvloop (less CPU per frame; not with tls_cert_file) or asyncio.",
        choices=("uvloop", "asyncio"),
    )  # fmt: skip
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
        10.0,
        "A connection that has not sent a whole request head within this many seconds is closed (a client_secrets "
        "body gets as long, then 408).",
        min=0.5,
        max=600,
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
    tls_cert_file: str = _setting(
        "", "PEM certificate (chain) for serve's listeners: https:// and wss:// instead of http:// and ws://; with tls_key_file."
    )
    tls_key_file: str = _setting("", "PEM private key of tls_cert_file.")
    # --- upstream resume: a dropped upstream is reconnected and the session rebuilt (docs/resume.md)
    upstream_resume: bool = _setting(True, "Reconnect an upstream that drops mid-session instead of ending the session.")
    upstream_resume_attempts: int = _setting(3, "Reconnect attempts per drop (backoff 0.5 s, 1 s, 2 s... +-50%).", min=1, max=20)
    resume_buffer_seconds: float = _setting(
        5.0, "Audio appended since the last commit (and during the gap) that is re-sent to the new upstream.", min=0, max=60
    )
    resume_history_max_bytes: int = _setting(
        256 * 1024, "Bound of the compact history (texts, call ids) a resume restores; oldest items dropped first.", min=0
    )
    # --- retrieve-after-done (docs/retrieve-after-done.md)
    retrieve_after_done: bool = _setting(True, "Retrieve every audio item after it is done and save its post-processed audio.")
    retrieve_timeout_seconds: float = _setting(10.0, "How long to wait for a retrieve's answer.", min=0.1, max=600)
    max_item_audio_seconds: float = _setting(
        120.0, "Audio kept per item from the stream as fallback for retrieves without audio.", min=0
    )
    # --- memory bound on kept audio (see docs/client-input.md)
    kept_audio_max_bytes: int = _setting(
        64 * MiB, "Audio kept for fallback saves across all sessions (on disk with serve); past it the oldest is released.", min=0
    )
    clamp_truncate: bool = _setting(True, "Clamp a client truncate's audio_end_ms to the audio the relay forwarded.")
    # --- simulator (the `sim` command, and `--upstream sim` for `serve` and `mic`)
    sim_host: str = _setting("127.0.0.1", "Address of the simulator (`sim` command).")
    sim_port: int = _setting(8090, "Port of the simulator (0 = any free port).", min=0, max=65535)
    sim_flavour: str = _setting("yandex", "Simulator flavour.", choices=("yandex", "openai"))
    sim_speed: float = _setting(1.0, "Simulator pacing factor (0 = as fast as possible).", min=0, max=1000)
    sim_api_key: Secret | None = _setting(
        None, "Key the simulator requires (unset: none; an empty value is an error).", secret=True, gates_access=True
    )
    sim_knobs: dict[str, Any] = _table_setting(
        "Default fault knobs of the simulator (query parameters on its URL override them)."
    )
    # --- mic mode (the README's `mic` mode section)
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



def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()



def setting_metadata(name: str) -> Mapping[str, Any]:
    """A setting's doc line and validation rules (min, max, choices, url, secret), as its field carries them."""
    return next(f.metadata for f in fields(Settings) if f.name == name)


def setting_doc(name: str) -> str:
    return str(setting_metadata(name)["doc"])



def rest_base_url(settings: Settings) -> str:
    """The Conversations REST base: `rest_base` if set, else derived from the upstream URL (docs/history.md)."""
    if settings.rest_base:
        return settings.rest_base.rstrip("/")
    parts = urlsplit(settings.upstream if settings.upstream != UPSTREAM_SIM else DEFAULT_UPSTREAM)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if path.endswith("/realtime"):
        path = path[: -len("/realtime")]
    # Never the upstream's user:password@: the REST API is called with the relay's credentials, and a URL with
    # userinfo next to an Authorization header is refused by the HTTP client.
    host = parts.netloc.rpartition("@")[2]
    return f"{scheme}://{host}{path.rstrip('/')}"
