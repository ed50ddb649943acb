"""relay.links.wsframe: the text frames the relay writes straight into a client's socket, read back by a real
RFC 6455 parser (websockets' sans-I/O `ClientProtocol`, the client's side of the connection) at every boundary of
the length encoding (7-bit, 16-bit, 64-bit)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from relay.links.wsframe import text_frame


def client_reads(data: bytes, *, chunk: int | None = None) -> list[Frame]:
    """What a WebSocket client parses out of `data`, fed whole or `chunk` bytes at a time."""
    protocol = ClientProtocol(parse_uri("ws://relay.test/v1/realtime"), state=State.OPEN, max_size=None)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        protocol.receive_data(data[start : start + step])
    assert protocol.parser_exc is None, protocol.parser_exc
    assert protocol.state is State.OPEN  # nothing the client had to refuse (a masked or malformed frame closes)
    assert protocol.data_to_send() == []  # and nothing it had to answer (a close or a pong)
    return [event for event in protocol.events_received() if isinstance(event, Frame)]


# Each length encoding's first and last size, and the sizes around each switch.
@pytest.mark.parametrize(
    ("size", "header_len"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (65537, 10), (1 << 20, 10)],
)
def test_every_length_encoding_boundary_parses_as_one_final_text_frame(size: int, header_len: int) -> None:
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    frame = text_frame(payload)
    assert len(frame) == header_len + size  # the shortest length encoding, as RFC 6455 section 5.2 requires
    (parsed,) = client_reads(frame)
    assert parsed.opcode is Opcode.TEXT and parsed.fin
    assert parsed.data == payload
    assert not (frame[1] & 0x80)  # a server never masks
    assert frame[0] == 0x81  # FIN, no RSV bits (no extension is negotiated), opcode text


def test_the_length_is_in_network_byte_order() -> None:
    assert text_frame(b"x" * 300)[:4] == b"\x81\x7e\x01\x2c"
    assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


def test_frames_back_to_back_and_split_anywhere_parse_in_order() -> None:
    payloads = [b"", "ünïcødé ☃".encode(), b"a" * 126, b"b" * 65536, b'{"type":"response.done"}']
    stream = b"".join(text_frame(p) for p in payloads)
    for chunk in (1, 3, 125, 4096):
        assert [f.data for f in client_reads(stream, chunk=chunk)] == payloads


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
def test_any_text_round_trips(text: str) -> None:
    payload = text.encode()
    (parsed,) = client_reads(text_frame(payload))
    assert parsed.data == payload
