"""relay.links.client: the client backlog bound counts UTF-8 bytes, not characters (`max_client_backlog_bytes`).

A real aiohttp WebSocket on 127.0.0.1. The backlog tests turn the direct-write path off (its limit set to 0), so
frames queue; `send` is synchronous and the writer task only runs when the handler yields, so right after the sends
nothing has reached the transport and the backlog is exactly what was queued. The direct path's own frames are
checked by what a real client receives, at every payload-length boundary of RFC 6455.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

import relay.links.client
from relay.links.client import WebSocketClient
from tests.support.conversations_fixtures import serving

CYRILLIC = "ж" * 1000  # 1000 characters, 2000 bytes in UTF-8


async def with_client(max_backlog_bytes: int, act: Callable[[WebSocketClient], Awaitable[None]]) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = WebSocketClient(ws, max_backlog_bytes, transport=request.transport)
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


@pytest.fixture
def queued_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay.links.client, "DIRECT_WRITE_LIMIT_BYTES", 0)


@pytest.mark.usefixtures("queued_only")
async def test_the_backlog_counts_a_non_ascii_frame_in_utf8_bytes() -> None:
    async def act(client: WebSocketClient) -> None:
        assert client.send(CYRILLIC)
        assert client.backlog_bytes() == len(CYRILLIC.encode())

    await with_client(1 << 20, act)


@pytest.mark.usefixtures("queued_only")
async def test_non_ascii_frames_overflow_the_backlog_by_their_byte_size() -> None:
    async def act(client: WebSocketClient) -> None:
        assert client.send(CYRILLIC)  # 2000 bytes: fits 3000
        assert not client.send(CYRILLIC)  # 4000 bytes would not, though it is only 2000 characters
        assert client.overflowed

    await with_client(3000, act)


async def test_directly_written_frames_reach_the_client_whole_and_in_order_at_every_length_boundary() -> None:
    # 125/126 and 65535/65536 are where the frame header switches between 7-bit, 16-bit and 64-bit lengths.
    lengths = [0, 1, 125, 126, 127, 65535, 65536, 70000, 3]
    texts = [("ж" if n % 2 else "a") * (n // 2 if n % 2 else n) for n in lengths]
    received: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        client = WebSocketClient(ws, 1 << 20, transport=request.transport)
        for text in texts:
            assert client.send(text)
        await client.close(1000, "done", grace=1.0)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    async with serving(app) as root, aiohttp.ClientSession() as http, http.ws_connect(f"{root}/ws") as ws:
        async for message in ws:
            assert message.type == aiohttp.WSMsgType.TEXT
            received.append(message.data)
        assert ws.close_code == 1000
    assert received == texts


async def test_frames_right_behind_a_frame_larger_than_the_backlog_bound_reach_a_reading_client() -> None:
    """A big upstream event (a 20 MB frame, a client's retrieve of a long item) followed at once by more frames is
    not slowness: the big one fits an empty backlog, and those behind it are held to the bound without it."""
    big = "x" * (20 << 20)  # more than loopback's socket buffers take at once
    texts = [big] + [f'{{"type": "after", "n": {n}}}' for n in range(50)]
    received: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        client = WebSocketClient(ws, 1 << 20, transport=request.transport)
        assert [client.send(text) for text in texts] == [True] * len(texts)  # one burst: nothing has drained yet
        assert not client.overflowed
        await client.close(1000, "done", grace=5.0)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    async with serving(app) as root, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{root}/ws", max_msg_size=0) as ws:
            async for message in ws:
                received.append(message.data)
        assert ws.close_code == 1000
    assert received == texts


async def test_behind_a_large_frame_the_backlog_bound_still_holds_and_a_second_large_frame_overflows() -> None:
    big = "x" * (20 << 20)  # more than loopback's socket buffers take at once: most of it still waits

    async def frames_after_a_large_one(client: WebSocketClient) -> None:
        assert client.send(big)
        assert all(client.send("y" * 50_000) for _ in range(20))  # 1 000 000 bytes behind it: within 1 MiB
        assert not client.send("y" * 50_000)  # 1 050 000: over
        assert client.overflowed

    async def a_second_large_frame(client: WebSocketClient) -> None:
        assert client.send(big)
        assert not client.send("z" * (2 << 20))

    await with_client(1 << 20, frames_after_a_large_one)
    await with_client(1 << 20, a_second_large_frame)
