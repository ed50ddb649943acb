"""The `serve` client side: an aiohttp WebSocket behind the bridge's `ClientSide` protocol.

Outbound frames go through a byte-bounded queue drained by one writer task, so the upstream reader never waits
on a slow client; `send` reports overflow (C4 `max_client_backlog_bytes`) and the bridge closes with 1008.
I/O: this socket only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from aiohttp import WSMsgType, WebSocketError, web

from relay.bridge import ClientFrame


class WebSocketClient:
    def __init__(self, ws: web.WebSocketResponse, max_backlog_bytes: int) -> None:
        self.ws = ws
        self.max_backlog_bytes = max_backlog_bytes
        self._queue: deque[str] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer = asyncio.create_task(self._write_loop(), name="client-writer")
        self.overflowed = False

    def backlog_bytes(self) -> int:
        transport = self.ws._req.transport if self.ws._req is not None else None
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._queued_bytes + buffered

    async def receive(self) -> ClientFrame:
        message = await self.ws.receive()
        if message.type == WSMsgType.TEXT:
            return ClientFrame(text=message.data)
        if message.type == WSMsgType.BINARY:
            return ClientFrame(binary_size=len(message.data))
        if message.type == WSMsgType.ERROR and isinstance(message.data, WebSocketError):
            # aiohttp already sent the close (too big -> 1009, bad UTF-8 -> 1007); its own close_code then says
            # 1006 because the client's reply cannot be parsed, so the protocol error's code is the one to report.
            return ClientFrame(closed=True, close_code=int(message.data.code))
        # CLOSE, CLOSING, CLOSED, other errors.
        return ClientFrame(closed=True, close_code=self.ws.close_code)

    def send(self, text: str) -> bool:
        if self.overflowed:
            return False
        size = len(text)
        backlog = self.backlog_bytes()
        # One frame always fits an empty backlog, so a large event (a client's retrieve of a long item) never
        # counts as slowness by itself; memory stays within the bound plus that one frame.
        if backlog and backlog + size > self.max_backlog_bytes:
            self.overflowed = True
            self._queue.clear()
            self._queued_bytes = 0
            return False
        self._queue.append(text)
        self._queued_bytes += size
        self._idle.clear()
        self._wake.set()
        return True

    async def _write_loop(self) -> None:
        queue = self._queue
        ws = self.ws
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                text = queue.popleft()
                self._queued_bytes -= len(text)
                if ws.closed:
                    continue
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    queue.clear()
                    self._queued_bytes = 0
            self._idle.set()

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        if grace > 0 and not self.overflowed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        await self.stop_writer()
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, message=reason.encode()[:120])
            return code
        return self.ws.close_code

    async def stop_writer(self) -> None:
        """End the writer task (the handler is done with this socket, however the session ended)."""
        self._queue.clear()
        self._queued_bytes = 0
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer

    def abort(self) -> None:
        transport = self.ws._req.transport if self.ws._req is not None else None
        if transport is not None:
            transport.abort()
