"""`UpstreamLink`, the relay's socket to the upstream realtime API, against real upstreams on 127.0.0.1 (docs/forwarding.md, docs/lifecycle.md).

Specified here:

- delivery: messages read before `attach` are held and handed over by `attach`, in order, then live ones follow;
  a fragmented message arrives whole, text as `str`, binary as `bytes`, of any size; after `detach` messages are
  read and dropped while the close handshake still completes;
- the end: `wait_closed` returns only after a close 1000 from the upstream; any other end (another close code, a
  TCP drop, invalid UTF-8, a protocol violation) raises `UpstreamDisconnected` carrying the upstream's close code
  (1006 when none came), and an exception raised by the consumer is raised again by `wait_closed` and stops delivery;
- sending: `send` writes one masked, unfragmented text frame at once, with the shortest length encoding and a fresh
  mask key per frame; after the upstream's close frame it drops the frame (the upstream ends the session and
  `wait_closed` says how); it raises `UpstreamDisconnected` on a link that ended otherwise and once more than
  `backlog_limit` bytes wait for an upstream that stopped reading (the connection is then aborted);
- connecting: every handshake failure is `UpstreamUnavailable` (a refusal keeps its HTTP status).

Two kinds of upstream: a websockets server where a well-behaved peer is enough, and `RawUpstream`, a TCP server
that speaks just enough RFC 6455 by hand (with bench.frames) for what websockets would never send or show:
fragments, invalid UTF-8, reserved bits, odd close codes, the MASK bit and keys of the relay's frames, a peer that
stops reading. `upstream_url` and `redact_url` are specified by test_review_server_upstream and test_session_core.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bench.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, close_payload, server_response, unmask
from relay.core.resume import is_resumable
from relay.errors import UpstreamDisconnected, UpstreamUnavailable
from relay.links.upstream import MaskKeys, UpstreamLink
from relay.redact import MASK, register_credentials
from tests.support.loop_checks import no_unhandled_loop_errors
from tests.support.timing import seconds

PATH = "/v1/realtime"
ROOMY_BACKLOG = 64 << 20  # a backlog limit that no test reaches unless it means to
Message = str | bytes


# ---- the relay's side: links and a consumer ------------------------------------------------------------------


class Links:
    """Opens links the way the bridge does; whatever a test leaves open is aborted at its end."""

    def __init__(self) -> None:
        self.opened: list[UpstreamLink] = []

    async def open(
        self, url: str, *, backlog_limit: int = ROOMY_BACKLOG, open_timeout: float = 1.0, headers: dict[str, str] | None = None
    ) -> UpstreamLink:
        link = await UpstreamLink.connect(url, headers or {}, open_timeout=seconds(open_timeout), backlog_limit=backlog_limit)
        self.opened.append(link)
        return link


@pytest.fixture
async def links() -> AsyncIterator[Links]:
    opened = Links()
    yield opened
    for link in opened.opened:
        link.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.wait_closed(), seconds(1))


@pytest.fixture(autouse=True)
async def nothing_unhandled(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """No test may leave an error for the event loop's handler or websockets' logger: every failure of the upstream
    must surface through the link's API, never as an unhandled exception."""
    async with no_unhandled_loop_errors():
        yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


class ConsumerFailed(Exception):
    pass


class Inbox:
    """The consumer given to `attach`: keeps every message; raises `ConsumerFailed` on `raise_on`."""

    def __init__(self, raise_on: Message | None = None) -> None:
        self.messages: list[Message] = []
        self.raise_on = raise_on
        self.error = ConsumerFailed(f"the consumer failed on {raise_on!r}")
        self._arrived = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._arrived.set()
        if self.raise_on is not None and message == self.raise_on:
            raise self.error

    async def wait_for(self, count: int) -> list[Message]:
        async with asyncio.timeout(seconds(1)):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages


async def ends_normally(link: UpstreamLink) -> None:
    await asyncio.wait_for(link.wait_closed(), seconds(1))


async def disconnect_of(link: UpstreamLink) -> UpstreamDisconnected:
    with pytest.raises(UpstreamDisconnected) as caught:
        await asyncio.wait_for(link.wait_closed(), seconds(1))
    return caught.value


# ---- a websockets upstream ------------------------------------------------------------------------------------


@asynccontextmanager
async def websockets_upstream(handler: Callable[[ServerConnection], Awaitable[None]], **options: Any) -> AsyncIterator[str]:
    """A websockets server running `handler` per connection (a closed connection just ends it); yields its URL."""

    async def guarded(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await handler(ws)

    async with serve(guarded, "127.0.0.1", 0, ping_interval=None, compression=None, max_size=None, **options) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}{PATH}"


# ---- a hand-written upstream ----------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = None) -> bytes:
    """One frame exactly as given: any opcode, FIN and RSV bits, masked or not."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    size = len(payload)
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if mask is not None:
        return header + mask + unmask(payload, mask)
    return header + payload


def text(value: str, *, fin: bool = True) -> bytes:
    return frame(OP_TEXT, value.encode(), fin=fin)


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, close_payload(code, reason))


@dataclass(frozen=True)
class WireFrame:
    """A frame as the relay put it on the wire; `payload` is unmasked, `length_bytes` is the extended length's size."""

    fin: bool
    rsv: int
    opcode: int
    length_bytes: int
    mask: bytes | None
    payload: bytes


