"""The `serve` HTTP/WebSocket adapter (CONTRACT C4): an aiohttp app factory and its routes.

Routes: `GET /v1/realtime` (one client socket <-> one upstream session via `SessionBridge`),
`POST /v1/realtime/client_secrets`, `GET /relay/auth`, `GET /relay/sessions/{sid}/items/{item}.wav`,
`GET /relay/sessions/{sid}/recording.wav`,
`/v1/conversations...` (REST proxy), and the public `/`, static files, `/healthz`, `/readyz`, `/metrics`.
State lives on the app under one `web.AppKey` (`STATE`). `create_app` builds the state and the event log (or takes
a shared one) and checks the settings it needs (token secret, simulator knobs), so a bad one fails before anything
listens; `cleanup_ctx` starts the embedded simulator (`--upstream sim`) and the REST client session, and on the
way out asks live sessions to end, closes both, and closes the event log only when it made it. Draining
(`start_drain`) flips `/readyz` to 503 and turns new upgrades away with 503 + Retry-After while live sessions go on.

I/O: this module serves HTTP/WebSocket on whatever runner the caller starts; it opens upstream sockets only
through `SessionBridge`, REST connections only through the proxy's pooled session, and reads files only for
static assets, saved audio and recordings under `data_dir` and `token_secret_file`; the retention sweep
(`relay.recording.retention`) deletes old session files on a worker thread. It does not bind, handle signals or exit
(that is `relay.commands.serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from relay import events as ev
from relay.auth import TokenAuthority, token_from_request
from relay.bridge import (
    BridgeEnvironment,
    EndReason,
    SessionBridge,
    UpstreamTarget,
    new_session_id,
    session_policy,
    upstream_target,
)
from relay.conversations import create_http_session
from relay.credentials import Credentials
from relay.errors import ConfigError
from relay.eventlog import EventLog
from relay.metrics import RelayMetrics
from relay.recording import RECORDING_FILE, recording_options
from relay.recording.retention import retention_task
from relay.session import SAFE_ITEM_ID_RE
from relay.settings import UPSTREAM_SIM, Settings, rest_base_url
from relay.wsclient import WebSocketClient

if TYPE_CHECKING:
    from relay.simulator import SimulatorOptions

log = structlog.get_logger()

STATIC_DIR = Path(__file__).parent / "static"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class RelayState:
    settings: Settings
    authority: TokenAuthority
    event_log: EventLog
    metrics: RelayMetrics
    upstream_base: str
    rest_base: str
    draining: bool = False
    bridges: set[SessionBridge] = field(default_factory=set)
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)
    http: aiohttp.ClientSession | None = None
    simulator: Any = None
    simulator_options: SimulatorOptions | None = None  # set when the upstream is the embedded simulator
    owns_event_log: bool = False
    # Set whenever `bridges` is empty, so shutdown waits on it instead of polling.
    no_sessions: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.bridges:
            self.no_sessions.set()

    def add_bridge(self, bridge: SessionBridge) -> None:
        self.bridges.add(bridge)
        self.no_sessions.clear()

    def discard_bridge(self, bridge: SessionBridge) -> None:
        self.bridges.discard(bridge)
        if not self.bridges:
            self.no_sessions.set()

    @property
    def auth_required(self) -> bool:
        return self.authority.auth_enabled


STATE: web.AppKey[RelayState] = web.AppKey("relay_state", RelayState)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_secret(settings: Settings) -> tuple[bytes, bool]:
    """(secret, shared): from token_secret / token_secret_file, else a random per-process one."""
    if settings.token_secret is not None:
        return settings.token_secret.reveal().encode(), True
    if settings.token_secret_file:
        try:
            value = Path(settings.token_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("token_secret_file", settings.token_secret_file, f"cannot read: {exc.__class__.__name__}") from None
        if not value:
            raise ConfigError("token_secret_file", settings.token_secret_file, "file is empty")
        return value.encode(), True
    return TokenAuthority.random_secret(), False


def check_bind_policy(settings: Settings) -> None:
    """C4: a non-loopback bind without client tokens refuses to start unless --insecure-no-auth."""
    if not settings.client_tokens and not is_loopback(settings.host) and not settings.insecure_no_auth:
        raise ConfigError(
            "host",
            settings.host,
            "binding a non-loopback address without client_tokens would expose the upstream key; "
            "configure client_tokens (RELAY_CLIENT_TOKENS) or pass --insecure-no-auth",
        )


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _openai_error(status: int, message: str, code: str, error_type: str = "invalid_request_error") -> web.Response:
    return _json(status, {"error": {"message": message, "type": error_type, "param": None, "code": code}})


def _authorized(request: web.Request) -> bool:
    state = request.app[STATE]
    if not state.auth_required:
        return True
    token = token_from_request(request.headers, _offered_protocols(request))
    return state.authority.verify(token)


def _offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _origin_allowed(request: web.Request) -> bool:
    allowed = request.app[STATE].settings.allowed_origins
    origin = request.headers.get("Origin")
    return not allowed or origin is None or origin in allowed


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes a page on another origin may call (CORS): the client module and its siblings, the auth probe, saved
# audio and the conversations proxy. WebSocket upgrades need no CORS; `allowed_origins` still applies to them.
_CORS_PREFIXES = ("/static/", "/relay/", "/v1/conversations")
_CORS_ALLOW_HEADERS = "Authorization, Content-Type"
_CORS_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"


def _cors_origin(request: web.Request) -> str | None:
    """The Origin to echo in Access-Control-Allow-Origin, or None when the request gets no CORS headers."""
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith(_CORS_PREFIXES):
        return None
    allowed = request.app[STATE].settings.allowed_origins
    return origin if not allowed or origin in allowed else None


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Cross-origin embedding (README): preflights are answered here, before auth and routing."""
    origin = _cors_origin(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if origin is None:
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for streamed responses (the REST proxy, files) as well as plain ones."""
    origin = _cors_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


def requires_auth(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _origin_allowed(request):
            log.warning("relay.origin_refused", origin=request.headers.get("Origin"), path=request.path)
            return _openai_error(403, "origin not allowed", "origin_not_allowed")
        if not _authorized(request):
            # Never log the token itself.
            log.warning("relay.auth_failed", path=request.path, remote=request.remote)
            return _openai_error(401, "missing or invalid client token", "invalid_api_key")
        return await handler(request)

    return guarded


# ---- the realtime socket ----------------------------------------------------------------------------------


async def realtime(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    if state.draining:
        return web.Response(
            status=503, text="relay is draining", headers={"Retry-After": str(max(1, int(settings.drain_seconds)))}
        )
    offered = _offered_protocols(request)
    ws = web.WebSocketResponse(
        protocols=("realtime",) if "realtime" in offered else (),
        # aiohttp refuses a message of exactly max_msg_size; the contract allows up to the limit itself.
        max_msg_size=settings.max_client_message_bytes + 1,
        autoping=True,
        heartbeat=None,
        timeout=5.0,  # a close handshake that does not finish in 5 s is abandoned (C4)
        compress=False,
    )
    await ws.prepare(request)
    state.sockets.add(ws)
    client = WebSocketClient(ws, settings.max_client_backlog_bytes)
    query = request.query
    client_model = query.get("model")
    relay_events = query.get("relay_events", "") in ("1", "true", "yes")
    session_id = new_session_id()
    started_info: dict[str, Any] = {
        "client_model": client_model,
        "remote": request.remote,
        "relay_events": relay_events,
        "user_agent": request.headers.get("User-Agent"),
    }

    def target() -> UpstreamTarget:
        return upstream_target(
            settings,
            state.upstream_base,
            simulator=state.simulator is not None,
            client_model=client_model,
            client_query=query.items(),
        )

    policy = session_policy(settings, relay_events=relay_events)
    env = BridgeEnvironment(
        event_log=state.event_log,
        data_dir=Path(settings.data_dir),
        retrieve_timeout=settings.retrieve_timeout_seconds,
        metrics=state.metrics,
        recording=recording_options(settings),
    )
    bridge = SessionBridge(
        client,
        target,
        policy,
        env,
        session_id=session_id,
        started_info=started_info,
        max_session_seconds=settings.max_session_seconds,
    )
    try:
        if len(state.bridges) >= settings.max_sessions:
            await bridge.refuse(
                EndReason.TOO_MANY_SESSIONS, ev.CODE_TOO_MANY_SESSIONS, "the relay is at max_sessions; try again later", 1013
            )
            return ws
        state.add_bridge(bridge)
        try:
            await bridge.run()
        finally:
            state.discard_bridge(bridge)
    finally:
        await client.stop_writer()
    return ws


# ---- tokens and small routes ------------------------------------------------------------------------------


async def client_secrets(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    # The same `allowed_origins` check as every other token-guarded route (C4): a page on a foreign origin
    # holding a static token must not mint tokens either. Server-side callers send no Origin and pass.
    if not _origin_allowed(request):
        log.warning("relay.origin_refused", origin=request.headers.get("Origin"), path=request.path)
        return _openai_error(403, "origin not allowed", "origin_not_allowed")
    token = token_from_request(request.headers, ())
    if state.auth_required and (token is None or not state.authority.is_static(token)):
        log.warning("relay.auth_failed", path=request.path, remote=request.remote)
        return _openai_error(401, "client_secrets needs a static client token", "invalid_api_key")
    ttl: int | None = None
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return _openai_error(400, "the body is not valid JSON", "invalid_json")
            if not isinstance(body, dict):
                return _openai_error(400, "the body must be a JSON object", "invalid_json")
            expires = body.get("expires_after")
            if expires is not None:
                seconds = expires.get("seconds") if isinstance(expires, dict) else None
                if not isinstance(seconds, int) or isinstance(seconds, bool):
                    return _openai_error(400, "expires_after.seconds must be an integer", "invalid_value")
                ttl = seconds
    try:
        minted = state.authority.mint(ttl)
    except ValueError as exc:
        return _openai_error(400, str(exc), "invalid_value")
    return _json(200, {"value": minted.value, "expires_at": minted.expires_at})


async def auth_probe(request: web.Request) -> web.StreamResponse:
    if not _origin_allowed(request) or not _authorized(request):
        return web.Response(status=401)
    return web.Response(status=204)


async def saved_audio(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    session_id = request.match_info["session_id"]
    item_id = request.match_info["item_id"]
    not_found = _openai_error(404, "no such saved audio", "not_found")
    if not ID_RE.match(session_id) or not SAFE_ITEM_ID_RE.match(item_id):
        return not_found
    root = (Path(state.settings.data_dir) / "sessions").resolve()
    path = (root / session_id / f"{item_id}.wav").resolve()
    if root not in path.parents or not path.is_file():
        return not_found
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


async def session_recording(request: web.Request) -> web.StreamResponse:
    """A session's recording (docs/recording.md), under the same id rules as saved audio; FileResponse answers
    Range requests, so a browser can seek in it."""
    state = request.app[STATE]
    session_id = request.match_info["session_id"]
    not_found = _openai_error(404, "no such recording", "not_found")
    if not ID_RE.match(session_id):
        return not_found
    root = (Path(state.settings.data_dir) / "sessions").resolve()
    path = (root / session_id / RECORDING_FILE).resolve()
    if root not in path.parents or not path.is_file():
        return not_found
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.StreamResponse:
    return _json(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.draining:
        return _json(503, {"status": "draining", "sessions": len(state.bridges)})
    return _json(200, {"status": "ready", "sessions": len(state.bridges)})


async def metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(text="realtime-relay: the page is not installed; the API is at /v1/realtime\n")
    return web.FileResponse(page)


async def conversations_proxy(request: web.Request) -> web.StreamResponse:
    from relay.restproxy import proxy_conversations

    state = request.app[STATE]
    assert state.http is not None
    credentials = Credentials.load(state.settings)
    return await proxy_conversations(
        request, http=state.http, rest_base=state.rest_base, auth_header=credentials.authorization_header()
    )


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
    # One pooled HTTP session per process, the same kind `history` uses (C9); the proxy sets its own
    # per-request timeout and never decompresses.
    state.http = create_http_session()
    # Old session folders and logs go after retention_days (docs/recording.md).
    retention = retention_task(Path(settings.data_dir), Path(settings.log_dir), settings.retention_days)
    try:
        yield
    finally:
        if retention is not None:
            retention.cancel()
        for bridge in list(state.bridges):
            bridge.request_stop(EndReason.DRAIN)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.no_sessions.wait(), timeout=5.0)
        await state.http.close()
        if state.simulator is not None:
            await state.simulator.close()
        if state.owns_event_log:
            # Every record of every session reaches the disk before the app is gone (C6).
            await asyncio.to_thread(state.event_log.close)


def start_drain(app: web.Application) -> None:
    """Stop accepting: /readyz answers 503 and new upgrades get 503 + Retry-After; live sessions go on."""
    app[STATE].draining = True


def force_close(app: web.Application) -> None:
    """Ask every live session to close now with 1001 (the end of a drain, or a second signal)."""
    state = app[STATE]
    state.draining = True
    for bridge in list(state.bridges):
        bridge.request_stop(EndReason.DRAIN)


FORCED_CLOSE_WAIT_S = 20.0


async def drain(app: web.Application, seconds: float) -> None:
    """SIGTERM: readyz 503, live sessions run up to `seconds`, then close with 1001 (C4); returns when all ended."""
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
    """The embedded simulator's options for `--upstream sim` (None otherwise), `sim_knobs` included (C8)."""
    if settings.upstream != UPSTREAM_SIM:
        return None
    from relay.commands.sim import simulator_options

    return simulator_options(settings)


def create_app(settings: Settings, *, event_log: EventLog | None = None) -> web.Application:
    """The relay app. `event_log` may be shared (tests); by default one is made from the settings."""
    secret, shared = token_secret(settings)
    if not shared and settings.client_tokens:
        log.warning(
            "relay.token_secret_random",
            detail="no token_secret configured: other replicas cannot verify this process's client tokens",
        )
    simulator_options = embedded_simulator_options(settings)  # a bad knob fails here, before a log is opened
    owns_event_log = event_log is None
    if event_log is None:
        event_log = EventLog(
            Path(settings.log_dir) if settings.event_log_files else None,
            to_stdout=settings.event_log_stdout,
            max_queue_bytes=settings.log_queue_max_bytes,
            keep_text=settings.log_content,
        )
    authority = TokenAuthority(settings.client_tokens, secret, default_ttl=settings.token_ttl_seconds)
    bridges: set[SessionBridge] = set()
    state = RelayState(
        settings=settings,
        authority=authority,
        event_log=event_log,
        metrics=RelayMetrics(lambda: len(bridges), lambda: event_log.dropped_total),
        upstream_base=settings.upstream,
        rest_base=rest_base_url(settings),
        bridges=bridges,
        simulator_options=simulator_options,
        owns_event_log=owns_event_log,
    )
    app = web.Application(client_max_size=settings.max_client_message_bytes, middlewares=[cors])
    app.on_response_prepare.append(_cors_headers)
    app[STATE] = state
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/v1/realtime", requires_auth(realtime))
    app.router.add_post("/v1/realtime/client_secrets", client_secrets)
    app.router.add_get("/relay/auth", auth_probe)
    app.router.add_get("/relay/sessions/{session_id}/items/{item_id}.wav", requires_auth(saved_audio))
    app.router.add_get("/relay/sessions/{session_id}/recording.wav", requires_auth(session_recording))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/v1/conversations", requires_auth(conversations_proxy))
    app.router.add_route("*", "/v1/conversations/{tail:.*}", requires_auth(conversations_proxy))
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
    return app
