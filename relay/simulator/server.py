"""The simulator's aiohttp adapter: app factory, the realtime WebSocket handler, pacing and fault knobs.

`create_app(options)` builds an application serving `GET /v1/realtime` (WebSocket) and the Conversations REST
routes of `relay.simulator.rest_routes` under `/v1/conversations`. Each socket gets one pure `SimSession`; this
module only moves frames in and events out, paces response audio in real time scaled by
`SimulatorOptions.speed` (0 = as fast as possible), and applies the knobs (`relay.simulator.knobs`: query
parameters on the realtime URL over `SimulatorOptions.knobs`). `start_simulator` runs the app on a real
socket and returns a `RunningSimulator`.

Tying a realtime session to a conversation: connect with `?conversation_id=conv_...` (an id created with
`POST /v1/conversations`; unknown ids are answered 404 at the handshake). Every item of that session is added
to the conversation (without audio) when it completes - user turns after their transcript, assistant
messages at their end, client-created items at once - so `GET /v1/conversations/{id}/items` lists the
session's history.

Auth: with `api_key` set, handshakes and REST calls need `Authorization: Api-Key <key>` or `Bearer <key>`.
The yandex flavour never answers WebSocket pings (as observed live); the openai flavour does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from aiohttp import WSMsgType, web

from relay.simulator.config import FLAVOURS, Flavour
from relay.simulator.items import AudioArchive
from relay.simulator.knobs import KnobError, Knobs, parse_knobs
from relay.simulator.rest_routes import add_conversation_routes
from relay.simulator.rest_store import ConversationApiError, ConversationStore
from relay.simulator.session import SimSession

DEFAULT_MODEL: Final = "gpt://simulator/speech-realtime-250923"
MAX_CLIENT_MESSAGE_BYTES: Final = 64 * 1024 * 1024
CLOSE_TIMEOUT_S: Final = 2.0
STALL_POLL_S: Final = 0.2

log = structlog.get_logger()


@dataclass(frozen=True)
class SimulatorOptions:
    """How a simulator behaves. `knobs`: defaults for the query-parameter knobs (relay.simulator.knobs)."""

    flavour: str = "yandex"
    speed: float = 1.0
    api_key: str | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {self.flavour!r}")
        if not self.speed >= 0:
            raise ValueError(f"speed must be >= 0, got {self.speed!r}")
        parse_knobs(self.knobs, {})  # fail at construction, not on the first connection


@dataclass
class _SimState:
    options: SimulatorOptions
    store: ConversationStore
    archive: AudioArchive
    links: weakref.WeakSet[_Link] = field(default_factory=weakref.WeakSet)
    sockets_opened: int = 0  # realtime sockets accepted by this process (the close_after_sessions knob counts them)


STATE_KEY: Final = web.AppKey("relay_simulator_state", _SimState)
STORE_KEY: Final = web.AppKey("relay_simulator_store", ConversationStore)


def _http_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _authorized(header: str | None, api_key: str) -> bool:
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in ("api-key", "bearer"):
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


class _Dropped(Exception):
    """The close_after knob fired: the socket was dropped."""


class _Link:
    """One realtime socket: a reader feeding the session, a streamer pacing live responses, one sender."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        session: SimSession,
        knobs: Knobs,
        state: _SimState,
        conversation_id: str | None,
    ) -> None:
        self.ws = ws
        self.request = request
        self.session = session
        self.knobs = knobs
        self.state = state
        self.conversation_id = conversation_id
        self.speed = state.options.speed
        self.sent = 0
        state.sockets_opened += 1
        # With close_after_sessions=K only the first K sockets of this simulator process are dropped.
        limited = knobs.close_after_sessions is None or state.sockets_opened <= knobs.close_after_sessions
        self.close_after = knobs.close_after if limited else None
        self.closing = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def flush(self) -> None:
        # Drain under the lock so the reader and the streamer never interleave or reorder events.
        async with self._send_lock:
            self._record_completed()
            for event in self.session.drain():
                if self.knobs.delay_ms:
                    await asyncio.sleep(self.knobs.delay_ms / 1000.0)
                await self.ws.send_str(json.dumps(event))
                self.sent += 1
                if self.close_after is not None and self.sent >= self.close_after:
                    self._drop()
                    raise _Dropped

    def _drop(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def _record_completed(self) -> None:
        completed = self.session.drain_completed()
        if self.conversation_id is None:
            return
        for item in completed:
            item.pop("object", None)
            try:
                self.state.store.add_item(self.conversation_id, item)
            except ConversationApiError as exc:  # the conversation was deleted meanwhile
                log.warning("sim.history_item_dropped", conversation_id=self.conversation_id, error=str(exc))

    async def run(self) -> None:
        self.session.start()
        await self.flush()
        streamer = asyncio.create_task(self._stream())
        try:
            await self._read()
        finally:
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Dropped, ConnectionError):
                await streamer

    async def _read(self) -> None:
        frames = 0
        while True:
            if self.knobs.stall is not None and frames >= self.knobs.stall:
                await self._stall()
                return
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                frames += 1
                self.session.receive_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                frames += 1
                self.session.receive_binary()
            elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue  # the yandex flavour (autoping off) deliberately leaves pings unanswered
            else:
                return  # CLOSE, CLOSING, CLOSED, ERROR
            await self.flush()
            if self.session.responding:
                self._wake.set()

    async def _stall(self) -> None:
        """Stop reading: the client's frames pile up in the socket buffers (backpressure upstream). Not
        reading means no close frame is ever seen, so the transport is watched to notice the client leaving."""
        while not self.closing.is_set():
            transport = self.request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), timeout=STALL_POLL_S)

    async def _stream(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started, streamed_ms, pacing = time.monotonic(), 0.0, self.session.response_id
            while self.session.responding:
                if self.session.response_id != pacing:  # a new response: pace it from its own start
                    started, streamed_ms, pacing = time.monotonic(), 0.0, self.session.response_id
                streamed_ms += self.session.step_response()
                await self.flush()
                if self.speed > 0:
                    due = started + streamed_ms / 1000.0 / self.speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                else:
                    await asyncio.sleep(0)  # let client frames (barge-in, cancel) in between chunks


async def _realtime(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    options = state.options
    try:
        knobs = parse_knobs(options.knobs, request.query)
    except KnobError as exc:
        return _http_error(400, str(exc), code="invalid_knob")
    if knobs.reject_auth:
        return _http_error(401, "Unauthorized (simulator knob reject_auth).", code="invalid_api_key")
    if options.api_key is not None and not _authorized(request.headers.get("Authorization"), options.api_key):
        return _http_error(401, "Missing or invalid Authorization header (Api-Key or Bearer).", code="invalid_api_key")
    if knobs.refuse is not None:
        return _http_error(
            knobs.refuse,
            f"Refused (simulator knob refuse={knobs.refuse}).",
            type_="server_error" if knobs.refuse >= 500 else "invalid_request_error",
            code="refused",
            headers={"Retry-After": "1"} if knobs.refuse == 429 else None,
        )
    conversation_id = request.query.get("conversation_id")
    if conversation_id is not None:
        try:
            state.store.get_conversation(conversation_id)
        except ConversationApiError:
            return _http_error(404, f"Conversation with id '{conversation_id}' not found.", code="not_found")
    flavour: Flavour = "openai" if options.flavour == "openai" else "yandex"
    ws = web.WebSocketResponse(autoping=flavour != "yandex", max_msg_size=MAX_CLIENT_MESSAGE_BYTES, timeout=CLOSE_TIMEOUT_S)
    try:
        await ws.prepare(request)
    except ConnectionResetError:
        # The client (a relay whose own client left) is gone before the 101. The answer is never sent: aiohttp
        # drops it quietly for a closed connection, where the error itself would be logged with a traceback.
        return web.Response(status=499, reason="Client Closed Request")
    session = SimSession(
        flavour,
        request.query.get("model") or DEFAULT_MODEL,
        knobs,
        archive=state.archive,
        conversation_id=conversation_id,
    )
    link = _Link(ws, request, session, knobs, state, conversation_id)
    state.links.add(link)
    try:
        await link.run()
    except (_Dropped, ConnectionError):
        pass
    finally:
        state.links.discard(link)
        if not ws.closed and not link.closing.is_set():
            with contextlib.suppress(ConnectionError):
                await ws.close()
    return ws


async def _close_links(app: web.Application) -> None:
    for link in list(app[STATE_KEY].links):
        link.closing.set()
        with contextlib.suppress(ConnectionError):
            await link.ws.close(code=1001, message=b"simulator shutting down")


def create_app(options: SimulatorOptions) -> web.Application:
    """The simulator as an aiohttp application (realtime WebSocket + Conversations REST)."""
    app = web.Application(client_max_size=MAX_CLIENT_MESSAGE_BYTES)
    store = ConversationStore()
    app[STATE_KEY] = _SimState(options=options, store=store, archive=AudioArchive())
    app[STORE_KEY] = store
    app.router.add_get("/v1/realtime", _realtime)
    add_conversation_routes(app, store, api_key=options.api_key)
    app.on_shutdown.append(_close_links)
    return app


@dataclass
class RunningSimulator:
    """A simulator serving on a real socket (see `start_simulator`)."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def realtime_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    @property
    def rest_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def store(self) -> ConversationStore:
        return self.app[STORE_KEY]

    def item_audio(self, item_id: str) -> tuple[bytes, int] | None:
        """The post-processed PCM16 and rate a retrieve of this item would carry (decoded), or None."""
        return self.app[STATE_KEY].archive.retrieved_pcm(item_id)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_simulator(options: SimulatorOptions, host: str = "127.0.0.1", port: int = 0) -> RunningSimulator:
    """Serve a new simulator app on host:port (0 = a free port) until `close()`."""
    app = create_app(options)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT_S, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return RunningSimulator(app=app, runner=runner, host=host, port=int(bound))