class RawPeer:
    """The upstream's end of one connection, after the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.request = request

    def send(self, *data: bytes) -> None:
        """Write these bytes in one write (so usually in one TCP segment)."""
        self.writer.write(b"".join(data))

    async def read_frame(self) -> WireFrame:
        async with asyncio.timeout(seconds(1)):
            b0, b1 = await self.reader.readexactly(2)
            size, length_bytes = b1 & 0x7F, 0
            if size == 126:
                size, length_bytes = int.from_bytes(await self.reader.readexactly(2), "big"), 2
            elif size == 127:
                size, length_bytes = int.from_bytes(await self.reader.readexactly(8), "big"), 8
            mask = await self.reader.readexactly(4) if b1 & 0x80 else None
            payload = await self.reader.readexactly(size)
        return WireFrame(
            bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, length_bytes, mask, unmask(payload, mask) if mask is not None else payload
        )

    async def read_close(self) -> int:
        """The code of the close frame the relay sends next."""
        got = await self.read_frame()
        assert got.opcode == OP_CLOSE, got
        return int.from_bytes(got.payload[:2], "big")

    async def sync(self) -> None:
        """Ping and wait for the pong: the link has then read everything sent before the ping."""
        self.send(frame(OP_PING, b"sync"))
        got = await self.read_frame()
        assert (got.opcode, got.payload) == (OP_PONG, b"sync")

    async def link_hung_up(self) -> None:
        """Wait until the relay has ended the TCP connection (whatever it still sent is skipped)."""
        async with asyncio.timeout(seconds(1)):
            with contextlib.suppress(ConnectionResetError):
                while await self.reader.read(1 << 16):
                    pass

    def hang_up(self) -> None:
        """End TCP without a close frame (a FIN)."""
        self.writer.close()

    def reset(self) -> None:
        """End TCP without a close frame, abruptly (a RST)."""
        sock: socket.socket = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def upgrade(request: bytes) -> bytes:
    return server_response(request.removesuffix(b"\r\n\r\n"))


class RawUpstream:
    """A TCP server that reads the upgrade request and writes `reply(request)` (None: never answers). After a 101,
    each connection is handed to the test as a `RawPeer` (`accepted`); nothing is read unless the test reads."""

    def __init__(self, reply: Callable[[bytes], bytes | None], hang_up: bool) -> None:
        self.reply = reply
        self.hang_up = hang_up
        self.url = ""
        self.requests: list[bytes] = []
        self._peers: asyncio.Queue[RawPeer] = asyncio.Queue()
        self._writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        self.requests.append(request)
        answer = self.reply(request)
        if answer is None:
            return
        writer.write(answer)
        if self.hang_up:
            writer.close()
            return
        self._peers.put_nowait(RawPeer(reader, writer, request))

    async def accepted(self) -> RawPeer:
        return await asyncio.wait_for(self._peers.get(), seconds(1))

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), seconds(1))


@asynccontextmanager
async def raw_upstream(
    reply: Callable[[bytes], bytes | None] = upgrade, *, hang_up: bool = False, receive_buffer: int | None = None
) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(reply, hang_up)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # set before listen(): accepted sockets inherit it and advertise a small window
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(upstream.serve, sock=sock)
    upstream.url = f"ws://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    try:
        yield upstream
    finally:
        server.close()
        await upstream.close()
        await server.wait_closed()


async def open_raw(links: Links, upstream: RawUpstream, inbox: Inbox | None = None) -> tuple[UpstreamLink, RawPeer]:
    """A link to `upstream` and the upstream's end of it; attached to `inbox` when one is given."""
    link = await links.open(upstream.url)
    peer = await upstream.accepted()
    if inbox is not None:
        link.attach(inbox)
    return link, peer


# ---- delivery ---------------------------------------------------------------------------------------------------


async def test_messages_sent_right_after_the_handshake_are_held_until_attach_then_live_ones_follow_in_order(links: Links) -> None:
    early_read = asyncio.Event()

    async def upstream(ws: ServerConnection) -> None:
        await ws.send("first")
        await ws.send(b"second")
        await ws.send("third")
        await (await ws.ping())  # answered after the link has read all three
        early_read.set()
        assert await ws.recv() == "attached"
        await ws.send("fourth")
        await ws.send("fifth")
        await ws.wait_closed()

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        await asyncio.wait_for(early_read.wait(), seconds(1))
        inbox = Inbox()
        link.attach(inbox)
        assert inbox.messages == ["first", b"second", "third"]  # handed over by attach itself
        link.send("attached")
        assert await inbox.wait_for(5) == ["first", b"second", "third", "fourth", "fifth"]
        await link.close()
        await ends_normally(link)


async def test_messages_that_arrive_with_the_handshake_answer_itself_are_not_lost(links: Links) -> None:
    with_the_answer = text("one") + frame(OP_BINARY, b"\x02") + text("three")
    async with raw_upstream(lambda request: upgrade(request) + with_the_answer) as upstream:
        inbox = Inbox()
        _link, peer = await open_raw(links, upstream, inbox)
        peer.send(text("four"))
        assert await inbox.wait_for(4) == ["one", b"\x02", "three", "four"]


async def test_a_text_message_fragmented_into_several_frames_arrives_as_one_string(links: Links) -> None:
    encoded = "Hello, wörld".encode()
    cut = encoded.index("ö".encode()) + 1  # the fragments split the two bytes of "ö"
    async with raw_upstream() as upstream:
        inbox = Inbox()
        _link, peer = await open_raw(links, upstream, inbox)
        peer.send(frame(OP_TEXT, encoded[:3], fin=False), frame(OP_CONT, encoded[3:cut], fin=False))
        await peer.sync()  # a ping between fragments is legal; the link answers it and delivers nothing yet
        assert inbox.messages == []
        peer.send(frame(OP_CONT, encoded[cut:]), text("next"))
        assert await inbox.wait_for(2) == ["Hello, wörld", "next"]


