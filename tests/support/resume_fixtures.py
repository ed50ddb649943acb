"""A test upstream that drops at chosen moments: a WebSocket pass-through in front of the real simulator.

    async with dropping_proxy(relay.sim.realtime_url) as proxy:      # relay settings: {"upstream": proxy.url}
        socket = await proxy.connection(0)     # the relay's first upstream socket (waits for it)
        socket.from_relay                      # parsed frames the relay sent on it, in order
        socket.swallow = True                  # from now on the relay's frames stop here (never answered)
        await socket.drop()                    # TCP abort, no close frame (the relay sees 1006)
        await socket.close(1011)               # a close frame with that code
        await socket.break_protocol()          # a frame that breaks RFC 6455 (the relay fails it with 1007)
        await socket.inject(text)              # a frame of the test's own, as if from the upstream
        proxy.refuse = 503                     # later handshakes are answered 503
        proxy.greeting = ["not json", ...]     # frames sent first on every later socket (before the simulator's)

Every accepted socket opens its own simulator socket (a new, empty upstream session, as a real reconnect gets),
so what a test sees on the far side is the simulator's real behaviour. No mocks: real aiohttp on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.timing import seconds


@dataclass
class ProxiedSocket:
    """One upstream socket of the relay, piped to its own simulator socket."""

    ws: web.WebSocketResponse
    request: web.Request
    from_relay: list[dict[str, Any]] = field(default_factory=list)
    to_relay: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    swallow: bool = False

    async def drop(self) -> None:
        """End the TCP connection without a close frame."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        await self.ended.wait()

    async def close(self, code: int) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.close(code=code, message=b"test upstream closing")
        await self.ended.wait()

    async def break_protocol(self) -> None:
        """Send a frame that breaks RFC 6455 (a text frame that is not UTF-8), written raw to the socket."""
        transport = self.request.transport
        if transport is not None:
            transport.write(b"\x81\x01\xff")
        await self.ended.wait()

    async def inject(self, text: str) -> None:
        """Send the relay a frame of the test's own, as if from the upstream."""
        await self.ws.send_str(text)

    def sent_types(self) -> list[str]:
        return [str(frame.get("type")) for frame in self.from_relay]


@dataclass
class DroppingProxy:
    url: str = ""
    target: str = ""
    refuse: int | None = None
    greeting: list[str | bytes] = field(default_factory=list)
    drop_at_open: int = 0  # this many next sockets are dropped right after the handshake, before any event
    sockets: list[ProxiedSocket] = field(default_factory=list)
    handshakes: int = 0
    last_handshake_at: float = 0.0  # time.monotonic() of the latest handshake (any answer)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connection(self, index: int, timeout: float = 10.0) -> ProxiedSocket:
        async with asyncio.timeout(seconds(timeout)):
            while len(self.sockets) <= index:
                self._changed.clear()
                await self._changed.wait()
        return self.sockets[index]

    async def until(self, socket: ProxiedSocket, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until `predicate(socket.from_relay)` holds."""
        async with asyncio.timeout(seconds(timeout)):
            while not predicate(socket.from_relay):
                self._changed.clear()
                await self._changed.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        self.last_handshake_at = time.monotonic()
        if self.refuse is not None:
            return web.Response(status=self.refuse, text="refused by the test upstream")
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await ws.prepare(request)
        if self.drop_at_open > 0:
            self.drop_at_open -= 1
            if request.transport is not None:
                request.transport.abort()
            return ws
        socket = ProxiedSocket(ws, request)
        self.sockets.append(socket)
        self._changed.set()
        query = request.query_string
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                self.target + (f"?{query}" if query else ""), max_msg_size=0, autoping=False
            ) as sim:
                for frame in self.greeting:
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                down = asyncio.create_task(self._pipe_down(sim, socket))
                try:
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        with contextlib.suppress(ValueError):
                            socket.from_relay.append(json.loads(message.data))
                        self._changed.set()
                        if not socket.swallow:
                            await sim.send_str(message.data)
                finally:
                    down.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await down
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            socket.ended.set()
            self._changed.set()
        return ws

    async def _pipe_down(self, sim: aiohttp.ClientWebSocketResponse, socket: ProxiedSocket) -> None:
        async for message in sim:
            if message.type != aiohttp.WSMsgType.TEXT or socket.ws.closed:
                break
            socket.to_relay.append(message.data)
            await socket.ws.send_str(message.data)


@asynccontextmanager
async def dropping_proxy(target: str) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(target=target)
    app = web.Application()
    app.router.add_get("/v1/realtime", proxy._handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        proxy.url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/realtime"
        yield proxy
    finally:
        await runner.cleanup()
