"""The native flat audio record writer (relay/eventlog/_flatrecord.c): built wherever a C compiler is, and for any
event, any time and any frame size it writes exactly the line the Python builder writes, or hands the record back
to it (None); it never raises on what a client or an upstream sent."""

from __future__ import annotations

import math
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry
from relay.eventlog.records import RecordBuilder, native_audio_record

FORMATS = [None, AudioFormat(), AudioFormat("audio/pcm", 16000), AudioFormat("audio/pcmu", 8000)]

# Any value JSON can carry, and the values a parsed frame never holds but the relay's own code could (lone
# surrogates, integers past 64 bits, floats orjson writes with an exponent), nested or not.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-05, 1e16, -1e-7, 1e15, -0.0, 0.1, 123456789012.5])
    | st.text(max_size=12)
)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3), max_leaves=6)
base64_text = st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=64)
keys = st.sampled_from(["type", "event_id", "item_id", "response_id", "audio", "delta", "x", "text"]) | st.text(max_size=6)


def with_and_without_native(entry: LogEntry, wall: float, t_ms: float, seq: int = 7) -> tuple[bytes, bytes]:
    native = RecordBuilder().build("sess_AbCdEfGhIjKlMnOp", seq, wall, t_ms, entry)
    python = RecordBuilder(native=False).build("sess_AbCdEfGhIjKlMnOp", seq, wall, t_ms, entry)
    return native, python


def test_the_native_writer_is_built_wherever_a_c_compiler_and_pythons_headers_are() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_path("include")) / "Python.h"
    assert native_audio_record is not None or shutil.which(compiler) is None or not headers.exists(), (
        "a C compiler and Python.h are here but relay/eventlog/_flatrecord.c was not built: reinstall (make install-test)"
    )


needs_native = pytest.mark.skipif(native_audio_record is None, reason="no C compiler at install: nothing native to test")


@needs_native
@settings(max_examples=400)
@given(
    record_type=st.sampled_from([ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA]),
    fields=st.dictionaries(keys, scalars, max_size=6),
    payload=base64_text,
    fmt=st.sampled_from(FORMATS),
    wall=st.floats(0, 253402300799.0) | st.floats(allow_nan=False, allow_infinity=False),
    t_ms=st.floats(0, 1e10) | st.floats(-1e14, 1e14) | st.floats(allow_nan=False, allow_infinity=False),
    frame_bytes=st.none() | st.integers(0, 2**40),
    direction=st.sampled_from(["client", "server"]),
)
def test_a_flat_audio_record_is_byte_for_byte_the_python_builders(
    record_type: str,
    fields: dict[str, Any],
    payload: str,
    fmt: AudioFormat | None,
    wall: float,
    t_ms: float,
    frame_bytes: int | None,
    direction: str,
) -> None:
    event = {**fields, ev.AUDIO_PAYLOAD_FIELD[record_type]: payload}
    entry = LogEntry(direction, record_type, event, bytes=frame_bytes, audio_format=fmt)
    try:
        python = RecordBuilder(native=False).build("s", 7, wall, t_ms, entry)
    except Exception as exc:  # what no JSON can say: the native path must refuse it the same way
        with pytest.raises(type(exc)):
            RecordBuilder().build("s", 7, wall, t_ms, entry)
        return
    assert RecordBuilder().build("s", 7, wall, t_ms, entry) == python


@needs_native
@settings(max_examples=300)
@given(
    event=st.dictionaries(keys, values, max_size=5),
    record_type=st.sampled_from([ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA]),
)
def test_any_event_gets_the_python_builders_line_or_is_handed_back(event: dict[str, Any], record_type: str) -> None:
    assert native_audio_record is not None
    field = ev.AUDIO_PAYLOAD_FIELD[record_type]
    line = native_audio_record("s", 1, 1_700_000_000.5, 12.5, "server", record_type, event, field, 10, 48000)
    if line is None:
        return
    entry = LogEntry("server", record_type, event, bytes=10, audio_format=AudioFormat())
    assert line == RecordBuilder(native=False).build("s", 1, 1_700_000_000.5, 12.5, entry)


@needs_native
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"nested": 1}, "a nested object: the general walk summarizes audio inside it"),
        ([1, 2], "a list"),
        (1e-05, "a float orjson writes as 0.00001 and repr as 1e-05"),
        (2**64, "an integer past 64 bits"),
        ("\ud800", "a lone surrogate"),
        (math.inf, "a number no JSON can say"),
    ],
)
def test_what_it_does_not_write_the_same_way_it_hands_back(value: Any, why: str) -> None:
    assert native_audio_record is not None
    event = {"type": "input_audio_buffer.append", "audio": "AAAA", "x": value}
    assert native_audio_record("s", 1, 1.5, 1.0, "client", "input_audio_buffer.append", event, "audio", 1, 48000) is None, why