async def test_binary_messages_arrive_as_bytes_whole_or_fragmented_and_empty_messages_arrive_empty(links: Links) -> None:
    async with raw_upstream() as upstream:
        inbox = Inbox()
        _link, peer = await open_raw(links, upstream, inbox)
        peer.send(
            frame(OP_BINARY, b"\x00\xff", fin=False),
            frame(OP_CONT, b"", fin=False),
            frame(OP_CONT, b"\x80"),
            frame(OP_BINARY, b"\xc3\x28"),  # not UTF-8, and need not be
            frame(OP_TEXT, b""),
            frame(OP_BINARY, b""),
        )
        assert await inbox.wait_for(4) == [b"\x00\xff\x80", b"\xc3\x28", "", b""]


async def test_messages_from_a_websockets_upstream_arrive_whole_whatever_their_size(links: Links) -> None:
    big = "a retrieved item with minutes of audio " * 100_000  # ~4 MB: more than websockets' default cap

    async def upstream(ws: ServerConnection) -> None:
        await ws.send(b"\x01\x02\x03")
        await ws.send(["frag", "mented", " by websockets"])
        await ws.send(big)
        await ws.wait_closed()

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        inbox = Inbox()
        link.attach(inbox)
        assert await inbox.wait_for(3) == [b"\x01\x02\x03", "fragmented by websockets", big]


async def test_pings_are_answered_before_attach_and_after_detach(links: Links) -> None:
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream)
        await peer.sync()
        link.attach(Inbox())
        link.detach()
        await peer.sync()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([frame(OP_TEXT, b"\xc3\x28")], id="an invalid sequence"),
        pytest.param([frame(OP_TEXT, b"\xed\xa0\x80")], id="an encoded surrogate"),
        pytest.param(
            [frame(OP_TEXT, b"caf\xc3", fin=False), frame(OP_CONT, b"")], id="a fragmented message cut inside a character"
        ),
    ],
)
async def test_a_text_message_with_invalid_utf8_ends_the_link_and_is_never_delivered(links: Links, bad: list[bytes]) -> None:
    async with raw_upstream() as upstream:
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        peer.send(text("before"), *bad)
        assert await peer.read_close() == 1007  # invalid frame payload data
        peer.hang_up()
        error = await disconnect_of(link)
        assert error.code != 1000
        assert inbox.messages == ["before"]


async def test_nothing_that_follows_an_invalid_text_message_in_the_same_read_is_delivered(links: Links) -> None:
    """Once the link has failed the connection it processes nothing more from the upstream (RFC 6455 7.1.7), whether
    the rest arrives in a later read or, as here, in the same one."""
    async with raw_upstream() as upstream:
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        peer.send(text("before"), frame(OP_TEXT, b"\xc3\x28"), text("after"), frame(OP_BINARY, b"after too"))
        assert await peer.read_close() == 1007
        peer.hang_up()
        await disconnect_of(link)
        assert inbox.messages == ["before"]


@pytest.mark.parametrize(
    ("trouble", "close_code"),
    [
        pytest.param(frame(OP_TEXT, b"\xff"), 1007, id="the link failed the connection"),
        pytest.param(close_frame(1001, "going away"), 1001, id="the upstream closed first"),
    ],
)
async def test_the_link_ends_within_close_timeout_when_the_upstream_keeps_tcp_open_after_the_close_frames(
    links: Links, trouble: bytes, close_code: int
) -> None:
    """After the close frames the link waits for the upstream to close TCP (RFC 6455 7.1.1), but no longer than
    close_timeout (1 s): an upstream that never does cannot keep a session alive."""
    async with raw_upstream() as upstream:
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        peer.send(trouble)
        assert await peer.read_close() == close_code  # the link's close frame (or its answer to the upstream's)
        started = time.monotonic()
        with pytest.raises(UpstreamDisconnected):
            await asyncio.wait_for(link.wait_closed(), seconds(1.5))
        assert time.monotonic() - started < seconds(1.5)
        assert inbox.messages == []


@pytest.mark.parametrize(
    ("trouble", "code"),
    [
        pytest.param(close_frame(4000, "bye"), 4000, id="the upstream's close frame"),
        pytest.param(close_frame(1000), 1000, id="a normal close"),
        pytest.param(frame(OP_TEXT, b"\xff"), 1006, id="invalid UTF-8: the link fails the connection"),
    ],
)
async def test_wait_closed_ends_when_the_end_is_known_not_when_an_upstream_holding_tcp_lets_go(
    links: Links, trouble: bytes, code: int
) -> None:
    """The session's end must not wait out the close timeout for an upstream that keeps TCP open after the close
    frames (the client is told within 1 s of the drop); the close timeout still lets go of the connection."""
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream, Inbox())
        peer.send(trouble)
        started = time.monotonic()
        with contextlib.suppress(UpstreamDisconnected):
            await asyncio.wait_for(link.wait_closed(), seconds(1.5))
        assert time.monotonic() - started < seconds(0.3)
        assert link.close_code == code
        await asyncio.wait_for(link.close(), seconds(1.5))  # let go of within the close timeout


