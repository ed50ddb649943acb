"""The upstream adapter: one websockets client connection per session (CONTRACT C3).

Owns only socket I/O and the mapping of websockets' failures onto `UpstreamUnavailable` (handshake) and
`UpstreamDisconnected` (mid-session drop). websockets does the handshake, the reading and the close; each whole
message is handed to the consumer from the read callback, and text frames are built and written at once, so a
frame crosses without a task wake-up (measured by `make bench`; see the README's performance section). No message
size cap (a retrieved item may carry minutes of audio) and no keepalive pings (Yandex was seen not to answer them
in time). Also builds the upstream URL from the configured one and the client's query (`upstream_url`), which is
pure."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event, State
from websockets.version import version as websockets_version

from relay.errors import UpstreamDisconnected, UpstreamUnavailable
from relay.links.wsframe import text_frame

_DATA_OPCODES: Final = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})
_MASK_POOL_BYTES: Final = 4096


class _MaskKeys:
    """Masking keys for client frames (RFC 6455 5.3: unpredictable, from a strong source), drawn 4 bytes at a time
    from a pool of os.urandom bytes: one getrandom(2) per 1024 frames instead of one per frame (websockets' own
    send path), which cost ~3% of a core at 200 sessions (make bench)."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at + 4 > len(self._pool):
            self._pool, at = os.urandom(_MASK_POOL_BYTES), 0
        self._at = at + 4
        return self._pool[at : at + 4]


_MASK_KEYS = _MaskKeys()


def upstream_url(base: str, model: str | None, client_query: Iterable[tuple[str, str]] = (), forward: Iterable[str] = ()) -> str:
    """The configured URL keeps its own query; `model` is added or replaced; listed client params are added."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    allowed = set(forward) - {"model", "relay_events"}
    query += [(k, v) for k, v in client_query if k in allowed]
    if model:
        query.append(("model", model))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def redact_url(url: str) -> str:
    """The URL for logs: no userinfo, and every query value but `model` masked (an operator may put a secret there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, v if k == "model" else "****") for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*/:"), ""))


