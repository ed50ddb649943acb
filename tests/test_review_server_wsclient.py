"""relay.wsclient: the client backlog bound counts UTF-8 bytes, not characters (C4 `max_client_backlog_bytes`).

A real aiohttp WebSocket on 127.0.0.1. `send` is synchronous and the writer task only runs when the handler
yields, so right after the sends nothing has reached the transport and the backlog is exactly what was queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from relay.wsclient import WebSocketClient
from tests.conversations_fixtures import serving

CYRILLIC = "ж" * 1000  # 1000 characters, 2000 bytes in UTF-8


async def with_client(max_backlog_bytes: int, act: Callable[[WebSocketClient], Awaitable[None]]) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = WebSocketClient(ws, max_backlog_bytes)
        try:
            await act(client)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
        finally:
            await client.close(1000, "", grace=1.0)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    async with serving(app) as root, aiohttp.ClientSession() as http, http.ws_connect(f"{root}/ws") as ws:
        await done
        while not ws.closed:
            await ws.receive()


async def test_the_backlog_counts_a_non_ascii_frame_in_utf8_bytes() -> None:
    async def act(client: WebSocketClient) -> None:
        assert client.send(CYRILLIC)
        assert client.backlog_bytes() == len(CYRILLIC.encode())

    await with_client(1 << 20, act)


async def test_non_ascii_frames_overflow_the_backlog_by_their_byte_size() -> None:
    async def act(client: WebSocketClient) -> None:
        assert client.send(CYRILLIC)  # 2000 bytes: fits 3000
        assert not client.send(CYRILLIC)  # 4000 bytes would not, though it is only 2000 characters
        assert client.overflowed

    await with_client(3000, act)
