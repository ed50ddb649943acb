"""Real Conversations REST servers on 127.0.0.1 port 0 for the conversations/history/restproxy tests.

`RestSim` is the simulator's REST store and routes (relay.simulator.rest_store, relay.simulator.rest_routes) in an aiohttp app, with a middleware
that records what each request carried (method, raw path, raw query, headers; bodies are left to the handler),
so tests can see what reached the "upstream". `running_sim` serves it on the test's event loop;
`ThreadedRestSim` serves it from a thread of its own, for tests that call the synchronous CLI
(`relay.cli.main` runs its own event loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from relay.simulator.rest_routes import add_conversation_routes
from relay.simulator.rest_store import ConversationStore

UPSTREAM_KEY = "upstream-secret-key-7f3a9c"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    raw_path: str
    raw_query: str
    headers: CIMultiDict[str]
    peer_port: int


@dataclass
class RestSim:
    store: ConversationStore
    api_key: str | None
    seen: list[SeenRequest] = field(default_factory=list)
    base_url: str = ""  # http://127.0.0.1:PORT/v1 once started

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            url = request.rel_url
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.seen.append(SeenRequest(request.method, url.raw_path, url.raw_query_string,
                                         CIMultiDict(request.headers), int(peer[1]) if peer else -1))
            response = await handler(request)
            # Like a real API behind a CDN: compress when asked, so pass-through of encodings is tested.
            if isinstance(response, web.Response) and "gzip" in request.headers.get("Accept-Encoding", ""):
                response.enable_compression(web.ContentCoding.gzip)
            return response

        app = web.Application(middlewares=[record])
        add_conversation_routes(app, self.store, api_key=self.api_key)
        return app

    def conversation_with_items(self, count: int, *, prefix: str = "line") -> tuple[str, list[str]]:
        """A conversation of `count` alternating user/assistant text messages; returns (id, item ids)."""
        conversation_id = self.store.create_conversation(metadata={"topic": "test"})["id"]
        ids: list[str] = []
        for index in range(count):
            role = "user" if index % 2 == 0 else "assistant"
            part_type = "input_text" if role == "user" else "output_text"
            item = self.store.add_item(conversation_id, {
                "type": "message", "role": role, "status": "completed",
                "content": [{"type": part_type, "text": f"{prefix} {index}"}]})
            ids.append(item["id"])
        return conversation_id, ids


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 port 0; yields http://127.0.0.1:PORT."""
    runner, port = await _serve(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_sim(api_key: str | None = UPSTREAM_KEY) -> AsyncIterator[RestSim]:
    sim = RestSim(store=ConversationStore(), api_key=api_key)
    async with serving(sim.app()) as root:
        sim.base_url = f"{root}/v1"
        yield sim


class ThreadedRestSim:
    """The REST sim on its own event loop in a daemon thread (for synchronous CLI tests)."""

    def __init__(self, api_key: str | None = UPSTREAM_KEY) -> None:
        self.sim = RestSim(store=ConversationStore(), api_key=api_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> RestSim:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(_serve(self.sim.app()), self._loop)
        self._runner, port = future.result(timeout=10)
        self.sim.base_url = f"http://127.0.0.1:{port}/v1"
        return self.sim

    def call(self, function: Callable[[], object]) -> object:
        """Run `function` on the server's loop (the store is not thread-safe) and return its result."""
        async def run() -> object:
            return function()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
