"""relay.links.wsframe: the text frames the relay writes straight into a client's socket, and the masked frames of
a burst it writes to the upstream, read back by a real RFC 6455 parser (websockets' sans-I/O `ClientProtocol` and
`ServerProtocol`, the other side of each connection) at every boundary of the length encoding (7-bit, 16-bit,
64-bit); the native masked writer gives the Python version's bytes, and refuses what is not a burst clearly."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from relay.links import wsframe
from relay.links.wsframe import masked_text_frames, masked_text_frames_python, text_frame


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


# ---- a burst of masked frames for the upstream (`masked_text_frames`) --------------------------------------------


def server_reads(data: bytes, *, chunk: int | None = None) -> list[Frame]:
    """What a WebSocket server parses out of `data`: it refuses an unmasked frame, and unmasks the rest."""
    protocol = ServerProtocol(state=State.OPEN, max_size=None)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        protocol.receive_data(data[start : start + step])
    assert protocol.parser_exc is None, protocol.parser_exc
    assert protocol.state is State.OPEN
    assert protocol.data_to_send() == []
    return [event for event in protocol.events_received() if isinstance(event, Frame)]


BOUNDARY_SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 125, 126, 127, 65535, 65536, 65537]
BUILDERS = [masked_text_frames, masked_text_frames_python]


def test_the_native_masked_writer_is_built_wherever_the_record_writer_is() -> None:
    from relay.eventlog.records import native_audio_record

    assert (wsframe.native_masked_text_frames is None) == (native_audio_record is None)


@pytest.mark.parametrize("build", BUILDERS)
def test_a_burst_at_every_length_boundary_is_read_back_unmasked_in_order(build: Any) -> None:
    payloads = [(b"0123456789abcdef" * (size // 16 + 1))[:size] for size in BOUNDARY_SIZES]
    keys = os.urandom(4 * len(payloads))
    stream = build(payloads, keys)
    assert len(stream) == sum(len(p) + (2 if len(p) < 126 else 4 if len(p) < 65536 else 10) + 4 for p in payloads)
    for chunk in (None, 1, 7, 4096):
        parsed = server_reads(stream, chunk=chunk)
        assert [f.data for f in parsed] == payloads
        assert all(f.opcode is Opcode.TEXT and f.fin for f in parsed)


@pytest.mark.parametrize("build", BUILDERS)
def test_each_frame_carries_its_own_key_and_a_payload_changed_by_it(build: Any) -> None:
    payloads = [b"x" * 200, b"x" * 200]
    keys = bytes(range(1, 9))
    stream = build(payloads, keys)
    first, second = stream[:208], stream[208:]
    assert first[:4] == b"\x81\xfe\x00\xc8" and first[4:8] == keys[:4]  # FIN + text, MASK bit + 16-bit length
    assert second[4:8] == keys[4:]
    assert first[8:] != payloads[0] and first[8:] != second[8:]  # masked, each with its key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.data())
def test_the_native_masked_writer_gives_the_python_versions_bytes(payloads: list[bytes], data: st.DataObject) -> None:
    keys = data.draw(st.binary(min_size=4 * len(payloads), max_size=4 * len(payloads)))
    expected = masked_text_frames_python(payloads, keys)
    assert masked_text_frames(payloads, keys) == expected
    assert [f.data for f in server_reads(expected)] == payloads


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize(
    ("payloads", "keys", "error"),
    [
        ([b"a"], b"123", ValueError),  # a key short
        ([b"a"], b"12345", ValueError),
        ([], b"1234", ValueError),
        (["text, not bytes"], b"1234", TypeError),
        ([b"a", bytearray(b"b")], b"12345678", TypeError),
        ([None], b"1234", TypeError),
    ],
)
def test_what_is_not_a_burst_is_a_clear_error(build: Any, payloads: Any, keys: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        build(payloads, keys)


def test_the_native_writer_takes_only_a_list_and_bytes_like_keys() -> None:
    native = wsframe.native_masked_text_frames
    if native is None:
        pytest.skip("built without a C compiler: the Python version writes every burst")
    for payloads, keys in (((b"a",), b"1234"), ([b"a"], "1234"), ([b"a"], None), (None, b"")):
        with pytest.raises(TypeError):
            native(payloads, keys)  # type: ignore[arg-type]
    assert native([b"a"], memoryview(b"1234"))  # type: ignore[arg-type] == masked_text_frames_python([b"a"], b"1234")