@needs_native
def test_a_record_it_cannot_place_in_time_is_handed_back() -> None:
    assert native_audio_record is not None
    event = {"type": "response.output_audio.delta", "delta": "AAAA"}
    args = ("s", 1, 1.5, 1.0, "server", "response.output_audio.delta", event, "delta", 1, 48000)
    assert native_audio_record(*args) is not None
    for wall in (-1.0, 253402300800.0, math.nan):
        assert native_audio_record(*args[:2], wall, *args[3:]) is None
    for t_ms in (1e12, -1e12, math.inf, math.nan):
        assert native_audio_record(*args[:3], t_ms, *args[4:]) is None


@needs_native
def test_a_record_whose_audio_is_not_a_string_or_whose_delta_has_audio_beside_it_is_handed_back() -> None:
    assert native_audio_record is not None
    for event, field in (
        ({"type": "t", "audio": 5}, "audio"),
        ({"type": "t"}, "audio"),
        ({"type": "t", "delta": "AAAA", "audio": "AAAA"}, "delta"),
    ):
        assert native_audio_record("s", 1, 1.5, 1.0, "client", "t", event, field, 1, 48000) is None


@needs_native
def test_wrong_arguments_are_a_type_error_not_a_crash() -> None:
    assert native_audio_record is not None
    good: list[Any] = ["s", 1, 1.5, 1.0, "client", "t", {"audio": "AAAA"}, "audio", 1, 48000]
    with pytest.raises(TypeError):
        native_audio_record(*good[:9])  # type: ignore[call-arg]
    for index, garbage in ((1, "one"), (2, "now"), (3, None), (9, 1.5)):
        with pytest.raises(TypeError):
            native_audio_record(*good[:index], garbage, *good[index + 1 :])
    # Values of the wrong kind where the Python builder would also not take the fast path: handed back.
    for index, other in ((0, 1), (4, None), (5, b"t"), (6, [1]), (7, 3), (8, "1")):
        assert native_audio_record(*good[:index], other, *good[index + 1 :]) is None


@needs_native
def test_a_long_event_grows_the_line_past_its_first_buffer() -> None:
    event = {"type": ev.INPUT_AUDIO_BUFFER_APPEND, "audio": "AAAA" * 10, "note": "é\n\"\\" * 2000, "event_id": "e" * 3000}
    entry = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, event, bytes=20000, audio_format=AudioFormat())
    native, python = with_and_without_native(entry, 1_765_000_000.999_999_7, 59_999.9995)
    assert native == python
    assert len(native) > 10_000


@pytest.mark.parametrize("value", ["\ud800", 10**31])
def test_a_flat_audio_frame_that_orjson_cannot_write_still_gets_its_record(value: Any) -> None:
    """The standard library's parser takes what orjson refuses (a lone surrogate escape, an integer past 64 bits):
    such a frame still gets its one record, through the general path's fallback, natively or not."""
    event = {"type": ev.INPUT_AUDIO_BUFFER_APPEND, "audio": "AAAA", "x": value}
    entry = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, event, bytes=60, audio_format=AudioFormat())
    native, python = with_and_without_native(entry, 1_765_000_000.25, 10.0)
    assert native == python
    assert b'"audio":{"audio_bytes":3,"audio_ms":0.063}' in python


@needs_native
def test_numbers_past_64_bits_in_its_own_arguments_are_handed_back_not_raised() -> None:
    assert native_audio_record is not None
    event = {"type": "t", "audio": "AAAA"}
    assert native_audio_record("s", 2**63, 1.5, 1.0, "client", "t", event, "audio", 1, 48000) is None
    assert native_audio_record("s", 1, 1.5, 1.0, "client", "t", event, "audio", 1, 2**63) is None
    assert native_audio_record("s", 1, 1.5, 1.0, "client", "t", event, "audio", 1, -2) is None
    line = native_audio_record("s", 1, 1.5, 1.0, "client", "t", event, "audio", 1, -1)
    assert line is not None and b'"audio_ms":null' in line


def test_a_format_whose_rate_is_past_64_bits_still_gets_its_records() -> None:
    """A client's session.update can name any positive rate: its appends are still logged, natively or not."""
    fmt = AudioFormat.from_config({"type": "audio/pcm", "rate": 2**63}, AudioFormat())
    entry = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "AAAA"}, bytes=60, audio_format=fmt)
    native, python = with_and_without_native(entry, 1_765_000_000.25, 10.0)
    assert native == python