async def test_an_exception_from_the_consumer_is_raised_by_wait_closed_and_nothing_more_is_delivered(links: Links) -> None:
    async with raw_upstream() as upstream:
        inbox = Inbox(raise_on="two")
        link, peer = await open_raw(links, upstream, inbox)
        peer.send(text("one"), text("two"), text("three"))  # one read: "three" is already in hand when "two" fails
        with pytest.raises(ConsumerFailed) as caught:
            await asyncio.wait_for(link.wait_closed(), seconds(1))
        assert caught.value is inbox.error
        assert inbox.messages == ["one", "two"]
        await peer.link_hung_up()


async def test_an_exception_from_the_consumer_on_a_held_message_ends_the_link_without_failing_attach(links: Links) -> None:
    held = text("one") + text("two") + text("three")
    async with raw_upstream(lambda request: upgrade(request) + held) as upstream:
        link, peer = await open_raw(links, upstream)
        await peer.sync()  # all three are held
        inbox = Inbox(raise_on="one")
        link.attach(inbox)
        with pytest.raises(ConsumerFailed) as caught:
            await asyncio.wait_for(link.wait_closed(), seconds(1))
        assert caught.value is inbox.error
        assert inbox.messages == ["one"]
        await peer.link_hung_up()


async def test_after_detach_messages_are_dropped_but_the_upstreams_close_handshake_completes(links: Links) -> None:
    async def upstream(ws: ServerConnection) -> None:
        await ws.send("kept")
        assert await ws.recv() == "detached"
        await ws.send("dropped")
        await ws.send(b"dropped too")
        await ws.close(1000, "done")

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        inbox = Inbox()
        link.attach(inbox)
        await inbox.wait_for(1)
        link.detach()
        link.send("detached")
        await ends_normally(link)
        assert inbox.messages == ["kept"]
        assert link.close_code == 1000


async def test_a_detached_link_closes_cleanly_while_the_upstream_keeps_sending(links: Links) -> None:
    async def upstream(ws: ServerConnection) -> None:
        while True:
            await ws.send("more")
            await asyncio.sleep(0)

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        inbox = Inbox()
        link.attach(inbox)
        await inbox.wait_for(3)
        link.detach()
        delivered = len(inbox.messages)
        await asyncio.wait_for(link.close(), seconds(1))
        await ends_normally(link)
        assert len(inbox.messages) == delivered
        assert link.close_code == 1000


# ---- how the link ends ------------------------------------------------------------------------------------------


async def test_a_close_1000_from_the_upstream_is_a_normal_end(links: Links) -> None:
    async def upstream(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(1000, "bye")

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        inbox = Inbox()
        link.attach(inbox)
        await ends_normally(link)
        assert inbox.messages == ["last words"]
        assert link.close_code == 1000


@pytest.mark.parametrize("code", [1001, 1008, 1011, 4000])
async def test_any_other_close_code_from_the_upstream_is_a_disconnect_with_that_code(links: Links, code: int) -> None:
    async def upstream(ws: ServerConnection) -> None:
        await ws.close(code, "going")

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        link.attach(Inbox())
        error = await disconnect_of(link)
        assert error.code == code
        assert link.close_code == code


async def test_a_close_frame_without_a_code_is_a_disconnect_with_code_1005(links: Links) -> None:
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream, Inbox())
        peer.send(frame(OP_CLOSE))
        assert (await peer.read_frame()).opcode == OP_CLOSE  # the link answers the close
        peer.hang_up()
        assert (await disconnect_of(link)).code == 1005


async def test_the_link_closing_itself_is_a_normal_end_once_the_upstream_answers(links: Links) -> None:
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream, Inbox())
        closing = asyncio.ensure_future(link.close())
        assert await peer.read_close() == 1000
        peer.send(close_frame(1000))
        peer.hang_up()
        await asyncio.wait_for(closing, seconds(1))
        await ends_normally(link)
        assert link.close_code == 1000


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize(
    "unfinished",
    [
        pytest.param(b"", id="between messages"),
        pytest.param(text("the first fragment", fin=False), id="inside a fragmented message"),
        pytest.param(text("a frame cut short")[:7], id="inside a frame"),
    ],
)
async def test_a_tcp_drop_without_a_close_frame_is_a_disconnect_with_code_1006(links: Links, how: str, unfinished: bytes) -> None:
    async with raw_upstream() as upstream:
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        peer.send(text("whole"), unfinished)
        await inbox.wait_for(1)
        await peer.writer.drain()
        peer.hang_up() if how == "fin" else peer.reset()
        error = await disconnect_of(link)
        assert error.code == 1006
        assert link.close_code == 1006
        assert inbox.messages == ["whole"]


