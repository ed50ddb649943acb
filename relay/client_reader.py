"""Reading the client half of a session, also while the upstream handshake still runs.

Boundary: the bridge's reads of its `ClientSide` (relay.links.base), nothing else. While the upstream connects,
the client is read on: a client that leaves, or a stop (drain), cancels the handshake, so no upstream session is
opened for nobody (docs/lifecycle.md); frames that arrive meanwhile are kept in order, up to a byte bound past
which the client is simply not read (TCP backpressure). Afterwards `read` hands out those frames first, then
reads the client to its end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from relay.links.base import ClientFrame, ClientSide, dispatch_frame
from relay.reconnect import cancel_and_wait

T = TypeVar("T")


class EndedBeforeConnect(Exception):
    """The client left (`stop_reason` None, with its close code), or the relay was told to stop (`stop_reason`),
    while the upstream handshake was still running."""

    def __init__(self, stop_reason: Any, close_code: int | None) -> None:
        super().__init__(stop_reason)
        self.stop_reason = stop_reason
        self.close_code = close_code


class ClientReader:
    def __init__(self, client: ClientSide, early_limit_bytes: int) -> None:
        self.client = client
        self._early_limit_bytes = early_limit_bytes
        # Client frames read while the upstream handshake runs, and a receive still in flight when it ends.
        self._early_frames: deque[ClientFrame] = deque()
        self._pending_receive: asyncio.Task[ClientFrame] | None = None

    async def read_while(self, connecting: Coroutine[Any, Any, T], stop: asyncio.Future[Any]) -> T:
        """Run `connecting` (the upstream handshake) while reading the client; its result, or EndedBeforeConnect
        (the handshake cancelled) when the client closes or `stop` is set first."""
        connect = asyncio.create_task(connecting)
        early_bytes = 0
        try:
            while not connect.done():
                if self._pending_receive is None and early_bytes <= self._early_limit_bytes:
                    # Past the bound the client is simply not read until the upstream answers (TCP backpressure).
                    self._pending_receive = asyncio.create_task(self.client.receive())
                watched: set[asyncio.Future[Any]] = {connect, stop}
                if self._pending_receive is not None:
                    watched.add(self._pending_receive)
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if self._pending_receive is not None and self._pending_receive.done() and not connect.done():
                    frame = self._pending_receive.result()
                    self._pending_receive = None
                    if frame.closed:
                        raise EndedBeforeConnect(None, frame.close_code)
                    self._early_frames.append(frame)
                    early_bytes += len(frame.text or "")
                if stop.done() and not connect.done():
                    raise EndedBeforeConnect(stop.result(), None)
        except BaseException:
            await cancel_and_wait(connect)
            raise
        return connect.result()

    async def read(self, on_text: Callable[[str], None], on_binary: Callable[[int], None]) -> ClientFrame:
        """Read the client to its end (`ClientSide.read`): the frames kept during the handshake first, then the read
        still in flight, then the client's own."""
        while self._early_frames:
            frame = self._early_frames.popleft()
            if frame.closed:
                return frame
            dispatch_frame(frame, on_text, on_binary)
        if self._pending_receive is not None:
            pending, self._pending_receive = self._pending_receive, None
            frame = await pending
            if frame.closed:
                return frame
            dispatch_frame(frame, on_text, on_binary)
        return await self.client.read(on_text, on_binary)

    async def aclose(self) -> None:
        """Cancel a read still in flight (the session is ending)."""
        if self._pending_receive is not None:
            await cancel_and_wait(self._pending_receive)
