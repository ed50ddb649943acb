"""The upstream adapter: one WebSocket client connection per session, on websockets' sans-I/O `ClientProtocol`
driven by the relay's own `asyncio.Protocol` (the integration websockets documents in its sans-I/O guide).

Owns only socket I/O and the mapping of failures onto `UpstreamUnavailable` (handshake) and `UpstreamDisconnected`
(mid-session drop). websockets' protocol object parses and builds every frame, answers pings and runs the close
handshake; this module moves bytes between it and the transport. Each whole message is handed to the consumer from
the transport's read callback and each sent frame is written at once, so a frame crosses without a task wake-up
(see docs/performance.md). No message size cap (a retrieved item may carry minutes of audio) and no keepalive pings
(Yandex was seen not to answer them in time). Also builds the upstream URL from the configured one and the client's
query (`upstream_url`), which is pure."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri
from websockets.version import version as websockets_version

from relay.errors import UpstreamDisconnected, UpstreamUnavailable
from relay.links.writebatch import WriteBatch, WriteScope

CLOSE_TIMEOUT_S: Final = 1.0  # after a close frame went out, how long the upstream has to close TCP
_USER_AGENT: Final = f"realtime-relay websockets/{websockets_version}"


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


class _LinkProtocol(asyncio.Protocol):
    """The transport's side of one upstream connection: feeds what is read to websockets' `ClientProtocol`, writes
    what it produces, and hands each whole data message to `deliver` from inside `data_received`. Messages that
    arrive before `deliver` is set (even in the handshake answer's own read) are held, in order."""

    def __init__(self, protocol: ClientProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.protocol = protocol
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[Response | None] = loop.create_future()  # None: the handshake failed
        self.closed: asyncio.Future[None] = loop.create_future()
        self.deliver: Callable[[str | bytes], None] | None = None
        self.on_close_frame: Callable[[], None] | None = None
        self.held: list[str | bytes] = []  # messages read before `attach`, in order
        self.accepting = True  # False once detached or failed: later messages are read and dropped
        self.delivery_error: BaseException | None = None
        self._parts: list[bytes | bytearray | memoryview] = []
        self._text = False
        self._close_deadline: asyncio.TimerHandle | None = None
        self.batch = WriteBatch(None)  # data frames of the current loop iteration, written together after it

    # -- asyncio.Protocol ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.batch = WriteBatch(self.transport)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        # Automatic answers (pongs, the echo of a close frame) go out before any message is handed over, so a frame
        # the consumer sends in response lands after them (and is dropped once the close was answered).
        self.flush()
        with WriteScope():  # what the messages of this read make the relay send goes out when the read is handled
            for event in events:
                if isinstance(event, Frame):
                    if not self._frame(event):
                        break  # the connection failed on this frame: nothing after it is processed (RFC 6455 7.1.7)
                elif isinstance(event, Response) and not self.handshake.done():
                    self.handshake.set_result(event if protocol.handshake_exc is None else None)
        if not self.handshake.done() and protocol.handshake_exc is not None:
            self.handshake.set_result(None)

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self.flush()
        if not self.handshake.done():
            self.handshake.set_result(None)
        return None  # the transport closes itself: nothing is written after a close handshake

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent; the protocol's state becomes CLOSED
        if self._close_deadline is not None:
            self._close_deadline.cancel()
        if not self.handshake.done():
            self.handshake.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the protocol's output ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the protocol produced; an empty chunk means "end of stream" (half-close when possible)."""
        transport = self.transport
        if transport is None:
            return
        self.batch.write()  # data frames sent before a pong or a close frame go out before it
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write_eof()
            else:
                transport.close()
        if self._close_deadline is None and self.protocol.close_expected():
            # A close frame went out (ours, or the echo of the upstream's), or the handshake failed: an upstream
            # that never closes TCP after that is let go of.
            self._close_deadline = self.loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

    # -- messages -----------------------------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> bool:
        """Handle one frame; False when it failed the connection."""
        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            if self.on_close_frame is not None:
                self.on_close_frame()  # after every data frame that came before it, even from the same read
            return True
        if opcode is Opcode.PING or opcode is Opcode.PONG or not self.accepting:
            return True
        if opcode is not Opcode.CONT:
            self._text = opcode is Opcode.TEXT
            self._parts.clear()
        self._parts.append(frame.data)
        if not frame.fin:
            return True
        parts = self._parts
        payload = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        parts.clear()
        message: str | bytes = payload
        if self._text:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                self.flush()
                # What came before the bad frame (still held, if not attached yet) stays.
                self.accepting = False
                return False
        if self.deliver is not None:
            self._hand_over(message)
        else:
            self.held.append(message)
        return True

    def _hand_over(self, message: str | bytes) -> None:
        deliver = self.deliver
        if deliver is None:  # detached, or the consumer failed on an earlier message
            return
        try:
            deliver(message)
        except BaseException as exc:  # the consumer failed: remember why, stop reading, let wait_closed raise it
            self.delivery_error = exc
            self.detach()
            self.abort()

    def attach(self, deliver: Callable[[str | bytes], None]) -> None:
        held, self.held = self.held, []
        self.deliver = deliver
        for message in held:
            self._hand_over(message)

    def detach(self) -> None:
        self.deliver = None
        self.held = []
        self.accepting = False

    def abort(self) -> None:
        self.batch.clear()
        if self.transport is not None:
            self.transport.abort()


def _unreachable(exc: BaseException) -> UpstreamUnavailable:
    """The one wording of "could not get a connection", naming the cause."""
    return UpstreamUnavailable(f"upstream unreachable: {exc.__class__.__name__}: {exc}")


def _handshake_failure(protocol: ClientProtocol) -> UpstreamUnavailable:
    exc = protocol.handshake_exc
    if isinstance(exc, InvalidStatus):
        response = exc.response
        return UpstreamUnavailable(
            f"upstream refused the handshake: HTTP {response.status_code} {response.reason_phrase}",
            status=response.status_code,
        )
    if exc is None:
        return UpstreamUnavailable("upstream unreachable: the connection closed during the handshake")
    return _unreachable(exc)


class UpstreamLink:
    """A connected upstream socket. Messages reach the consumer set by `attach`, from the read callback; `send`
    writes at once (the transport's buffer is the only queue, bounded by `backlog_limit`); `wait_closed`
    returns after a normal close and raises `UpstreamDisconnected` after any other end."""

    def __init__(self, link: _LinkProtocol, connect_seconds: float, backlog_limit: int) -> None:
        self._link = link
        self._protocol = link.protocol
        transport = link.transport
        assert transport is not None
        self._transport = transport
        self.connect_seconds = connect_seconds
        self.backlog_limit = backlog_limit

    @classmethod
    async def connect(
        cls, url: str, headers: Mapping[str, str], *, open_timeout: float, backlog_limit: int
    ) -> UpstreamLink:
        started = time.monotonic()
        try:
            uri = parse_uri(url)
            protocol = ClientProtocol(uri, max_size=None)  # no extensions offered, no size cap
            request = protocol.connect()
            request.headers["User-Agent"] = _USER_AGENT
            for name, value in headers.items():
                request.headers[name] = value
            protocol.send_request(request)
        except (InvalidURI, InvalidHandshake, ValueError) as exc:  # a URL or header that cannot make a request
            raise _unreachable(exc) from None
        loop = asyncio.get_running_loop()
        link = _LinkProtocol(protocol, loop)
        tls = ssl.create_default_context() if uri.secure else None
        try:
            async with asyncio.timeout(open_timeout):
                await loop.create_connection(
                    lambda: link, uri.host, uri.port, ssl=tls, server_hostname=uri.host if tls is not None else None
                )
                link.flush()
                response = await link.handshake
        except TimeoutError:
            link.abort()
            raise UpstreamUnavailable(f"upstream did not answer within {open_timeout:g} s") from None
        except OSError as exc:
            link.abort()
            raise _unreachable(exc) from None
        except asyncio.CancelledError:  # the session ended while connecting: leave no socket behind
            link.abort()
            raise
        if response is None or protocol.handshake_exc is not None:
            link.abort()
            raise _handshake_failure(protocol)
        return cls(link, time.monotonic() - started, backlog_limit)

    def attach(self, deliver: Callable[[str | bytes], None], on_close_frame: Callable[[], None] | None = None) -> None:
        """Start handing messages to `deliver` (held ones first, in order); `on_close_frame` is called once the
        upstream's close frame has been read (the link is ending; `wait_closed` tells how). An exception from
        `deliver` ends the link."""
        self._link.on_close_frame = on_close_frame
        self._link.attach(deliver)

    def detach(self) -> None:
        """Stop handing messages over; later ones are read (so the close handshake can finish) and dropped."""
        self._link.detach()

    def send(self, text: str) -> None:
        """Write one text frame now. Once the upstream has sent its close frame the frame is dropped: the upstream
        ends the session and `wait_closed` says how (a normal close stays normal however many client frames were
        still on their way). Raises UpstreamDisconnected when the link ended otherwise, or when the upstream has
        stopped reading (more than `backlog_limit` bytes wait for it)."""
        protocol = self._protocol
        transport = self._transport
        if protocol.state is not State.OPEN or transport.is_closing():
            if protocol.close_rcvd is not None:
                return
            raise self._disconnected()
        protocol.send_text(text.encode())
        link = self._link
        batch = link.batch
        for data in protocol.data_to_send():
            batch.add(data)
        if batch.size > self.backlog_limit:
            batch.write()  # too much to hold back: the kernel's buffers take it now, or the check below fails
        if transport.get_write_buffer_size() > self.backlog_limit:
            link.abort()
            raise UpstreamDisconnected(f"upstream stopped reading (over {self.backlog_limit} bytes waiting for it)")

    async def wait_closed(self) -> None:
        """Wait for the end of the connection: returns after a close 1000 from the upstream (only 1000 is a normal
        close; 1001 "going away" is a disconnect); raises what the consumer raised, or UpstreamDisconnected."""
        link = self._link
        await asyncio.shield(link.closed)
        if link.delivery_error is not None:
            raise link.delivery_error
        received = self._protocol.close_rcvd
        if received is not None and received.code == 1000:
            return
        raise self._disconnected()

    def _disconnected(self) -> UpstreamDisconnected:
        received: Close | None = self._protocol.close_rcvd
        if received is None:
            return UpstreamDisconnected("upstream dropped the connection (no close frame)", code=1006)
        return UpstreamDisconnected(f"upstream dropped the connection ({received.code})", code=received.code)

    @property
    def close_code(self) -> int | None:
        return self._protocol.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (when the link is still open) and wait for the end of the connection, which the close
        timeout bounds."""
        protocol = self._protocol
        if protocol.state is State.OPEN and not self._transport.is_closing():
            protocol.send_close(code, reason)
            self._link.flush()  # what was sent before the close frame goes first
        await asyncio.shield(self._link.closed)

    def abort(self) -> None:
        self._link.abort()
