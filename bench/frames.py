"""The least of RFC 6455 the benchmark's own peers need: handshakes and frame encoding/decoding. Pure, no I/O.

The echo upstream and the load generator are written against asyncio protocols with this module rather than a
WebSocket library so that they cost a small fraction of what the relay under test costs (they share one core).
Supported: text, binary, close, ping and pong frames, payloads of any length, masked or not; continuation frames
are reassembled. Not supported (never sent by aiohttp or websockets on loopback without extensions): extensions.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Final

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
MAX_HEADER_BYTES: Final = 16384


class ProtocolError(Exception):
    """The peer sent something that is not a WebSocket frame or handshake this module understands."""


def accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def client_handshake(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """(request bytes, expected Sec-WebSocket-Accept value)."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: relay-bench\r\n\r\n"
    ).encode()
    return request, accept_value(key)


def parse_headers(head: bytes) -> tuple[str, dict[str, str]]:
    """(first line, lower-cased header names -> values) of an HTTP head without its final blank line."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # latin-1 decodes everything; kept for the type checker's sake
        raise ProtocolError("undecodable HTTP head") from exc
    lines = text.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def check_client_response(head: bytes, expected_accept: bytes) -> None:
    status, headers = parse_headers(head)
    if not status.startswith("HTTP/1.1 101"):
        raise ProtocolError(f"handshake refused: {status[:120]!r}")
    if headers.get("sec-websocket-accept", "").encode() != expected_accept:
        raise ProtocolError("bad Sec-WebSocket-Accept")


def server_response(request_head: bytes) -> bytes:
    """The 101 answer to a client's upgrade request (raises ProtocolError when it is not one)."""
    request_line, headers = parse_headers(request_head)
    if not request_line.startswith("GET ") or headers.get("upgrade", "").lower() != "websocket":
        raise ProtocolError(f"not a WebSocket upgrade: {request_line[:120]!r}")
    key = headers.get("sec-websocket-key")
    if not key:
        raise ProtocolError("no Sec-WebSocket-Key")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + accept_value(key.encode())
        + b"\r\n\r\n"
    )


def encode_frame(payload: bytes, opcode: int = OP_TEXT, *, masked: bool = False) -> bytes:
    """One final frame. A client must mask; the benchmark's client masks with the all-zero key (RFC-legal,
    and what the payload then looks like on the wire is the payload), so frames can be built once and reused."""
    n = len(payload)
    first = bytes((0x80 | opcode,))
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = first + bytes((mask_bit | n,))
    elif n < 1 << 16:
        header = first + bytes((mask_bit | 126,)) + n.to_bytes(2, "big")
    else:
        header = first + bytes((mask_bit | 127,)) + n.to_bytes(8, "big")
    if masked:
        header += b"\x00\x00\x00\x00"
    return header + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    if key == b"\x00\x00\x00\x00" or not payload:
        return payload
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    # One big-integer XOR runs in C: far cheaper than a Python loop over the bytes.
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes


class FrameReader:
    """Incremental decoder: `feed(data)` returns the complete messages (continuations joined) it now holds."""

    def __init__(self, *, max_payload: int = 64 << 20) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            b0 = buffer[pos]
            b1 = buffer[pos + 1]
            if b0 & 0x70:
                raise ProtocolError("reserved bits set (no extension was negotiated)")
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                header = 10
            if length > self._max_payload:
                raise ProtocolError(f"frame of {length} bytes is over the limit")
            masked = b1 & 0x80
            key_at = pos + header
            if masked:
                header += 4
            if end - pos < header + length:
                break
            payload = bytes(buffer[pos + header : pos + header + length])
            if masked:
                payload = unmask(payload, bytes(buffer[key_at : key_at + 4]))
            pos += header + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_CONT:
                self._fragments.append(payload)
                if fin:
                    frames.append(Frame(self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif not fin and opcode in (OP_TEXT, OP_BINARY):
                self._fragment_opcode = opcode
                self._fragments = [payload]
            else:
                frames.append(Frame(opcode, payload))
        if pos:
            del buffer[:pos]
        return frames


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:120]
