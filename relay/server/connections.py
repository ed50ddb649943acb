"""Bounded client connections for `serve`'s listener (see docs/security.md).

aiohttp bounds idle keep-alive connections (`keepalive_timeout`, which also covers a connection waiting for its
first request) but has no deadline for a request head that trickles in byte by byte and no cap on open sockets.
`start_listener` therefore serves the runner's protocol factory (`AppRunner.server`) through `GuardedProtocol`,
with asyncio's public `loop.create_server`:

- a connection that has not sent a whole request head (up to the blank line) within `header_timeout` seconds of
  connecting is aborted (after that, keep-alive and the handlers' own limits bound it); with TLS the handshake
  runs inside that same deadline;
- at most `max_connections` sockets are open at once, counted from the moment they are accepted (a TLS
  connection still in its handshake counts); one more is aborted as soon as it is accepted, before any handshake;
- both are counted (`on_closed(reason)`, the `relay_connections_closed_total` metric).

`AcceptErrorLimiter` keeps the loop's own "out of system resource" accept errors to one log line a second, and
`raise_nofile_limit` lifts the process's soft RLIMIT_NOFILE to its hard limit. I/O: the listening socket only.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from collections.abc import Callable
from typing import Any, Final, cast

import structlog

log = structlog.get_logger()

HEAD_END: Final = b"\r\n\r\n"
REASON_HEADER_TIMEOUT: Final = "header_timeout"
REASON_MAX_CONNECTIONS: Final = "max_connections"
# File descriptors kept out of max_connections' reach: event logs, saved audio, upstream sockets, the listener.
FD_RESERVE_BASE: Final = 32
FD_RESERVE_PER_SESSION: Final = 3  # upstream socket, event log file, a WAV being written
ACCEPT_BACKLOG: Final = 128


def raise_nofile_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, hard
    return hard, hard


def connection_cap(max_connections: int, nofile: int, max_sessions: int, backlog: int = ACCEPT_BACKLOG) -> int:
    """max_connections, lowered so that a full house of sockets still leaves descriptors for the sessions' files
    and for one burst of accepts (asyncio accepts up to `backlog` sockets before the first one is counted)."""
    if nofile == resource.RLIM_INFINITY or nofile <= 0:
        return max_connections
    # Each live session holds a few descriptors besides its client socket; no more sessions than descriptors
    # can exist, so a huge max_sessions does not reserve the whole table.
    sessions = min(max_sessions, max(0, nofile - FD_RESERVE_BASE) // (FD_RESERVE_PER_SESSION + 1))
    reserve = FD_RESERVE_BASE + FD_RESERVE_PER_SESSION * sessions + backlog
    return max(1, min(max_connections, nofile - reserve))


class ConnectionGate:
    """Counts live connections and says what happens to new ones."""

    def __init__(self, max_connections: int, header_timeout: float, on_closed: Callable[[str], None]) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.on_closed = on_closed
        self.active = 0

    def wrap(
        self, factory: Callable[[], asyncio.BaseProtocol], tls: ssl.SSLContext | None = None
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(factory, self, tls)


class GuardedProtocol(asyncio.Protocol):
    """Delegates to the real protocol (made only for admitted connections) and enforces the gate's bounds."""

    def __init__(
        self, factory: Callable[[], asyncio.BaseProtocol], gate: ConnectionGate, tls: ssl.SSLContext | None = None
    ) -> None:
        self._factory = factory
        self._gate = gate
        self._tls = tls
        self._admitted = False  # counted in gate.active until connection_lost
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen while the first request head is incomplete
        self._handshake: asyncio.Task[None] | None = None
        # Decrypted bytes (or an EOF, as None) that asyncio delivers when a TLS handshake completes, before the
        # handshake task has resumed and made the real protocol; handed to it in order.
        self._early: list[bytes | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, asyncio's or another loop's (uvloop's do not subclass asyncio's classes): typed as
        # one, never tested with isinstance.
        transport = cast(asyncio.Transport, transport)
        gate = self._gate
        if gate.active >= gate.max_connections:
            gate.on_closed(REASON_MAX_CONNECTIONS)
            transport.abort()
            return
        gate.active += 1
        self._admitted = True
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(gate.header_timeout, self._head_too_slow)
        if self._tls is None:
            self._start(transport)
        else:
            # The handshake happens after the socket is counted, so one still in its handshake holds a slot.
            transport.pause_reading()  # start_tls resumes reading once its TLS layer is in place
            self._handshake = asyncio.create_task(self._start_tls(transport, self._tls))

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The header deadline (already running) bounds the handshake too; asyncio needs a timeout of its own.
            secured = await loop.start_tls(
                transport, self, tls, server_side=True, ssl_handshake_timeout=self._gate.header_timeout
            )
        except asyncio.CancelledError:
            return  # the connection was lost first; its slot is already released
        except Exception:  # a failed or timed-out handshake: start_tls has closed the socket, and anything else
            transport.abort()  # ends the connection too; connection_lost releases the slot
            return
        if secured is None or not self._admitted:  # lost while the task resumed
            if secured is not None:
                secured.abort()
            return
        self._transport = secured
        self._start(secured)
        early, self._early = self._early, []
        for data in early:
            if data is None:
                if not self._inner.eof_received():
                    secured.close()
            else:
                self.data_received(data)

    def _start(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._gate.on_closed(REASON_HEADER_TIMEOUT)
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            if HEAD_END in seen:
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._admitted:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return bool(self._inner.eof_received())
        if self._admitted:
            self._early.append(None)
            return True  # kept open until the real protocol has seen the data and this EOF
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return  # refused at the door: never counted, no protocol behind it
        self._admitted = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._gate.active -= 1
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


async def start_listener(
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    gate: ConnectionGate,
    *,
    backlog: int = ACCEPT_BACKLOG,
    tls: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Listen on host:port with `factory` behind `gate` (the caller closes the server). With `tls`, the gate
    counts a connection when it is accepted and runs its TLS handshake itself (asyncio's `loop.start_tls`), inside
    the request head's deadline."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(gate.wrap(factory, tls), host, port, reuse_address=True, backlog=backlog)


class AcceptErrorLimiter:
    """A loop exception handler: accept failures (EMFILE and kin) are logged at most once a second, the rest
    go to the previous handler unchanged."""

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None) -> None:
        self._previous = previous
        self._last = -1e9
        self.suppressed = 0  # failures since the last line
        self.logged = 0  # lines written

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("socket.accept() out of system resource"):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._last < 1.0:
            self.suppressed += 1
            return
        self._last = now
        self.logged += 1
        exc = context.get("exception")
        log.error(
            "relay.accept_failed",
            error=f"{exc.__class__.__name__}: {exc}" if exc is not None else message,
            suppressed=self.suppressed,
            detail="the process is out of file descriptors; accepting resumes in a second",
        )
        self.suppressed = 0

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> AcceptErrorLimiter:
        limiter = cls(loop.get_exception_handler())
        loop.set_exception_handler(limiter)
        return limiter
