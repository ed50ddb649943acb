"""`serve`'s `/v1/conversations` proxy never retries, not even aiohttp's hidden keep-alive retry (docs/history.md).

The REST base here is a raw HTTP/1.1 server on 127.0.0.1 that answers the first request on each connection
(keeping it alive) and drops every later request on that connection without an answer: the case where aiohttp
would silently re-send an idempotent request on a fresh connection.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from relay.server.app import create_app
from relay.settings import Settings
from tests.support.conversations_fixtures import serving


class DroppingRestBase:
    """Answers request #1 of a connection with 200 keep-alive; closes the connection on request #2."""

    def __init__(self) -> None:
        self.request_lines: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.request_lines[head.split(b"\r\n", 1)[0].decode()] += 1
                if answered:
                    return  # the drop: no status line, the connection just closes
                body = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                answered += 1
        finally:
            writer.close()


@asynccontextmanager
async def dropping_rest_base() -> AsyncIterator[tuple[DroppingRestBase, str]]:
    rest = DroppingRestBase()
    server = await asyncio.start_server(rest.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield rest, f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_request_dropped_on_a_kept_alive_connection_is_sent_once_and_answered_502(tmp_path: Path) -> None:
    async with dropping_rest_base() as (rest, rest_base):
        settings = Settings(
            upstream="ws://127.0.0.1:9/v1/realtime",
            rest_base=rest_base,
            log_dir=str(tmp_path / "logs"),
            data_dir=str(tmp_path / "data"),
            event_log_files=False,
        )
        async with serving(create_app(settings)) as root, aiohttp.ClientSession() as client:
            first = await client.get(f"{root}/v1/conversations/c1")
            assert first.status == 200
            # The relay's pooled connection to the REST base is now kept alive; this request reuses it.
            second = await client.delete(f"{root}/v1/conversations/c1/items/x")
            assert second.status == 502
            assert (await second.json())["error"]["code"] == "upstream_unavailable"
    assert rest.request_lines["DELETE /v1/conversations/c1/items/x HTTP/1.1"] == 1
    assert rest.request_lines["GET /v1/conversations/c1 HTTP/1.1"] == 1
