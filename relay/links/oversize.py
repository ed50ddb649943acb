"""A readable close 1009 for a client frame over the size limit: discard the rest of that frame, bounded.

The server library refuses an oversized frame as soon as its header announces the length, sends close 1009 and
closes the TCP connection while the client is still sending the frame. Closing a socket with unread data makes
the kernel answer with a reset, so a client that finishes sending and then reads sees "connection reset" instead
of the close frame. Here the relay keeps the connection open on its own duplicate of the socket's descriptor,
half-closes it (the close frame is already sent; FIN follows it, so the client reads a clean close), and reads
and drops whatever the client still sends, never keeping it, until the client closes, `max_bytes` have been
dropped, or `max_seconds` pass. See docs/client-input.md.

Only public asyncio and socket APIs are used; I/O: that one socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Final, cast

import structlog

log = structlog.get_logger()

DISCARD_MAX_SECONDS: Final = 2.0
_CHUNK: Final = 1 << 16
_lingering: set[asyncio.Task[int]] = set()  # referenced until done, so the loop does not lose them


def discard_rest_of_frame(
    transport: asyncio.BaseTransport | None, *, max_bytes: int, max_seconds: float = DISCARD_MAX_SECONDS
) -> asyncio.Task[int] | None:
    """Keep the client's connection readable after close 1009 and drop what it still sends. Must be called
    right after the server library closed the transport, before the loop runs again (the library closes the
    descriptor on the next iteration). Returns the discarding task (its result: bytes dropped), or None when the
    socket is already gone."""
    if transport is None:
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    try:
        fd = os.dup(raw.fileno())
    except (OSError, ValueError):  # already closed
        return None
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    task = asyncio.get_running_loop().create_task(_discard(transport, sock, max_bytes, max_seconds), name="discard-1009")
    _lingering.add(task)
    task.add_done_callback(_lingering.discard)
    return task


async def _discard(transport: asyncio.BaseTransport, sock: socket.socket, max_bytes: int, max_seconds: float) -> int:
    loop = asyncio.get_running_loop()
    dropped = 0
    try:
        async with asyncio.timeout(max_seconds):
            # The close frame may still sit in the transport's buffer: FIN must not overtake it.
            # (Any loop's stream transport has the method; uvloop's do not subclass asyncio's classes.)
            while cast(asyncio.WriteTransport, transport).get_write_buffer_size():
                await asyncio.sleep(0.01)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            while dropped < max_bytes:
                chunk = await loop.sock_recv(sock, _CHUNK)
                if not chunk:
                    break
                dropped += len(chunk)
    except (TimeoutError, OSError):
        pass
    finally:
        sock.close()
    log.info("relay.oversize_discarded", discarded_bytes=dropped)  # `bytes` is an event-record key on stdout
    return dropped
