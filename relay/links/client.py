"""The `serve` client side: an aiohttp WebSocket behind the bridge's `ClientSide` protocol.

An outbound frame is written straight into the socket's transport while that holds less than
`DIRECT_WRITE_LIMIT_BYTES` and nothing is queued (the common case: no task wake-up per frame; the frame is encoded
here, aiohttp negotiates no compression). Past that, frames go through a byte-bounded queue drained by one writer
task, so the upstream reader never waits on a slow client and an overflow can drop the unsent backlog; `send`
reports overflow (the backlog is bounded by `max_client_backlog_bytes`, docs/lifecycle.md) and the bridge closes
with 1008. One large frame at a time is measured apart: while the client reads it, the frames behind it are held
to the bound without it, so a big event followed by more is not slowness (memory: the bound plus that one frame).
The writer task is also the one that sends the close frame, and it is never cancelled while it writes: aiohttp
shares one drain future between everything that writes to a socket, so cancelling a writer stuck in drain would
cancel that future for the close frame too. Every wait here is bounded; a close that cannot finish (the client
stopped reading) ends with the TCP connection aborted. I/O: this socket only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Final

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web

from relay.links.base import ClientFrame
from relay.links.oversize import discard_rest_of_frame
from relay.links.writebatch import WriteBatch
from relay.links.wsframe import text_frame

_LINGER_ZERO: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close(2) resets the connection
CLOSE_HANDSHAKE_S: Final = 5.0  # abort the TCP connection when a close does not finish in 5 s (docs/lifecycle.md)
_REASON_MAX_BYTES: Final = 120  # a close frame's payload is at most 125 bytes, 2 of them the code
# What may wait in the transport before frames queue in the relay instead (aiohttp's own writer limit): small, so
# an overflow still finds nearly all of the backlog in the queue, where it can be dropped.
DIRECT_WRITE_LIMIT_BYTES: Final = 64 * 1024
# A frame this big takes the client a while to read even at full speed; one such frame at a time is measured apart
# from the backlog, so what follows it right away is not taken for slowness.
LARGE_FRAME_BYTES: Final = 64 * 1024


class WebSocketClient:
    """`transport` is the request's own (`web.BaseRequest.transport`, aiohttp's documented handle on the socket):
    the direct path writes there; without one every frame goes through the queue. After close 1009 up to
    `oversize_discard_bytes` of the oversized frame are read from it and dropped (see docs/client-input.md)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        max_backlog_bytes: int,
        *,
        transport: asyncio.Transport | None,
        oversize_discard_bytes: int = 0,
    ) -> None:
        self.ws = ws
        self.max_backlog_bytes = max_backlog_bytes
        # After close 1009, how much of the oversized frame the relay reads and drops so the close stays
        # readable (0: none; see relay.links.oversize).
        self.oversize_discard_bytes = oversize_discard_bytes
        self._queue: deque[tuple[str, int]] = deque()  # (frame, its UTF-8 size)
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._close_request: tuple[int, str] | None = None
        self._writer = asyncio.create_task(self._write_loop(), name="client-writer")
        self._transport = transport
        # Frames of the direct path are written together once the current callbacks are done.
        self._batch = WriteBatch(transport)
        self.overflowed = False
        # The one large frame (over LARGE_FRAME_BYTES) still on its way to the client, measured apart from
        # the backlog: an upper bound of what of it still waits, and the bytes of the frames accepted after it.
        self._large_left = 0
        self._after_large = 0

    def _transport_buffered(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def backlog_bytes(self) -> int:
        """What is waiting to reach the client: the relay's queue plus the transport's write buffer."""
        return self._queued_bytes + self._batch.size + self._transport_buffered()

    def _large_waiting(self, backlog: int) -> int:
        """How much of the large frame still waits in `backlog`. Frames leave in order, so what waits beyond the
        frames accepted after it is (at most its own size of) it, plus frames ahead of it, which leave first.
        Once less than LARGE_FRAME_BYTES of it waits it is a frame like any other."""
        left = min(self._large_left, max(0, backlog - self._after_large))
        if left < LARGE_FRAME_BYTES:
            left = self._after_large = 0
        self._large_left = left
        return left

    def _accepted(self, size: int) -> None:
        """Track a frame accepted for the client: the first large one is measured apart until it has left."""
        if self._large_left:
            self._after_large += size
        elif size > LARGE_FRAME_BYTES:
            self._large_left, self._after_large = size, 0

    async def receive(self) -> ClientFrame:
        message = await self.ws.receive()
        if message.type == WSMsgType.TEXT:
            return ClientFrame(text=message.data)
        if message.type == WSMsgType.BINARY:
            return ClientFrame(binary_size=len(message.data))
        return self._end(message)

    async def read(self, on_text: Callable[[str], None], on_binary: Callable[[int], None]) -> ClientFrame:
        # One await per frame straight on aiohttp's reader (it returns at once while frames it parsed wait), and
        # the text handed on as aiohttp made it: in a flood, most of a client frame's cost outside the session.
        ws = self.ws
        while True:
            message = await ws.receive()
            kind = message.type
            if kind == WSMsgType.TEXT:
                on_text(message.data)
            elif kind == WSMsgType.BINARY:
                on_binary(len(message.data))
            else:
                return self._end(message)

    def _end(self, message: WSMessage) -> ClientFrame:
        """The end a message that is not data means."""
        if message.type == WSMsgType.ERROR and isinstance(message.data, WebSocketError):
            # aiohttp already sent the close (too big -> 1009, bad UTF-8 -> 1007); its own close_code then says
            # 1006 because the client's reply cannot be parsed, so the protocol error's code is the one to report.
            code = int(message.data.code)
            if code == WSCloseCode.MESSAGE_TOO_BIG and self.oversize_discard_bytes:
                # Now, before the loop runs again: aiohttp has just closed the transport.
                discard_rest_of_frame(self._transport, max_bytes=self.oversize_discard_bytes)
            return ClientFrame(closed=True, close_code=code)
        # CLOSE, CLOSING, CLOSED, other errors.
        return ClientFrame(closed=True, close_code=self._close_code())

    def _close_code(self) -> int | None:
        """The client's close code as a plain number (aiohttp may hand an enum member; logs show the number)."""
        code = self.ws.close_code
        return None if code is None else int(code)

    def send(self, text: str) -> bool:
        if self.overflowed:
            return False
        if self._close_request is not None:
            return True  # the session is ending; late frames are dropped, which is not slowness
        # Bytes, like the transport's buffer it is added to: a Cyrillic transcript is ~2 bytes per character.
        payload = text.encode()
        size = len(payload)
        transport = self._transport
        if (
            not self._queue
            and transport is not None
            and transport.get_write_buffer_size() + self._batch.size < DIRECT_WRITE_LIMIT_BYTES
            and not self.ws.closed
            and not transport.is_closing()
        ):
            if self._large_left or size > LARGE_FRAME_BYTES:  # rare: kept off the path of every other frame
                if self._large_left:
                    self._large_waiting(self.backlog_bytes())
                self._accepted(size)
            self._batch.add(text_frame(payload))
            return True
        self._batch.write()  # what went the direct way before this frame goes out before it
        backlog = self.backlog_bytes()
        # One frame always fits an empty backlog, and a large one (a client's retrieve of a long item, a big
        # upstream event) does not count against the frames behind it while the client reads it: neither is
        # slowness by itself. Memory stays within the bound plus that one frame.
        if backlog and backlog - self._large_waiting(backlog) + size > self.max_backlog_bytes:
            self.overflowed = True
            self._drop_queue()
            return False
        self._accepted(size)
        self._queue.append((text, size))
        self._queued_bytes += size
        self._idle.clear()
        self._wake.set()
        return True

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        self._large_left = self._after_large = 0
        self._idle.set()

    async def _write_loop(self) -> None:
        queue = self._queue
        ws = self.ws
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                text, size = queue.popleft()
                self._queued_bytes -= size
                if ws.closed:
                    continue
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self._drop_queue()
            self._idle.set()
            if self._close_request is not None:
                code, reason = self._close_request
                if not ws.closed:
                    with contextlib.suppress(Exception):
                        await ws.close(code=code, message=reason.encode()[:_REASON_MAX_BYTES])
                return

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        """Send what is queued (within `grace` s), then close with `code`; abort if that takes over 5 s more."""
        self._batch.write()
        if self.ws.closed and self._close_request is None:
            await self.stop_writer()
            return self._close_code()
        if grace > 0 and not self.overflowed and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        self._drop_queue()
        if self._close_request is None:
            self._close_request = (code, reason)
        self._wake.set()
        # asyncio.wait, not wait_for: a timeout here must not cancel the writer in the middle of a write.
        await asyncio.wait({self._writer}, timeout=CLOSE_HANDSHAKE_S)
        if not self._writer.done() or self._transport_buffered():
            # The close did not finish, or data the client never read is still held for it: let go of it.
            self.abort()
            await self.stop_writer()
        return self._close_request[0]

    async def stop_writer(self) -> None:
        """End the writer task (the handler is done with this socket, however the session ended)."""
        self._batch.write()
        if self._writer.done():
            return
        self._drop_queue()
        if self._close_request is None:
            self._close_request = (1000, "")
        self._wake.set()
        await asyncio.wait({self._writer}, timeout=1.0)
        if not self._writer.done():
            # Stuck in a write to a client that does not read: abort the connection, which wakes the write.
            self.abort()
            await asyncio.wait({self._writer}, timeout=1.0)
        if not self._writer.done():
            self._writer.cancel()
            await asyncio.wait({self._writer})

    def abort(self) -> None:
        """Let go of the connection at once: a reset, not a close. A plain close of the socket would leave the
        kernel sending what the client never read (megabytes of stale frames, for minutes) before its FIN;
        with a zero linger the kernel drops it and the client sees the connection reset."""
        self._batch.clear()
        transport = self._transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            transport.abort()