@needs_native
def test_a_key_that_is_not_a_string_is_handed_back_before_any_lookup() -> None:
    """A key of another type could change the dict from its __eq__ while the record is written: such an event is
    the Python builder's (no parsed frame has one)."""
    assert native_audio_record is not None
    event: dict[Any, Any] = {}

    class Collides:
        def __hash__(self) -> int:
            return hash("event_id")

        def __eq__(self, other: object) -> bool:
            event.clear()
            return False

    event["audio"] = "AAAA"
    event[Collides()] = 1
    assert native_audio_record("s", 1, 1.5, 1.0, "client", "t", event, "audio", None, 48000) is None
    assert "audio" in event


# ---- a run of records in one call (`RecordBuilder.audio_run`) ---------------------------------------------------

entries_in_a_flush = st.builds(
    LogEntry,
    st.sampled_from(["client", "server", "relay"]),
    st.sampled_from([ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA, ev.RESPONSE_DONE, "relay.x"]) | st.none(),
    st.dictionaries(keys, scalars | st.sampled_from(["\ud800", "a\udfffb", 'q"\\\n\x01']) | st.text(), max_size=4)
    | st.dictionaries(keys, values, max_size=3),
    bytes=st.none() | st.integers(0, 2**70),
    client_event=st.none() | st.just({"type": "x"}),
    audio_format=st.sampled_from([*FORMATS, AudioFormat.from_config({"type": "audio/pcm", "rate": 2**63}, AudioFormat())]),
)


def _audio_record_args(entry: LogEntry, seq: int, field: str) -> tuple[Any, ...]:
    """`audio_record`'s arguments for `entry`, as `RecordBuilder.build` passes them."""
    rate = entry.audio_format.bytes_per_second if entry.audio_format is not None else -1
    return ("sess_run", seq, 1_765_000_000.125, 42.5, entry.dir, entry.type, entry.event, field, entry.bytes, rate)


@needs_native
@settings(max_examples=400)
@given(entries=st.lists(entries_in_a_flush, max_size=6), start=st.integers(-1, 7), first_seq=st.integers(1, 2**63))
def test_a_run_is_the_records_build_writes_for_its_entries_up_to_the_first_it_would_not_write_natively(
    entries: list[LogEntry], start: int, first_seq: int
) -> None:
    builder = RecordBuilder()
    blob, count = builder.audio_run("sess_run", first_seq, 1_765_000_000.125, 42.5, entries, start)
    expected: list[bytes] = []
    for offset, entry in enumerate(entries[max(start, 0) :] if start >= 0 else []):
        field = ev.AUDIO_PAYLOAD_FIELD.get(entry.type) if entry.type is not None else None
        natively = (
            field is not None
            and entry.client_event is None
            and entry.server_event is None
            and first_seq + offset < 2**63 - 1
            and native_audio_record is not None
            and native_audio_record(*_audio_record_args(entry, first_seq + offset, field)) is not None
        )
        if not natively:
            break
        expected.append(builder.build("sess_run", first_seq + offset, 1_765_000_000.125, 42.5, entry))
    assert count == len(expected)
    assert blob == b"".join(expected)
    # Byte for byte the Python builder's records, too.
    python = RecordBuilder(native=False)
    assert blob == b"".join(
        python.build("sess_run", first_seq + i, 1_765_000_000.125, 42.5, entries[start + i]) for i in range(count)
    )


def test_without_the_native_writer_a_run_is_empty_and_every_record_is_built_alone() -> None:
    entry = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "AAAA"}, bytes=60, audio_format=AudioFormat())
    assert RecordBuilder(native=False).audio_run("s", 1, 1.5, 1.0, [entry, entry], 0) == (b"", 0)
    assert RecordBuilder(audio_hash=True).audio_run("s", 1, 1.5, 1.0, [entry, entry], 0) == (b"", 0)


@needs_native
def test_a_run_refuses_what_is_not_a_list_of_log_entries_with_a_clear_error() -> None:
    from relay.eventlog._flatrecord import audio_records

    entry = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "AAAA"}, bytes=60, audio_format=AudioFormat())
    fields = dict(ev.AUDIO_PAYLOAD_FIELD)
    with pytest.raises(TypeError):
        audio_records("s", 1, 1.5, 1.0, (entry,), 0, fields)  # a tuple, not a list
    with pytest.raises(TypeError):
        audio_records("s", 1, 1.5, 1.0, [entry], 0)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        audio_records("s", 1, 1.5, 1.0, [object()], 0, fields)

    class OddFormat:
        bytes_per_second = "fast"

    odd = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "AAAA"}, bytes=60, audio_format=OddFormat())  # type: ignore[arg-type]
    blob, count = audio_records("s", 1, 1.5, 1.0, [entry, odd, entry], 0, fields)
    assert count == 1 and blob.count(b"\n") == 1
