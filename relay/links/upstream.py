"""The upstream adapter: one WebSocket client connection per session, on picows (a Cython WebSocket client for
asyncio whose frame parser and masking run in C, driven through its documented `ws_connect` / `WSListener` /
`WSTransport` API).

Owns only socket I/O and the mapping of failures onto `UpstreamUnavailable` (handshake) and `UpstreamDisconnected`
(mid-session drop). picows parses and builds frames and checks control frames; this module answers pings,
assembles fragmented messages, checks what picows leaves to its user (reserved bits, continuation order, UTF-8,
close codes that may not appear on the wire) and runs the close handshake. Each whole message is handed to the
consumer from the transport's read callback, so a frame crosses without a task wake-up, and the frames sent in one
burst are masked into one buffer and written when it ends, in one write to picows' `underlying_transport` (see
docs/performance.md); picows writes every control frame. No message size
cap (a retrieved item may carry minutes of audio) and no keepalive pings (Yandex was seen not to answer them in
time). Also builds the upstream URL from the configured one and the client's query (`upstream_url`), which is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from importlib.metadata import version
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from picows import (
    WSError,
    WSHandshakeError,
    WSParsedURL,
    WSTransport,
    ws_connect,
)

from relay.errors import UpstreamDisconnected, UpstreamUnavailable
from relay.links.upstream_listener import DROPPED, UpstreamListener, as_close_code
from relay.links.writebatch import at_burst_end
from relay.links.wsframe import masked_text_frames
from relay.redact import redact_text

_USER_AGENT: Final = f"realtime-relay picows/{version('picows')}"
# picows logs each protocol failure it detects; the link reports them through `wait_closed`, so picows' own lines
# would say the same thing twice. Only its critical lines reach the relay's log.
_PICOWS_LOG: Final = logging.getLogger("relay.links.picows")
_PICOWS_LOG.setLevel(logging.CRITICAL)


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


class _Socket:
    """The connection's TCP socket, opened by the link through picows' documented `socket_factory` so the link holds
    it from the start: picows waits for the handshake answer behind a shield, so a connect that is cancelled (the
    client left) or times out would otherwise go on and open an upstream session nobody uses. `cut` resets it."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    async def open(self, url: WSParsedURL) -> socket.socket:
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for family, kind, proto, _, address in await loop.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except OSError as exc:  # the next address may answer
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return sock
        raise error if error is not None else OSError(f"no address for {url.host}")

    def cut(self) -> None:
        """Reset the connection: no linger, so closing sends RST (the upstream never completes the handshake), and
        the read side shut, so the transport that owns the socket sees the end and closes it."""
        sock = self.sock
        if sock is None:
            return
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)


_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: (.*))?")
_REASON_MAX_CHARS: Final = 120


def _refusal(raw_header: bytes | None) -> UpstreamUnavailable | None:
    """The refusal an answer other than 101 means, from its status line: the status and the reason the upstream
    gave, even where picows cannot name them (a proxy's 52x, an HTTP/1.0 answer, its own reason phrase). The
    standard phrase follows in parentheses when the upstream's differs from it. None for no status line or a 101."""
    match = _STATUS_LINE.fullmatch((raw_header or b"").split(b"\r\n", 1)[0])
    if match is None or int(match[1]) == 101:
        return None
    status = int(match[1])
    # It reaches the client's error message and the log: printable characters only, not too many, and no
    # credential (masked before the cut, so a cut cannot leave half of one unmasked).
    reason = "".join(c for c in (match[2] or b"").decode("latin-1") if c.isprintable())
    reason = redact_text(reason).strip()[:_REASON_MAX_CHARS]
    try:
        standard = HTTPStatus(status).phrase
    except ValueError:
        standard = ""
    if not reason or reason.lower() == standard.lower():
        said = standard
    else:
        said = f"{reason} ({standard})" if standard else reason
    return UpstreamUnavailable(f"upstream refused the handshake: HTTP {status} {said}".rstrip(), status=status)


def _unreachable(exc: BaseException) -> UpstreamUnavailable:
    """The one wording of "could not get a connection", naming the cause."""
    return UpstreamUnavailable(f"upstream unreachable: {exc.__class__.__name__}: {exc}")


