"""The `serve` app factory (see docs/architecture.md): `create_app` builds an aiohttp app, its state and its routes.

State lives on the app under one `web.AppKey` (`STATE`, `relay.server.state`). `create_app` builds the state and the
event log (or takes a shared one) and checks the settings it needs (token secret, simulator knobs, tools,
`forwarded_allow_ips`), so a bad one fails before anything listens; it mounts the handlers of
`relay.server.realtime` and `relay.server.routes` behind the guards of `relay.server.guards` (and, with auth off on
a loopback bind, the `relay.server.access` Host/Origin guard). `cleanup_ctx` starts the embedded simulator
(`--upstream sim`), the REST client session and the retention sweep, and on the way out asks live sessions to end,
closes them, and closes the event log only when it made it. Draining (`start_drain`, `drain`, `force_close`) flips
`/readyz` to 503 and turns new upgrades away with 503 + Retry-After while live sessions go on (see
docs/lifecycle.md). `create_metrics_app` serves `/metrics` and the probes on a listener of their own.

I/O: the handlers serve HTTP/WebSocket on whatever runner the caller starts; upstream sockets open only through
`SessionBridge`, REST connections only through the proxy's pooled session, and files are read only for static
assets, saved audio and recordings under `data_dir` and `token_secret_file`; the retention sweep
(`relay.recording.retention`) deletes old session files on a worker thread. It does not bind, handle signals or exit
(that is `relay.cli.serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from relay.bridge import SessionBridge
from relay.errors import ConfigError
from relay.eventlog.writer import EventLog
from relay.history.client import create_http_session
from relay.metrics import RelayMetrics
from relay.recording.retention import retention_task
from relay.server import access
from relay.server.access import is_loopback
from relay.server.auth import MIN_SECRET_BYTES, TokenAuthority
from relay.server.guards import cors, cors_headers, requires_auth
from relay.server.realtime import realtime
from relay.server.routes import (
    STATIC_DIR,
    auth_probe,
    client_secrets,
    conversations_proxy,
    healthz,
    index,
    metrics,
    no_such_session_file,
    readyz,
    saved_audio,
    session_recording,
)
from relay.server.state import STATE, RelayState, live_sessions
from relay.settings import UPSTREAM_SIM, FileRefused, Settings, read_settings_file, rest_base_url
from relay.tools.config import load_tools
from relay.wiring import open_event_log, simulator_options

if TYPE_CHECKING:
    from relay.simulator import SimulatorOptions

__all__ = [
    "STATE",
    "RelayState",
    "check_bind_policy",
    "create_app",
    "create_metrics_app",
    "drain",
    "force_close",
    "is_loopback",
    "start_drain",
    "token_secret",
]

log = structlog.get_logger()


def token_secret(settings: Settings) -> tuple[bytes, bool]:
    """(secret, shared): from token_secret / token_secret_file, else a random per-process one."""
    if settings.token_secret is not None:
        return _strong_enough("token_secret", "token_secret", settings.token_secret.reveal().encode()), True
    if settings.token_secret_file:
        try:
            value = read_settings_file(Path(settings.token_secret_file)).strip()
        except FileRefused as exc:
            raise ConfigError("token_secret_file", settings.token_secret_file, str(exc)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("token_secret_file", settings.token_secret_file, f"cannot read: {exc.__class__.__name__}") from None
        if not value:
            raise ConfigError("token_secret_file", settings.token_secret_file, "file is empty")
        return _strong_enough("token_secret_file", settings.token_secret_file, value.encode()), True
    return TokenAuthority.random_secret(), False


def _strong_enough(name: str, source: str, secret: bytes) -> bytes:
    """A short HMAC secret is brute-forced from one token: refuse it (exit 2)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            name, source, f"is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -base64 32`)"
        )
    return secret


def check_bind_policy(settings: Settings) -> None:
    """A non-loopback bind without client tokens refuses to start (exit 2) unless --insecure-no-auth."""
    if not settings.client_tokens and not is_loopback(settings.host) and not settings.insecure_no_auth:
        raise ConfigError(
            "host",
            settings.host,
            "binding a non-loopback address without client_tokens would expose the upstream key; "
            "configure client_tokens (RELAY_CLIENT_TOKENS) or pass --insecure-no-auth",
        )


def host_guard(settings: Settings) -> list[Any]:
    """The Host and Origin rules of every listener of the process (see docs/security.md): one of each at most,
    and with auth off on a loopback bind, only the relay's own loopback origin is served."""
    guards: list[Any] = [access.one_host_one_origin]
    if not settings.client_tokens and is_loopback(settings.host):
        guards.append(access.loopback_guard(settings.allowed_origins, "https" if settings.tls_cert_file else "http"))
    return guards


def create_metrics_app(app: web.Application) -> web.Application:
    """`/metrics` (and the probes) of `app` on an app of their own, for the `metrics_port` listener, behind the
    same Host/Origin guard (its connections go through the same bounds: `serve` listens for it like for `app`)."""
    metrics_app = web.Application(middlewares=host_guard(app[STATE].settings))
    metrics_app[STATE] = app[STATE]
    metrics_app.router.add_get("/metrics", metrics)
    metrics_app.router.add_get("/healthz", healthz)
    metrics_app.router.add_get("/readyz", readyz)
    return metrics_app


# ---- lifecycle --------------------------------------------------------------------------------------------