class _DeliveringConnection(ClientConnection):
    """websockets' client connection, except that each whole data message is handed to `deliver` from inside
    `data_received` instead of being queued for a `recv()` task: the bridge handles an upstream frame without a
    task wake-up (measured by `make bench`). Messages that arrive before `deliver` is set are held, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver: Callable[[str | bytes], None] | None = None
        self.on_close_frame: Callable[[], None] | None = None
        self.held: list[str | bytes] = []  # messages read before `attach`, in order
        self.accepting = True  # False once detached or failed: later messages are read and dropped
        self.delivery_error: BaseException | None = None
        self._parts: list[bytes] = []
        self._text = False
        self._close_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._close_deadline is None and self.protocol.close_expected():
            # A close frame went out (ours, or the echo of the upstream's): websockets enforces close_timeout only
            # inside its own send/recv/close calls, and the link makes none while it waits, so the deadline is
            # kept here (websockets' own data_received sets its deadline on the same condition). An upstream that
            # never closes TCP after the close frames is let go of.
            self._close_deadline = self.loop.call_later(self.close_timeout or 1.0, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_deadline is not None:
            self._close_deadline.cancel()
        super().connection_lost(exc)

    def process_event(self, event: Event) -> None:
        if not isinstance(event, Frame) or event.opcode not in _DATA_OPCODES:
            super().process_event(event)  # the handshake response, pings, pongs, close
            if isinstance(event, Frame) and event.opcode is Opcode.CLOSE and self.on_close_frame is not None:
                self.on_close_frame()  # after every data frame that came before it, even from the same read
            return
        if not self.accepting:
            return
        if event.opcode is not Opcode.CONT:
            self._text = event.opcode is Opcode.TEXT
            self._parts.clear()
        self._parts.append(bytes(event.data))
        if not event.fin:
            return
        payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        message: str | bytes = payload
        if self._text:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                self.send_data()
                # RFC 6455 7.1.7: nothing after the failure is processed, even from the same read; what came
                # before it (still held, if not attached yet) stays.
                self.accepting = False
                return
        if self.deliver is not None:
            self._hand_over(message)
        else:
            self.held.append(message)

    def _hand_over(self, message: str | bytes) -> None:
        deliver = self.deliver
        if deliver is None:  # detached, or the consumer failed on an earlier message
            return
        try:
            deliver(message)
        except BaseException as exc:  # the consumer failed: remember why, stop reading, let wait_closed raise it
            self.delivery_error = exc
            self.detach()
            self.transport.abort()

    def attach(self, deliver: Callable[[str | bytes], None]) -> None:
        held, self.held = self.held, []
        self.deliver = deliver
        for message in held:
            self._hand_over(message)

    def detach(self) -> None:
        self.deliver = None
        self.held = []
        self.accepting = False


class UpstreamLink:
    """A connected upstream socket. Messages reach the consumer set by `attach`, from the read callback; `send`
    writes at once (the transport's buffer is the only queue, bounded by `backlog_limit`); `wait_closed`
    returns after a normal close and raises `UpstreamDisconnected` after any other end."""

    def __init__(self, connection: _DeliveringConnection, connect_seconds: float, backlog_limit: int) -> None:
        self._connection = connection
        self.connect_seconds = connect_seconds
        self.backlog_limit = backlog_limit

    @classmethod
    async def connect(
        cls, url: str, headers: Mapping[str, str], *, open_timeout: float, backlog_limit: int
    ) -> UpstreamLink:
        started = time.monotonic()
        try:
            connection = await connect(
                url,
                additional_headers=dict(headers),
                max_size=None,
                ping_interval=None,
                compression=None,
                open_timeout=open_timeout,
                close_timeout=1.0,
                proxy=None,
                user_agent_header=f"realtime-relay websockets/{websockets_version}",
                create_connection=_DeliveringConnection,
            )
        except InvalidStatus as exc:
            response = exc.response
            raise UpstreamUnavailable(
                f"upstream refused the handshake: HTTP {response.status_code} {response.reason_phrase}",
                status=response.status_code,
            ) from None
        except TimeoutError:
            raise UpstreamUnavailable(f"upstream did not answer within {open_timeout:g} s") from None
        except (OSError, InvalidHandshake, asyncio.IncompleteReadError) as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {exc.__class__.__name__}: {exc}") from None
        assert isinstance(connection, _DeliveringConnection)
        return cls(connection, time.monotonic() - started, backlog_limit)

    def attach(self, deliver: Callable[[str | bytes], None], on_close_frame: Callable[[], None] | None = None) -> None:
        """Start handing messages to `deliver` (held ones first, in order); `on_close_frame` is called once the
        upstream's close frame has been read (the link is ending; `wait_closed` tells how). An exception from
        `deliver` ends the link."""
        self._connection.on_close_frame = on_close_frame
        self._connection.attach(deliver)

    def detach(self) -> None:
        """Stop handing messages over; later ones are read (so the close handshake can finish) and dropped."""
        self._connection.detach()

    def send(self, text: str) -> None:
        """Write one text frame now. Once the upstream has sent its close frame the frame is dropped: the upstream
        ends the session and `wait_closed` says how (a normal close stays normal however many client frames were
        still on their way). Raises UpstreamDisconnected when the link ended otherwise, or when the upstream has
        stopped reading (more than `backlog_limit` bytes wait for it)."""
        connection = self._connection
        protocol = connection.protocol
        if protocol.state is not State.OPEN or connection.transport.is_closing():
            if protocol.close_rcvd is not None:
                return
            raise self._disconnected()
        # The frame is built here rather than by websockets' protocol (no extensions are negotiated, frames are
        # never fragmented): its per-frame bookkeeping and a getrandom(2) per mask were measurable.
        transport = connection.transport
        transport.write(text_frame(text.encode(), _MASK_KEYS.next()))
        if transport.get_write_buffer_size() > self.backlog_limit:
            transport.abort()
            raise UpstreamDisconnected(f"upstream stopped reading (over {self.backlog_limit} bytes waiting for it)")

    async def wait_closed(self) -> None:
        """Wait for the end of the connection: returns after a close 1000 from the upstream (C4: only 1000 is a
        normal close; 1001 "going away" is a disconnect); raises what the consumer raised, or UpstreamDisconnected."""
        connection = self._connection
        await connection.wait_closed()
        if connection.delivery_error is not None:
            raise connection.delivery_error
        received = connection.protocol.close_rcvd
        if received is not None and received.code == 1000:
            return
        raise self._disconnected()

    def _disconnected(self) -> UpstreamDisconnected:
        received = self._connection.protocol.close_rcvd
        if received is None:
            return UpstreamDisconnected("upstream dropped the connection (no close frame)", code=1006)
        return UpstreamDisconnected(f"upstream dropped the connection ({received.code})", code=received.code)

    @property
    def close_code(self) -> int | None:
        return self._connection.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)

    def abort(self) -> None:
        self._connection.transport.abort()