class MaskKeys:
    """Random 4-byte masking keys (RFC 6455 asks a client for an unpredictable key per frame), drawn from
    os.urandom 1024 at a time: one getrandom(2) per 1024 frames, not one per burst (in real time a burst is one
    frame). One pool per process, not per link (4 KiB per idle session would be most of its memory); meant for the
    event loop's thread: links on loops in two threads at once could be handed the same keys, which only weakens
    what masking is for (keeping intermediaries from reading frames as HTTP), never what the frames carry."""

    POOL_KEYS: Final = 1024

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        """`count` keys, 4 bytes each, never handed out before."""
        size = 4 * count
        if self._at + size > len(self._pool):
            self._pool = os.urandom(4 * max(self.POOL_KEYS, count))
            self._at = 0
        keys = self._pool[self._at : self._at + size]
        self._at += size
        return keys


_MASK_KEYS: Final = MaskKeys()


class UpstreamLink:
    """A connected upstream socket. Messages reach the consumer set by `attach`, from the read callback; `send`
    writes when the current burst ends (the transport's buffer is the only queue, bounded by `backlog_limit`);
    `wait_closed` returns after a normal close and raises `UpstreamDisconnected` after any other end."""

    def __init__(self, transport: WSTransport, listener: UpstreamListener, connect_seconds: float, backlog_limit: int) -> None:
        self._transport = transport
        self._listener = listener
        self._socket = transport.underlying_transport
        self._held: list[bytes] = []  # frames of the current burst, written when it ends (`write`)
        self._held_bytes = 0
        self.connect_seconds = connect_seconds
        self.backlog_limit = backlog_limit

    @classmethod
    async def connect(
        cls, url: str, headers: Mapping[str, str], *, open_timeout: float, backlog_limit: int
    ) -> UpstreamLink:
        started = time.monotonic()
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
            extra = {"User-Agent": _USER_AGENT, **headers}
            for name, value in extra.items():
                if not name.isascii() or any(c in name for c in "\r\n:") or any(c in value for c in "\r\n"):
                    raise ValueError(f"header {name!r} cannot go on the wire")
        except ValueError as exc:
            raise _unreachable(exc) from None
        loop = asyncio.get_running_loop()
        listener = UpstreamListener(loop)
        own = _Socket()
        try:
            async with asyncio.timeout(open_timeout):
                transport, _ = await ws_connect(
                    lambda: listener,
                    url,
                    ssl_context=ssl.create_default_context() if parts.scheme == "wss" else None,
                    websocket_handshake_timeout=None,  # the whole connect is bounded by open_timeout
                    enable_auto_pong=False,  # pings are answered in `on_ws_frame`
                    max_frame_size=1 << 62,
                    extra_headers=extra,
                    max_redirects=0,
                    logger_name=_PICOWS_LOG,
                    socket_factory=own.open,
                )
        except TimeoutError:
            own.cut()
            raise UpstreamUnavailable(f"upstream did not answer within {open_timeout:g} s") from None
        except WSHandshakeError as exc:
            own.cut()
            raise _refusal(exc.raw_header) or _unreachable(exc) from None
        except (WSError, OSError, EOFError, ValueError) as exc:
            own.cut()
            raise _unreachable(exc) from None
        except asyncio.CancelledError:  # the session ended while connecting: leave no socket behind
            own.cut()
            raise
        response = transport.response
        if transport.is_disconnected or response is None:  # picows returns a dead transport for a cut-off answer
            listener.abort()
            raise UpstreamUnavailable("upstream unreachable: the connection closed during the handshake")
        for name in ("Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol"):
            if response.headers.get(name):  # the link offers neither: an upstream may not pick one
                listener.abort()
                raise UpstreamUnavailable(f"upstream unreachable: the handshake answer chose a {name} that was not offered")
        return cls(transport, listener, time.monotonic() - started, backlog_limit)

    def attach(self, deliver: Callable[[str | bytes], None], on_close_frame: Callable[[], None] | None = None) -> None:
        """Start handing messages to `deliver` (held ones first, in order); `on_close_frame` is called once the
        upstream's close frame has been read (the link is ending; `wait_closed` tells how). An exception from
        `deliver` ends the link."""
        self._listener.on_close_frame = on_close_frame
        self._listener.attach(deliver)

    def detach(self) -> None:
        """Stop handing messages over; later ones are read (so the close handshake can finish) and dropped."""
        self._listener.detach()

    def send(self, text: str) -> None:
        """Send one text frame: it goes out when the current burst ends (the read callback or loop iteration that
        sent it), with the burst's other frames. Once the upstream has sent its close frame the frame is dropped: the
        upstream ends the session and `wait_closed` says how (a normal close stays normal however many client
        frames were still on their way). Raises UpstreamDisconnected when the link ended otherwise, or when the
        upstream has stopped reading (more than `backlog_limit` bytes wait for it)."""
        if self._ended():
            if self._listener.close_received is not None:
                return
            raise self._disconnected()
        data = text.encode()
        held = self._held
        held.append(data)
        self._held_bytes += len(data)
        if len(held) == 1:
            at_burst_end(self.write)
        if self._held_bytes > self.backlog_limit:
            self.write()  # too much to hold back: the kernel's buffers take it now, or the check below fails
        if self._socket.get_write_buffer_size() > self.backlog_limit:
            self.abort()
            raise UpstreamDisconnected(f"upstream stopped reading (over {self.backlog_limit} bytes waiting for it)")

    def write(self) -> None:
        """The burst ended: its frames go out in one write (one send(2) for a flood's burst, not one per frame),
        each masked with its own random key. Written to the transport under picows, as picows writes its own
        frames, so they stay in order with its pings, pongs and close. Dropped when the link ended meanwhile (`send`
        said so for what it could)."""
        held = self._held
        if not held:
            return
        self._held = []
        self._held_bytes = 0
        if self._ended():
            return
        self._socket.write(masked_text_frames(held, _MASK_KEYS.take(len(held))))

    def _ended(self) -> bool:
        """No more data frames can go out: a close frame was sent, or the connection is gone or being dropped."""
        transport = self._transport
        return transport.is_close_frame_sent or transport.is_disconnected or self._listener.aborted

    async def wait_closed(self) -> None:
        """Wait for the end of the connection: returns after a close 1000 from the upstream (only 1000 is a normal
        close; 1001 "going away" is a disconnect); raises what the consumer raised, or UpstreamDisconnected.
        It returns as soon as the end is known (the upstream's close frame read, or the link failing the
        connection), not when TCP is gone: an upstream holding TCP open does not delay the session's end, and the
        close timeout still lets go of its connection."""
        listener = self._listener
        await asyncio.shield(listener.ended)
        if listener.delivery_error is not None:
            raise listener.delivery_error
        if listener.close_received == 1000 and not listener.failed:
            return
        raise self._disconnected()

    def _disconnected(self) -> UpstreamDisconnected:
        received = self._listener.close_received
        failure = self._listener.protocol_failure()
        if failure is not None:
            # The link (or picows' parser) failed the connection: say what the upstream sent that broke it. Its code
            # (1002, 1007) is the end's: a broken upstream is not a drop to resume (docs/resume.md), whether or not it
            # answered the close frame.
            code, reason = failure
            return UpstreamDisconnected(f"upstream broke the WebSocket protocol ({code}: {reason or 'no reason'})", code=code)
        if received is None:
            return UpstreamDisconnected("upstream dropped the connection (no close frame)", code=DROPPED)
        return UpstreamDisconnected(f"upstream dropped the connection ({received})", code=received)

    @property
    def close_code(self) -> int | None:
        """The upstream's close code once the connection has ended (1006 when it sent none); None before."""
        received = self._listener.close_received
        if received is not None:
            return received
        return DROPPED if self._listener.ended.done() else None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (when the link is still open) and wait for the end of the connection, which the close
        timeout bounds."""
        transport = self._transport
        if not transport.is_close_frame_sent and not transport.is_disconnected:
            self.write()  # what was sent before the close frame goes first
            self._listener.close_sent = True
            transport.send_close(as_close_code(code), reason.encode())
            self._listener.expect_tcp_close()
        await asyncio.shield(self._listener.closed)

    def abort(self) -> None:
        self._held = []
        self._held_bytes = 0
        self._listener.abort()