# ---- garbage from the upstream ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "close_code"),
    [
        # "HT" reads as a frame header with RSV1 set and an 84-byte payload, which websockets checks once it is read
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + b" " * 100, 1002, id="http after the handshake"),
        pytest.param(bytes(range(0xF0, 0x100)) * 4, 1002, id="bytes 0xf0 to 0xff"),
        pytest.param(frame(OP_TEXT, b"hi", rsv=4), 1002, id="rsv1 set without an extension"),
        pytest.param(frame(OP_TEXT, b"hi", rsv=1), 1002, id="rsv3 set"),
        pytest.param(frame(0x3, b"hi"), 1002, id="a reserved data opcode"),
        pytest.param(frame(0xB, b""), 1002, id="a reserved control opcode"),
        pytest.param(frame(OP_TEXT, b"hi", mask=b"\x01\x02\x03\x04"), 1002, id="a masked frame from the server"),
        pytest.param(frame(OP_CONT, b"orphan"), 1002, id="a continuation without a start"),
        pytest.param(text("start", fin=False) + text("another start"), 1002, id="a new message inside a fragmented one"),
        pytest.param(frame(OP_PING, b"x", fin=False), 1002, id="a fragmented ping"),
        pytest.param(frame(OP_PING, b"x" * 126), 1002, id="a ping over 125 bytes"),
        pytest.param(frame(OP_CLOSE, b"\x03"), 1002, id="a close payload of one byte"),
        pytest.param(close_frame(999), 1002, id="close code 999"),
        pytest.param(close_frame(1005), 1002, id="close code 1005 on the wire"),
        pytest.param(close_frame(1006), 1002, id="close code 1006 on the wire"),
        pytest.param(frame(OP_CLOSE, b"\x03\xe8\xff"), 1007, id="a close reason that is not UTF-8"),
    ],
)
async def test_garbage_from_the_upstream_ends_the_link_with_upstream_disconnected(
    links: Links, garbage: bytes, close_code: int
) -> None:
    async with raw_upstream() as upstream:
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        peer.send(garbage, text("never delivered"))
        assert await peer.read_close() == close_code
        peer.hang_up()
        error = await disconnect_of(link)
        assert error.code != 1000
        assert f"upstream broke the WebSocket protocol ({close_code}: " in str(error)  # and says what broke it
        assert inbox.messages == []


@pytest.mark.parametrize(
    ("bad", "close_code"),
    [
        pytest.param(close_frame(1005), 1002, id="close code 1005 on the wire"),
        pytest.param(frame(OP_PING, b"x" * 126), 1002, id="a ping over 125 bytes"),
        pytest.param(frame(0x3, b"hi"), 1002, id="a reserved data opcode"),
        pytest.param(frame(OP_TEXT, b"\xff"), 1007, id="invalid UTF-8"),
    ],
)
@pytest.mark.parametrize("answered", [False, True], ids=["close not answered", "close answered"])
@pytest.mark.parametrize("count", [1, 2], ids=["one message before it", "two messages before it"])
async def test_messages_read_before_a_protocol_violation_are_delivered_and_the_end_is_not_a_drop(
    links: Links, bad: bytes, close_code: int, answered: bool, count: int
) -> None:
    """In one read: whole messages, then a frame that breaks the protocol (picows' parser finds some, the link the
    rest). What came before it is delivered; the end names the failure's code, not 1006, so a resume does not take
    a broken upstream for a dropped one (docs/resume.md)."""
    async with raw_upstream() as upstream:
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        messages = [text("one"), text("two")][:count]
        peer.send(b"".join(messages) + bad + text("never delivered"))  # one write: one read for the link
        assert await peer.read_close() == close_code
        if answered:
            peer.send(close_frame(close_code))
        peer.hang_up()
        error = await disconnect_of(link)
        assert error.code == close_code and not is_resumable(error.code)
        assert f"upstream broke the WebSocket protocol ({close_code}: " in str(error)
        assert inbox.messages == ["one", "two"][:count]


_any_frame = st.builds(
    lambda opcode, payload, fin, rsv, masked, length: frame(
        opcode, payload, fin=fin, rsv=rsv, mask=b"\x01\x02\x03\x04" if masked else None
    )[:length],
    st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY, 0x3, OP_CLOSE, OP_PING, OP_PONG, 0xB]),
    st.binary(max_size=200) | st.text(max_size=60).map(str.encode) | st.just(b"\x03\xe8"),
    st.booleans(),
    st.sampled_from([0, 0, 0, 1, 4]),
    st.booleans() | st.just(False),
    st.integers(min_value=1, max_value=400),  # a frame may be cut short
)
_upstream_bytes = st.lists(_any_frame | st.binary(max_size=64), min_size=1, max_size=8)


async def _feed_garbage(chunks: list[bytes]) -> None:
    async with no_unhandled_loop_errors(), raw_upstream() as upstream:
        links = Links()
        inbox = Inbox()
        link, peer = await open_raw(links, upstream, inbox)
        for chunk in chunks:  # each in its own write, so also in separate reads
            peer.send(chunk)
            await asyncio.sleep(0)
        peer.send(text("after the garbage"))
        await asyncio.sleep(0.01)
        peer.hang_up()
        try:
            await asyncio.wait_for(link.wait_closed(), seconds(2))
        except UpstreamDisconnected as exc:
            assert exc.code != 1000 or link.close_code == 1000
        assert all(isinstance(m, str | bytes) for m in inbox.messages)
        link.send("the link still answers send() without an unexpected error") if not link.close_code else None
        link.abort()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chunks=_upstream_bytes)