async def _resources(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    settings = state.settings
    if state.simulator_options is not None:
        from relay.simulator import start_simulator

        state.simulator = await start_simulator(state.simulator_options, host="127.0.0.1", port=0)
        state.upstream_base = state.simulator.realtime_url
        state.rest_base = settings.rest_base.rstrip("/") if settings.rest_base else state.simulator.rest_base
        log.info("relay.simulator_started", realtime_url=state.upstream_base, rest_base=state.rest_base)
    # One pooled HTTP session per process, made as `history` makes its own (`create_http_session`); the proxy sets
    # its own per-request timeout and never decompresses.
    state.http = create_http_session()
    # Old session folders and logs go after retention_days (docs/recording.md).
    retention = retention_task(Path(settings.data_dir), Path(settings.log_dir), settings.retention_days)
    try:
        yield
    finally:
        if retention is not None:
            retention.cancel()
        state.heap.cancel()
        state.stop_sessions()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.no_sessions.wait(), timeout=5.0)
        if state.spool is not None:  # what is queued (sessions' ends included) is done, then its thread ends
            await asyncio.to_thread(state.spool.stop)
        await state.http.close()
        if state.simulator is not None:
            await state.simulator.close()
        if state.owns_event_log:
            # Every record of every session reaches the disk before the app is gone (docs/event-log.md).
            await asyncio.to_thread(state.event_log.close)


def start_drain(app: web.Application) -> None:
    """Stop accepting: /readyz answers 503 and new upgrades get 503 + Retry-After; live sessions go on."""
    app[STATE].draining = True


def force_close(app: web.Application) -> None:
    """Ask every live session to close now with 1001 (the end of a drain, or a second signal)."""
    state = app[STATE]
    state.draining = True
    state.stop_sessions()


FORCED_CLOSE_WAIT_S = 20.0


async def drain(app: web.Application, seconds: float) -> None:
    """SIGTERM: readyz 503, live sessions run up to `seconds`, then close with 1001; returns when all ended.

    See docs/lifecycle.md, "SIGTERM: the drain"."""
    state = app[STATE]
    start_drain(app)
    log.info("relay.draining", sessions=len(state.bridges), drain_seconds=seconds)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.no_sessions.wait(), timeout=max(0.0, seconds))
    force_close(app)
    # A closed session ends within seconds (close handshakes and retrieve graces are bounded); one that does not
    # must not keep the process from exiting with its logs flushed.
    try:
        await asyncio.wait_for(state.no_sessions.wait(), timeout=FORCED_CLOSE_WAIT_S)
    except TimeoutError:
        log.warning("relay.drain_incomplete", sessions=len(state.bridges))


def embedded_simulator_options(settings: Settings) -> SimulatorOptions | None:
    """The embedded simulator's options for `--upstream sim` (None otherwise), `sim_knobs` included."""
    if settings.upstream != UPSTREAM_SIM:
        return None
    return simulator_options(settings, embedded=True)


def create_app(settings: Settings, *, event_log: EventLog | None = None) -> web.Application:
    """The relay app. `event_log` may be shared (tests); by default one is made from the settings."""
    secret, shared = token_secret(settings)
    if not shared and settings.client_tokens:
        log.warning(
            "relay.token_secret_random",
            detail="no token_secret configured: other replicas cannot verify this process's client tokens",
        )
    simulator_options = embedded_simulator_options(settings)  # a bad knob fails here, before a log is opened
    tools = load_tools(settings)  # so does a server tool that does not load (exit 2 naming the tool)
    owns_event_log = event_log is None
    if event_log is None:
        event_log = open_event_log(settings)
    authority = TokenAuthority(settings.client_tokens, secret, default_ttl=settings.token_ttl_seconds)
    try:
        proxies = access.parse_networks(settings.forwarded_allow_ips)
    except ValueError as exc:
        raise ConfigError("forwarded_allow_ips", ",".join(settings.forwarded_allow_ips), str(exc)) from None
    bridges: set[SessionBridge] = set()
    state = RelayState(
        settings=settings,
        authority=authority,
        event_log=event_log,
        metrics=RelayMetrics(lambda: live_sessions(bridges), lambda: event_log.dropped_total),
        upstream_base=settings.upstream,
        rest_base=rest_base_url(settings),
        bridges=bridges,
        simulator_options=simulator_options,
        owns_event_log=owns_event_log,
        proxies=proxies,
        tools=tools,
    )
    app = web.Application(client_max_size=settings.max_client_message_bytes, middlewares=[*host_guard(settings), cors])
    app.on_response_prepare.append(cors_headers)
    app[STATE] = state
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/v1/realtime", requires_auth(realtime))
    # The older path that Yandex's own example voice agent still connects to: the same route (README, Commands).
    app.router.add_get("/v1/realtime/openai", requires_auth(realtime))
    app.router.add_post("/v1/realtime/client_secrets", client_secrets)
    app.router.add_get("/relay/auth", auth_probe)
    app.router.add_get("/relay/sessions/{session_id}/items/{item_id}.wav", requires_auth(saved_audio, session_files=True))
    app.router.add_get(
        "/relay/sessions/{session_id}/recording.wav", requires_auth(session_recording, session_files=True)
    )
    app.router.add_get(r"/relay/sessions/{tail:[\s\S]*}", requires_auth(no_such_session_file))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if not settings.metrics_port:
        app.router.add_get("/metrics", metrics)
    # The REST proxy spends the operator's key on any conversation: static tokens only, never minted ones.
    app.router.add_route("*", "/v1/conversations", requires_auth(conversations_proxy, minted=False))
    app.router.add_route("*", "/v1/conversations/{tail:.*}", requires_auth(conversations_proxy, minted=False))
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
    return app
