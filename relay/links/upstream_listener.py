"""The picows side of one upstream connection: what the link does with each frame picows reads.

Boundary: `UpstreamListener` receives every frame from picows' read callback and owns the connection's protocol state:
it answers pings, assembles fragmented messages, checks what picows leaves to its user (reserved bits, continuation
order, UTF-8, close codes that may not appear on the wire), runs the close handshake and its timeout, and hands
each whole message to the consumer (or holds it until there is one). The frames of one read form one write burst
(`relay.links.writebatch.WriteScope`). `relay.links.upstream` opens the connection and is the link's API; no I/O
here beyond picows' `WSTransport`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from relay.links.writebatch import WriteScope

CLOSE_TIMEOUT_S: Final = 1.0  # after a close frame went out, how long the upstream has to close TCP
# Close codes an endpoint must never put in a close frame (RFC 6455 7.4.1): they only describe an end locally.
_LOCAL_ONLY_CLOSE_CODES: Final = frozenset({1005, 1006, 1015})
_NO_CODE: Final = 1005  # a close frame without a status code
DROPPED: Final = 1006  # the connection ended without a close frame


class UpstreamListener(WSListener):
    """picows' side of one upstream connection: assembles each whole data message and hands it to `deliver` from
    inside the read callback. Messages that arrive before `deliver` is set (even in the handshake answer's own read)
    are held, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: WSTransport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()  # the TCP connection is gone
        # How the connection ends is known: the upstream's close frame was read, the link failed the connection,
        # or TCP is gone. Often well before `closed`: an upstream may hold TCP for the close timeout after it.
        self.ended: asyncio.Future[None] = loop.create_future()
        self.deliver: Callable[[str | bytes], None] | None = None
        self.on_close_frame: Callable[[], None] | None = None
        self.held: list[str | bytes] = []  # messages read before `attach`, in order
        self.accepting = True  # False once detached or failed: later messages are read and dropped
        self.failed = False  # the link failed the connection: nothing more from the upstream is processed
        self.aborted = False  # the link dropped the connection itself; picows reports it a loop turn later
        self.delivery_error: BaseException | None = None
        self._ended: asyncio.Task[None] | None = None  # held so the task is not collected while it waits
        self.close_received: int | None = None  # the upstream's close code (1005: a close frame without one)
        # The relay sent a close frame itself (its answer to the upstream's, a failure it found, the session's end).
        # A close frame sent without it is picows' own: its parser met a frame that breaks the protocol.
        self.close_sent = False
        self._parts: list[bytes] = []
        self._text = False
        self._close_deadline: asyncio.TimerHandle | None = None
        self._read: WriteScope | None = None  # open from the first frame of a read to its last
        # A close frame had gone out when the previous frame was handed over: every later data frame is dropped.
        self._close_seen = False

    # -- picows callbacks -------------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        # picows keeps what ended the connection (its parser's protocol error) for `wait_disconnected`, and asyncio
        # logs an error for it if nobody ever asks: asked here, once per connection.
        self._ended = self.loop.create_task(self._wait_disconnected(transport))

    @staticmethod
    async def _wait_disconnected(transport: WSTransport) -> None:
        with contextlib.suppress(Exception):  # the link reports the end through `wait_closed`
            await transport.wait_disconnected()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # What the messages of one read make the relay send goes out when the read is handled (one burst).
        read = self._read
        if read is None:
            read = self._read = WriteScope()
            read.enter()
        try:
            self._frame(transport, frame)
        finally:
            self._close_seen = transport.is_close_frame_sent
            if frame.last_in_buffer:
                self._read = None
                read.exit()

    def _frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.failed:
            return
        msg_type = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:  # no extension is ever negotiated
            self.fail(WSCloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
            return
        if msg_type is WSMsgType.CLOSE:
            self._on_close(transport, frame)
            return
        if msg_type is WSMsgType.PING:
            # Answered here, not by picows' automatic pong: that one never reaches `on_ws_frame`, and the read's
            # write scope closes at the frame picows marks as the last of the read, which may be a ping.
            transport.send_pong(frame.get_payload_as_bytes())
            return
        if msg_type is WSMsgType.PONG:
            return
        if self.close_received is not None or self.close_sent or self._close_seen:
            # The close handshake has begun: data frames have nowhere to go. When picows' parser meets a frame
            # that breaks the protocol it sends its close frame first and then hands over the one frame it had
            # read ahead of the bad one: that frame is delivered (no close had gone out when the frame before it
            # was handed over); nothing after it is.
            return
        parts = self._parts
        if msg_type is WSMsgType.CONTINUATION:
            if not parts:
                self.fail(WSCloseCode.PROTOCOL_ERROR, "a continuation frame without a message to continue")
                return
        elif parts:
            self.fail(WSCloseCode.PROTOCOL_ERROR, "a new message inside a fragmented one")
            return
        elif frame.fin:  # the common case: a whole message in one frame
            if msg_type is WSMsgType.TEXT:
                try:
                    message: str | bytes = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self.fail(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in a text frame")
                    return
            else:
                message = frame.get_payload_as_bytes()
            self._message(message)
            return
        else:
            self._text = msg_type is WSMsgType.TEXT
        parts.append(frame.get_payload_as_bytes())  # an empty first fragment still makes `parts` non-empty
        if not frame.fin:
            return
        payload = b"".join(parts)
        parts.clear()
        if self._text:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                self.fail(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in a text frame")
                return
        else:
            message = payload
        self._message(message)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._read is not None:  # picows marks the last frame of every read; this is only a safety net
            read, self._read = self._read, None
            read.exit()
        if self._close_deadline is not None:
            self._close_deadline.cancel()
        self.accepting = False
        self._end()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the close handshake ----------------------------------------------------------------------------------

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        code = close_number(frame.get_close_code()) if frame.payload_size >= 2 else _NO_CODE
        if code in _LOCAL_ONLY_CLOSE_CODES and frame.payload_size >= 2:
            self.fail(WSCloseCode.PROTOCOL_ERROR, f"close code {code} on the wire")
            return
        self.close_received = code
        if not transport.is_close_frame_sent:
            # The echo of the upstream's close frame (a frame without a code is answered with 1000).
            self.close_sent = True
            transport.send_close(as_close_code(1000 if code == _NO_CODE else code))
        self.expect_tcp_close()
        if self.on_close_frame is not None:
            self.on_close_frame()  # after every data frame that came before it, even from the same read
        self._end()

    def fail(self, code: WSCloseCode, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): send a close frame with `code`, process nothing more."""
        self.failed = True
        self.accepting = False
        self._parts.clear()
        transport = self.transport
        if transport is not None and not transport.is_disconnected and not transport.is_close_frame_sent:
            self.close_sent = True
            transport.send_close(code, reason.encode())
            self.expect_tcp_close()
        self._end()

    def protocol_failure(self) -> tuple[int, str] | None:
        """(code, reason) of the close frame that failed the connection because the upstream broke the protocol
        (the link's own check, or picows' parser); None when nothing did."""
        handshake = self.transport.close_handshake if self.transport is not None else None
        sent = handshake.sent if handshake is not None else None
        if sent is None or (self.close_sent and not self.failed):  # none, or the relay's own echo or end
            return None
        return close_number(sent.code), sent.reason or ""

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def expect_tcp_close(self) -> None:
        """A close frame went out: an upstream that never closes TCP after it is let go of after the close timeout."""
        if self._close_deadline is None and self.transport is not None:
            self._close_deadline = self.loop.call_later(CLOSE_TIMEOUT_S, self.abort)

    # -- messages -------------------------------------------------------------------------------------------

    def _message(self, message: str | bytes) -> None:
        if not self.accepting:
            return
        deliver = self.deliver
        if deliver is None:
            self.held.append(message)
            return
        try:  # `_hand_over`, without a second call per message
            deliver(message)
        except BaseException as exc:
            self._delivery_failed(exc)

    def _hand_over(self, message: str | bytes) -> None:
        deliver = self.deliver
        if deliver is None:  # detached, or the consumer failed on an earlier message
            return
        try:
            deliver(message)
        except BaseException as exc:
            self._delivery_failed(exc)

    def _delivery_failed(self, exc: BaseException) -> None:
        """The consumer failed: remember why, stop reading, let wait_closed raise it."""
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
        self.aborted = True
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


def close_number(code: WSCloseCode | int) -> int:
    """A close code as a plain int (picows gives its enum for the codes it names, an int for the others)."""
    return int(code.value) if isinstance(code, WSCloseCode) else int(code)


def as_close_code(code: int) -> WSCloseCode:
    """picows types close codes as its enum; an application code (3000-4999) is passed through as it came."""
    try:
        return WSCloseCode(code)
    except ValueError:
        return code  # type: ignore[return-value]  # picows writes any int it is given
