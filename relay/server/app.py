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
Access (docs/security.md): with auth off on a loopback bind the `relay.server.access` guard serves only the relay's own
loopback origin; `requires_auth` admits minted tokens only where they are scoped to (`minted=False` routes refuse
them), and `may_read_session_files` decides any per-session file route.

I/O: this module serves HTTP/WebSocket on whatever runner the caller starts; it opens upstream sockets only
through `SessionBridge`, REST connections only through the proxy's pooled session, and reads files only for
static assets, saved audio and recordings under `data_dir` and `token_secret_file`; the retention sweep
(`relay.recording.retention`) deletes old session files on a worker thread. It does not bind, handle signals or exit
(that is `relay.cli.serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import re
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson
import structlog
from aiohttp import web

from relay.bridge import SessionBridge, new_session_id
from relay.core import events as ev
from relay.core.keptaudio import KeptAudioBudget
from relay.core.session import SAFE_ITEM_ID_RE, deep_merge
from relay.credentials import Credentials
from relay.errors import ConfigError
from relay.eventlog.writer import EventLog
from relay.history.client import create_http_session
from relay.links.base import UpstreamTarget
from relay.links.client import WebSocketClient
from relay.metrics import RelayMetrics
from relay.outcome import EndReason
from relay.recording import RECORDING_FILE
from relay.recording.retention import retention_task
from relay.server import access
from relay.server.auth import MIN_SECRET_BYTES, Grant, TokenAuthority, TokenTooLarge, token_from_request
from relay.settings import UPSTREAM_SIM, Settings, rest_base_url
from relay.tools.config import load_tools
from relay.wiring import session_environment, session_policy, simulator_options, upstream_target

if TYPE_CHECKING:
    from relay.simulator import SimulatorOptions

log = structlog.get_logger()

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"  # relay/static/
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # matched whole (fullmatch): no trailing newline slips through
GRANT: web.RequestKey[Grant] = web.RequestKey("relay_grant", Grant)  # set on token-guarded routes when auth is on
# `client_secrets` bodies are small JSON objects; a larger one is refused before it is buffered.
MAX_CLIENT_SECRETS_BODY: Final = 32 * 1024


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
    # Live sessions per minted token (by hash), for token_max_sessions.
    token_sessions: Counter[str] = field(default_factory=Counter)
    proxies: tuple[access.Network, ...] = ()
    # Set whenever `bridges` is empty, so shutdown waits on it instead of polling.
    no_sessions: asyncio.Event = field(default_factory=asyncio.Event)
    # Audio kept for fallback saves, one budget for every session of the process (see docs/client-input.md).
    kept_audio: KeptAudioBudget = field(default_factory=KeptAudioBudget)

    def __post_init__(self) -> None:
        if not self.bridges:
            self.no_sessions.set()
        self.kept_audio.max_bytes = self.settings.kept_audio_max_bytes

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
        return _strong_enough("token_secret", "token_secret", settings.token_secret.reveal().encode()), True
    if settings.token_secret_file:
        try:
            value = Path(settings.token_secret_file).read_text(encoding="utf-8").strip()
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
    return _grant(request) is not False


def _grant(request: web.Request) -> Grant | bool | None:
    """The request's grant; None when auth is off (everyone may); False for a missing or bad token."""
    state = request.app[STATE]
    if not state.auth_required:
        return None
    token = token_from_request(request.headers, _offered_protocols(request))
    grant = state.authority.grant(token)
    return False if grant is None else grant


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
    # Never by default: a page on another origin is served only when the operator listed that origin.
    return origin if origin in request.app[STATE].settings.allowed_origins else None


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


def requires_auth(handler: Handler, *, minted: bool = True) -> Handler:
    """Guard a route with client auth; `minted=False` admits static tokens only (minted ones are scoped)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _origin_allowed(request):
            log.warning("relay.origin_refused", origin=request.headers.get("Origin"), path=request.path)
            return _openai_error(403, "origin not allowed", "origin_not_allowed")
        grant = _grant(request)
        if grant is False:
            # Never log the token itself.
            log.warning("relay.auth_failed", path=request.path, remote=client_remote(request))
            return _openai_error(401, "missing or invalid client token", "invalid_api_key")
        assert grant is not True
        if grant is not None and grant.minted and not minted:
            log.warning("relay.auth_scope_refused", path=request.path, remote=client_remote(request))
            return _openai_error(403, "a minted client token cannot use this route", "token_scope")
        if grant is not None:
            request[GRANT] = grant
        return await handler(request)

    return guarded


def client_remote(request: web.Request) -> str | None:
    """The client's address: the peer, or the X-Forwarded-For hop named by a trusted proxy (forwarded_allow_ips)."""
    return access.client_address(
        request.remote, request.headers.get("X-Forwarded-For"), request.app[STATE].proxies
    )


def may_read_session_files(request: web.Request, session_id: str) -> bool:
    """Whether this request may read a per-session file (saved audio, recordings) of `session_id`.

    Auth off or a static token: yes. A minted token: only for sessions it opened, as recorded in the session
    folder, so the answer is the same on every replica sharing data_dir. `session_id` must already be checked.
    """
    grant = request.get(GRANT)
    if grant is None or not grant.minted:
        return True
    folder = Path(request.app[STATE].settings.data_dir) / "sessions" / session_id
    return access.session_opener_matches(folder, grant.token)


# ---- the realtime socket ----------------------------------------------------------------------------------


async def realtime(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    grant = request.get(GRANT)
    token_key = access.token_digest(grant.token) if grant is not None and grant.minted else None
    if token_key is not None:
        if state.token_sessions[token_key] >= state.settings.token_max_sessions:
            limit = state.settings.token_max_sessions
            log.warning("relay.token_sessions_exceeded", remote=client_remote(request), limit=limit)
            return _openai_error(429, f"this token already has {limit} sessions open", "too_many_sessions")
        state.token_sessions[token_key] += 1  # held from here, so concurrent upgrades cannot both slip through
    try:
        return await _realtime(request, grant)
    finally:
        if token_key is not None:
            state.token_sessions[token_key] -= 1
            if state.token_sessions[token_key] <= 0:
                del state.token_sessions[token_key]


async def _realtime(request: web.Request, grant: Grant | None) -> web.StreamResponse:
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
    # After close 1009 up to 4x the limit of the oversized frame is read and dropped (see docs/client-input.md).
    client = WebSocketClient(
        ws,
        settings.max_client_backlog_bytes,
        transport=request.transport,
        oversize_discard_bytes=4 * settings.max_client_message_bytes,
    )
    query = request.query
    client_model = query.get("model")
    relay_events = query.get("relay_events", "") in ("1", "true", "yes")
    session_id = new_session_id()
    started_info: dict[str, Any] = {
        "client_model": client_model,
        "remote": client_remote(request),
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
    if grant is not None and grant.session:
        # The session posted to client_secrets is pinned for this token's sessions; the operator's pins win.
        policy = dataclasses.replace(policy, pinned_session=deep_merge(grant.session, policy.pinned_session))
    env = session_environment(settings, state.event_log, metrics=state.metrics, kept_audio=state.kept_audio)
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
            if grant is not None and grant.minted:
                # Per-session files stay readable with the opening token on any replica sharing data_dir.
                try:
                    await asyncio.to_thread(
                        access.record_session_opener, Path(settings.data_dir) / "sessions" / session_id, grant.token
                    )
                except OSError as exc:  # the session goes on; only its files stay closed to the token
                    log.warning("relay.session_opener_not_recorded", session_id=session_id, error=str(exc))
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
    pinned: dict[str, Any] | None = None
    if request.can_read_body:
        if (request.content_length or 0) > MAX_CLIENT_SECRETS_BODY:
            return _openai_error(413, f"the body is over {MAX_CLIENT_SECRETS_BODY} bytes", "body_too_large")
        raw = await _read_at_most(request, MAX_CLIENT_SECRETS_BODY)
        if raw is None:
            return _openai_error(413, f"the body is over {MAX_CLIENT_SECRETS_BODY} bytes", "body_too_large")
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
            session = body.get("session")
            if session is not None:
                if not isinstance(session, dict):
                    return _openai_error(400, "session must be an object", "invalid_value")
                pinned = session
    try:
        minted = state.authority.mint(ttl, session=pinned)
    except TokenTooLarge as exc:
        return _openai_error(413, str(exc), "token_too_large")
    except ValueError as exc:
        return _openai_error(400, str(exc), "invalid_value")
    return _json(200, {"value": minted.value, "expires_at": minted.expires_at})


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (read no further: a chunked body cannot make us buffer it)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


async def auth_probe(request: web.Request) -> web.StreamResponse:
    if not _origin_allowed(request) or not _authorized(request):
        return web.Response(status=401)
    return web.Response(status=204)


def _session_file(request: web.Request, session_id: str, name: str, what: str) -> web.StreamResponse:
    """One file of a session folder: ids already matched whole by the caller; the token's scope checked (a
    minted token reads only the sessions it opened, docs/security.md); nothing outside data_dir ever served.
    Every refusal is the same 404 as a missing file, so a token learns nothing of other sessions. FileResponse
    answers Range requests, so a browser can seek."""
    not_found = _openai_error(404, f"no such {what}", "not_found")
    if not may_read_session_files(request, session_id):
        log.warning("relay.auth_scope_refused", path=request.path, remote=client_remote(request))
        return not_found
    root = (Path(request.app[STATE].settings.data_dir) / "sessions").resolve()
    path = (root / session_id / name).resolve()
    if root not in path.parents or not path.is_file():
        return not_found
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


async def saved_audio(request: web.Request) -> web.StreamResponse:
    """An item's saved WAV (docs/retrieve-after-done.md)."""
    session_id = request.match_info["session_id"]
    item_id = request.match_info["item_id"]
    if not ID_RE.fullmatch(session_id) or not SAFE_ITEM_ID_RE.fullmatch(item_id):
        return _openai_error(404, "no such saved audio", "not_found")
    return _session_file(request, session_id, f"{item_id}.wav", "saved audio")


async def session_recording(request: web.Request) -> web.StreamResponse:
    """A session's recording (docs/recording.md), under the same id and scope rules as saved audio."""
    session_id = request.match_info["session_id"]
    if not ID_RE.fullmatch(session_id):
        return _openai_error(404, "no such recording", "not_found")
    return _session_file(request, session_id, RECORDING_FILE, "recording")


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


def create_metrics_app(app: web.Application) -> web.Application:
    """`/metrics` (and the probes) of `app` on an app of their own, for the `metrics_port` listener."""
    metrics_app = web.Application()
    metrics_app[STATE] = app[STATE]
    metrics_app.router.add_get("/metrics", metrics)
    metrics_app.router.add_get("/healthz", healthz)
    metrics_app.router.add_get("/readyz", readyz)
    return metrics_app


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(text="realtime-relay: the page is not installed; the API is at /v1/realtime\n")
    return web.FileResponse(page)


async def conversations_proxy(request: web.Request) -> web.StreamResponse:
    from relay.server.proxy import proxy_conversations

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
    load_tools(settings)  # so does a server tool that does not load (exit 2 naming the tool)
    owns_event_log = event_log is None
    if event_log is None:
        event_log = EventLog(
            Path(settings.log_dir) if settings.event_log_files else None,
            to_stdout=settings.event_log_stdout,
            max_queue_bytes=settings.log_queue_max_bytes,
            keep_text=settings.log_content,
            max_session_bytes=settings.max_session_log_bytes,
            audio_hash=settings.log_audio_hash,
        )
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
        metrics=RelayMetrics(lambda: len(bridges), lambda: event_log.dropped_total),
        upstream_base=settings.upstream,
        rest_base=rest_base_url(settings),
        bridges=bridges,
        simulator_options=simulator_options,
        owns_event_log=owns_event_log,
        proxies=proxies,
    )
    # With auth off on a loopback bind, only the relay's own loopback origin is served (see docs/security.md).
    guard = [access.loopback_guard(settings.allowed_origins)] if not settings.client_tokens and is_loopback(settings.host) else []
    app = web.Application(client_max_size=settings.max_client_message_bytes, middlewares=[*guard, cors])
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
    if not settings.metrics_port:
        app.router.add_get("/metrics", metrics)
    # The REST proxy spends the operator's key on any conversation: static tokens only, never minted ones.
    app.router.add_route("*", "/v1/conversations", requires_auth(conversations_proxy, minted=False))
    app.router.add_route("*", "/v1/conversations/{tail:.*}", requires_auth(conversations_proxy, minted=False))
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
    return app
