"""relay.server.proxy when one end of a streamed answer goes away: the client leaves while the API is still
sending. Both ends are real aiohttp servers and clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from relay.history.client import create_http_session
from relay.server.proxy import proxy_conversations
from tests.support.conversations_fixtures import serving

UPSTREAM_AUTH = {"Authorization": "Api-Key upstream-key"}


def _proxy_app(http: aiohttp.ClientSession, rest_base: str) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await proxy_conversations(request, http=http, rest_base=rest_base, auth_header=UPSTREAM_AUTH)

    app = web.Application()
    app.router.add_route("*", "/v1/conversations/{tail:.*}", handle)
    return app


async def test_a_client_that_leaves_mid_body_is_no_server_error(caplog: pytest.LogCaptureFixture) -> None:
    upstream_done = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:
                await response.write(b"x" * 65536)
        except (ConnectionError, aiohttp.ClientError):
            return response
        finally:
            upstream_done.set()

    upstream = web.Application()
    upstream.router.add_get("/v1/conversations/{cid}/items", endless)
    caplog.set_level(logging.ERROR, logger="aiohttp")
    async with serving(upstream) as api, create_http_session() as http, \
            serving(_proxy_app(http, f"{api}/v1")) as root:
        port = URL(root).port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/conversations/conv_x/items HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        await reader.readexactly(256 * 1024)
        await asyncio.sleep(0.2)  # a slow reader: the proxy now waits for the socket to drain
        # The client has seen enough and drops the connection with a reset (as a killed process does).
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        # The proxy lets go of the API's answer once it notices; it must not report the client's leaving as an
        # error of its own.
        await asyncio.wait_for(upstream_done.wait(), timeout=10)
        await asyncio.sleep(0.1)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [], [record.getMessage() for record in errors]
