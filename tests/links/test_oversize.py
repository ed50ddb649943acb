"""relay.links.oversize on real sockets on 127.0.0.1: after the server side closes a connection with data still
coming, the rest is read and dropped (bounded in bytes and in time) so the peer reads the last bytes sent and a
clean end of stream, not a reset. The whole close-1009 path is tests/server/test_oversize.py; the rule is
docs/client-input.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from relay.links.oversize import discard_rest_of_frame
from tests.support.timing import seconds

CLOSE_FRAME = b"\x88\x02\x03\xf1"  # what the server library sends before closing: close 1009


@pytest.fixture
async def server_side() -> AsyncIterator[tuple[asyncio.Transport, asyncio.StreamReader, asyncio.StreamWriter]]:
    """(the server's transport of one accepted connection, the client's reader and writer)."""
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(cast(asyncio.Transport, writer.transport))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await accepted.get()
    yield transport, reader, writer
    writer.transport.abort()
    server.close()
    await server.wait_closed()


def close_like_the_library(transport: asyncio.Transport, *, max_bytes: int, max_seconds: float = 2.0) -> asyncio.Task[int]:
    transport.write(CLOSE_FRAME)
    transport.close()  # the descriptor goes on the loop's next iteration: the discard must be set up before
    task = discard_rest_of_frame(transport, max_bytes=max_bytes, max_seconds=max_seconds)
    assert task is not None
    return task


async def test_the_peer_finishes_sending_then_reads_the_close_and_a_clean_end(server_side: Any) -> None:
    transport, reader, writer = server_side
    task = close_like_the_library(transport, max_bytes=4 << 20)
    rest = b"x" * (1 << 20)  # the rest of an oversized frame, still on its way
    writer.write(rest)
    await asyncio.wait_for(writer.drain(), seconds(5))
    assert await asyncio.wait_for(reader.read(), seconds(5)) == CLOSE_FRAME  # then EOF, no ConnectionResetError
    writer.close()
    assert await asyncio.wait_for(task, seconds(5)) == len(rest)


async def test_dropping_stops_at_max_bytes(server_side: Any) -> None:
    transport, _reader, writer = server_side
    task = close_like_the_library(transport, max_bytes=64 << 10)
    sender = asyncio.ensure_future(send_forever(writer))
    try:
        dropped = await asyncio.wait_for(task, seconds(5))
    finally:
        sender.cancel()
    assert 64 << 10 <= dropped < (64 << 10) + (1 << 16) + 1  # at most one read past the bound


async def test_dropping_stops_at_max_seconds_when_the_peer_neither_sends_nor_closes(server_side: Any) -> None:
    transport, reader, _writer = server_side
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = close_like_the_library(transport, max_bytes=1 << 20, max_seconds=0.3)
    assert await asyncio.wait_for(task, seconds(5)) == 0
    assert 0.25 <= loop.time() - started < seconds(3)
    assert await asyncio.wait_for(reader.read(), seconds(5)) == CLOSE_FRAME


async def send_forever(writer: asyncio.StreamWriter) -> None:
    chunk = b"y" * (1 << 16)
    try:
        while True:
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


class _NoSocket:
    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


class _ClosedSocket:
    def fileno(self) -> int:
        return -1


async def test_nothing_to_do_when_the_socket_is_already_gone() -> None:
    assert discard_rest_of_frame(None, max_bytes=10) is None
    assert discard_rest_of_frame(cast(asyncio.BaseTransport, _NoSocket(None)), max_bytes=10) is None
    assert discard_rest_of_frame(cast(asyncio.BaseTransport, _NoSocket(_ClosedSocket())), max_bytes=10) is None