def test_whatever_an_upstream_sends_the_link_delivers_whole_messages_or_ends_with_upstream_disconnected(
    chunks: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Any bytes after the handshake (frames of every opcode, with reserved bits, masked, cut short, or plain noise):
    the link never raises anything but `UpstreamDisconnected` from `wait_closed`, never leaves an error for the loop's
    handler or the log, and hands the consumer only whole text or binary messages."""
    asyncio.run(_feed_garbage(chunks))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---- sending ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "length_bytes"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("a" * 125, 0, id="125 chars"),
        pytest.param("b" * 126, 2, id="126 chars"),
        pytest.param("c" * 65535, 2, id="65535 chars"),
        pytest.param("d" * 65536, 8, id="65536 chars"),
        pytest.param("e" * 100_000, 8, id="100000 chars"),
        pytest.param('{"text": "Привет, 世界 🎙️"}', 0, id="non-ascii"),
        pytest.param("é" * 63, 2, id="63 chars in 126 bytes"),
        pytest.param("ж" * 32768, 8, id="32768 chars in 65536 bytes"),
    ],
)
async def test_send_writes_one_masked_final_text_frame_with_the_exact_utf8_payload(
    links: Links, message: str, length_bytes: int
) -> None:
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream)
        link.send(message)
        got = await peer.read_frame()
        assert (got.fin, got.rsv, got.opcode) == (True, 0, OP_TEXT)
        assert got.mask is not None, "a client frame must be masked"
        assert got.length_bytes == length_bytes, "the shortest length encoding"
        assert got.payload == message.encode()


async def test_successive_frames_use_fresh_mask_keys_also_across_the_key_pool_refill(links: Links) -> None:
    count = 2500  # the pool holds 1024 keys
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream)
        for i in range(count):
            link.send(f"frame {i}")
        frames = [await peer.read_frame() for _ in range(count)]
    assert [f.payload.decode() for f in frames] == [f"frame {i}" for i in range(count)]
    keys = [f.mask for f in frames]
    assert all(key is not None for key in keys)
    assert all(a != b for a, b in itertools.pairwise(keys))
    assert len(set(keys)) >= count - 3  # 4-byte random keys: a repeat is a ~1e-3 event per run, a reused pool is not


def test_mask_keys_come_four_bytes_each_fresh_across_refills_and_for_a_burst_bigger_than_the_pool() -> None:
    keys = MaskKeys()
    taken = [keys.take(n) for n in (1, 3, MaskKeys.POOL_KEYS - 5, 2, 3 * MaskKeys.POOL_KEYS, 0, 7)]
    assert [len(k) for k in taken] == [4, 12, 4 * (MaskKeys.POOL_KEYS - 5), 8, 12 * MaskKeys.POOL_KEYS, 0, 28]
    every = [blob[i : i + 4] for blob in taken for i in range(0, len(blob), 4)]
    assert len(set(every)) >= len(every) - 3  # random 4-byte keys; a pool handed out twice would repeat hundreds


async def test_frames_sent_while_messages_are_being_delivered_reach_the_upstream_in_order(links: Links) -> None:
    async def upstream(ws: ServerConnection) -> None:
        for i in range(50):
            await ws.send(f"event {i}")
        replies = [await ws.recv() for _ in range(50)]
        await ws.send(repr(replies))
        await ws.wait_closed()

    async with websockets_upstream(upstream) as url:
        link = await links.open(url)
        inbox = Inbox()

        def consumer(message: Message) -> None:
            inbox(message)
            if isinstance(message, str) and message.startswith("event "):
                link.send(message.replace("event", "reply"))  # from inside the read callback, as the bridge does

        link.attach(consumer)
        messages = await inbox.wait_for(51)
        assert messages[-1] == repr([f"reply {i}" for i in range(50)])


@pytest.mark.parametrize(
    ("ending", "upstream_sent_a_close"),
    [
        ("upstream closed 1000", True),
        ("upstream closed 1001", True),
        ("upstream close frame read, tcp still open", True),
        ("tcp dropped", False),
        ("link closed", True),  # the upstream's answer to the link's close frame is a close frame too
        ("link aborted", False),
    ],
)
async def test_send_on_an_ended_link_drops_the_frame_after_an_upstream_close_and_raises_otherwise(
    links: Links, ending: str, upstream_sent_a_close: bool
) -> None:
    # After the upstream's close frame, wait_closed decides how the session ended (a normal close stays normal
    # however many client frames were still on their way); any other end is a disconnect the sender must hear of.
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream, Inbox())
        if ending.startswith("upstream close"):
            code = 1000 if ending.endswith("1000") else 1001
            peer.send(close_frame(code))
            assert await peer.read_close() == code
            if "tcp still open" not in ending:
                peer.hang_up()
                with contextlib.suppress(UpstreamDisconnected):
                    await ends_normally(link)
        elif ending == "tcp dropped":
            peer.hang_up()
            await disconnect_of(link)
        elif ending == "link closed":
            closing = asyncio.ensure_future(link.close())
            await peer.read_close()
            peer.send(close_frame(1000))
            peer.hang_up()
            await asyncio.wait_for(closing, seconds(1))
        else:
            link.abort()
            await disconnect_of(link)
        if upstream_sent_a_close:
            link.send("too late")  # dropped, not raised
        else:
            with pytest.raises(UpstreamDisconnected):
                link.send("too late")


async def test_send_right_after_abort_raises_upstream_disconnected(links: Links) -> None:
    async with raw_upstream() as upstream:
        link, _peer = await open_raw(links, upstream, Inbox())
        link.abort()
        with pytest.raises(UpstreamDisconnected):
            link.send("lost without a word")


async def test_send_to_an_upstream_that_stopped_reading_raises_past_the_backlog_limit_and_aborts(links: Links) -> None:
    async with raw_upstream(receive_buffer=4096) as upstream:
        link = await links.open(upstream.url, backlog_limit=64 << 10)
        await upstream.accepted()  # and never reads again
        chunk = "x" * (64 << 10)
        sent = 0
        with pytest.raises(UpstreamDisconnected):
            for _ in range(2000):  # the kernel's socket buffers take a few MB first
                link.send(chunk)
                sent += 1
        assert 0 < sent < 2000
        assert (await disconnect_of(link)).code == 1006  # aborted: no close handshake with a peer that does not read
        with pytest.raises(UpstreamDisconnected):
            link.send("after the abort")


async def test_more_than_the_backlog_limit_in_total_is_fine_for_an_upstream_that_reads(links: Links) -> None:
    async def upstream(ws: ServerConnection) -> None:
        received = [await ws.recv() for _ in range(100)]
        await ws.send(f"{len(received)} {sum(map(len, received))}")
        await ws.wait_closed()

    async with websockets_upstream(upstream) as url:
        link = await links.open(url, backlog_limit=16 << 10)
        inbox = Inbox()
        link.attach(inbox)
        for _ in range(100):
            link.send("y" * 1024)
            await asyncio.sleep(0)
        assert await inbox.wait_for(1) == [f"100 {100 * 1024}"]


# ---- connecting ---------------------------------------------------------------------------------------------------


async def test_the_handshake_carries_the_given_headers_and_offers_no_extension(links: Links) -> None:
    seen: list[dict[str, str]] = []

    async def upstream(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append({name.lower(): value for name, value in ws.request.headers.raw_items()})
        await ws.wait_closed()

    async with websockets_upstream(upstream) as url:
        link = await links.open(url + "?model=gpt%3A%2F%2Ff%2Fm", headers={"Authorization": "Api-Key secret", "X-Trace": "t1"})
        await link.close()
    assert link.connect_seconds >= 0
    [headers] = seen
    assert headers["authorization"] == "Api-Key secret"
    assert headers["x-trace"] == "t1"
    assert headers["user-agent"].startswith("realtime-relay picows/")
    assert "sec-websocket-extensions" not in headers


@pytest.mark.parametrize(
    "status", [HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE]
)
async def test_a_refused_handshake_is_upstream_unavailable_with_the_http_status(links: Links, status: HTTPStatus) -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(status, "no\n")

    async def never_called(ws: ServerConnection) -> None:
        raise AssertionError("the handshake was refused")

    async with websockets_upstream(never_called, process_request=refuse) as url:
        with pytest.raises(UpstreamUnavailable) as caught:
            await links.open(url)
    assert caught.value.status == status
    assert str(int(status)) in str(caught.value)


@pytest.mark.parametrize(
    ("status_line", "status", "said"),
    [
        pytest.param(b"HTTP/1.1 520 Origin Error", 520, "HTTP 520 Origin Error", id="a status with no standard name"),
        pytest.param(b"HTTP/1.1 599 ", 599, "HTTP 599", id="a non-standard status without a reason"),
        pytest.param(
            b"HTTP/1.1 429 Quota Exceeded", 429, "HTTP 429 Quota Exceeded (Too Many Requests)", id="the upstream's own reason"
        ),
        pytest.param(b"HTTP/1.0 503 Service Unavailable", 503, "HTTP 503 Service Unavailable", id="an HTTP/1.0 answer"),
    ],
)
async def test_a_refused_handshake_reports_the_status_and_reason_the_upstream_sent(
    links: Links, status_line: bytes, status: int, said: str
) -> None:
    """A proxy in front of the upstream may answer with a status outside the standard list (Cloudflare's 52x)
    or its own reason phrase: the refusal still carries that status, and the message says what was sent."""
    body = b'{"error": {"message": "nope"}}'
    answer = status_line + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with raw_upstream(lambda request: answer) as upstream:
        with pytest.raises(UpstreamUnavailable) as caught:
            await links.open(upstream.url)
    assert caught.value.status == status
    assert str(caught.value) == f"upstream refused the handshake: {said}"


async def test_a_refusal_that_repeats_the_upstream_key_does_not_carry_it_to_the_client(links: Links) -> None:
    """The reason phrase reaches the client's error and the event log, which no log formatter redacts: the
    credentials the relay sent are masked in it, also when the phrase is longer than the part that is kept."""
    key = "sk-upstream-" + "k" * 150  # longer than the kept part of a reason
    register_credentials(key)
    answer = b"HTTP/1.1 401 bad key " + key.encode() + b"\r\nContent-Length: 0\r\n\r\n"
    try:
        async with raw_upstream(lambda request: answer) as upstream:
            with pytest.raises(UpstreamUnavailable) as caught:
                await links.open(upstream.url)
    finally:
        register_credentials()  # twice: the current and the previous read are let go
        register_credentials()
    assert "sk-upstream" not in str(caught.value) and "kkkk" not in str(caught.value)
    assert str(caught.value) == f"upstream refused the handshake: HTTP 401 bad key {MASK} (Unauthorized)"


async def test_a_non_upgrade_answer_is_upstream_unavailable_with_its_status(links: Links) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nhi\n"
    async with raw_upstream(lambda request: ok) as upstream:
        with pytest.raises(UpstreamUnavailable) as caught:
            await links.open(upstream.url)
    assert caught.value.status == 200


async def test_nothing_listening_is_upstream_unavailable(links: Links) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with pytest.raises(UpstreamUnavailable) as caught:
        await links.open(f"ws://127.0.0.1:{port}{PATH}")
    assert caught.value.status is None


async def test_an_upstream_that_never_answers_is_upstream_unavailable_after_open_timeout(links: Links) -> None:
    async with raw_upstream(lambda request: None) as upstream:
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as caught:
            await asyncio.wait_for(links.open(upstream.url, open_timeout=0.2), seconds(2))
        waited = time.monotonic() - started
    assert seconds(0.2) <= waited < seconds(0.2) + seconds(0.5)
    assert caught.value.status is None
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("how", ["open_timeout", "cancelled"])
async def test_a_connect_abandoned_during_the_handshake_leaves_no_connection_behind(links: Links, how: str) -> None:
    """The upstream has the request and has not answered yet when the link gives up (its open timeout, or the
    client left and the session's task was cancelled): the TCP connection is reset, so an answer that comes later
    cannot open an upstream session nobody reads."""
    requested: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        requested.set_result(None)
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 16):
                pass
        ended.set_result(None)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}{PATH}"
    try:
        opening = asyncio.ensure_future(links.open(url, open_timeout=0.3 if how == "open_timeout" else 30.0))
        await asyncio.wait_for(requested, seconds(1))
        if how == "cancelled":
            opening.cancel()
        with pytest.raises(UpstreamUnavailable if how == "open_timeout" else asyncio.CancelledError):
            await opening
        await asyncio.wait_for(ended, seconds(1))
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("reply", "hang_up"),
    [
        pytest.param(lambda request: b"", True, id="hangs up without an answer"),
        pytest.param(lambda request: b"HTTP/1.1 101 Switch", True, id="hangs up inside the answer"),
        pytest.param(lambda request: b"SSH-2.0-OpenSSH_9.2\r\n\r\n", True, id="not http"),
        pytest.param(
            lambda request: (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
            ),
            False,
            id="a wrong accept key",
        ),
        pytest.param(
            lambda request: upgrade(request).replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
            False,
            id="an extension that was not offered",
        ),
    ],
)
async def test_a_broken_handshake_answer_is_upstream_unavailable(
    links: Links, reply: Callable[[bytes], bytes], hang_up: bool
) -> None:
    async with raw_upstream(reply, hang_up=hang_up) as upstream:
        with pytest.raises(UpstreamUnavailable) as caught:
            await asyncio.wait_for(links.open(upstream.url, open_timeout=0.5), seconds(2))
    assert caught.value.status is None


# ---- reads that carry more than one thing ---------------------------------------------------------------------


async def test_a_handshake_answer_read_in_two_parts_leaves_a_live_link_open_past_close_timeout(links: Links) -> None:
    """The link keeps close_timeout itself once a close frame has gone out; an answer that reached it in two reads
    is not that, and must not start the deadline (a healthy session used to be aborted 1 s in, as 1006)."""
    async with raw_upstream(lambda request: upgrade(request)[:20]) as upstream:
        opening = asyncio.ensure_future(links.open(upstream.url))
        peer = await upstream.accepted()  # the status line and part of a header are out; the link waits for the rest
        await asyncio.sleep(0.05)
        peer.send(upgrade(peer.request)[20:])
        link = await opening
        inbox = Inbox()
        link.attach(inbox)
        ended = asyncio.ensure_future(link.wait_closed())
        for i in range(5):  # one event every 0.3 s, to 1.5 s after the answer: well past close_timeout (1 s)
            peer.send(text(f"tick {i}"))
            await asyncio.sleep(0.3)
        assert not ended.done()
        assert await inbox.wait_for(5) == [f"tick {i}" for i in range(5)]
        peer.send(close_frame(1000))
        assert await peer.read_close() == 1000
        peer.hang_up()
        await asyncio.wait_for(ended, seconds(1))


async def test_invalid_utf8_read_before_attach_keeps_the_messages_held_before_it_and_drops_those_after(links: Links) -> None:
    """Failing the connection stops processing at the bad frame (RFC 6455 7.1.7), but what was read before it was
    whole and valid and is still the consumer's (it used to be thrown away along with the rest)."""
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream)
        peer.send(text("session.created"), frame(OP_TEXT, b"\xff\xfe"), text("after"), frame(OP_BINARY, b"after too"))
        assert await peer.read_close() == 1007  # the link failed the connection before anyone attached
        inbox = Inbox()
        link.attach(inbox)
        assert inbox.messages == ["session.created"]  # handed over by attach itself
        peer.hang_up()
        await disconnect_of(link)
        assert inbox.messages == ["session.created"]


async def test_a_send_from_the_consumer_while_a_close_1000_waits_in_the_same_read_never_fails_and_the_end_stays_normal(
    links: Links,
) -> None:
    """A close frame that came in the same read as data frames: every message before it is delivered, what the
    consumer sends meanwhile (the bridge's retrieve, a client's frame) either reaches the upstream before the link's
    answer to the close or is dropped, never raised, and the end is the upstream's normal close."""
    async with raw_upstream() as upstream:
        link, peer = await open_raw(links, upstream)
        inbox = Inbox()
        send_errors: list[UpstreamDisconnected] = []

        def consumer(message: Message) -> None:
            inbox(message)
            try:
                link.send(f"an answer to {message!r}")
            except UpstreamDisconnected as exc:
                send_errors.append(exc)
                raise

        link.attach(consumer)
        peer.send(text("one"), text("two"), frame(OP_BINARY, b"three"), close_frame(1000))
        got = await peer.read_frame()
        while got.opcode != OP_CLOSE:
            assert got.opcode == OP_TEXT and got.payload.startswith(b"an answer to ")
            got = await peer.read_frame()
        assert got.payload[:2] == (1000).to_bytes(2, "big")  # the link's answer
        peer.hang_up()
        await ends_normally(link)
        assert send_errors == []
        assert inbox.messages == ["one", "two", b"three"]
        assert link.close_code == 1000
