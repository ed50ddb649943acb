"""relay.recording.floodgate: which entries of a flush the recording passes over; the native version answers as
the Python one does, for any entries and gates, and refuses garbage arguments clearly."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import events as ev
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.outbox import LogEntry
from relay.recording import floodgate
from relay.recording.floodgate import pass_over_python

native = floodgate.native_pass_over
needs_native = pytest.mark.skipif(native is None, reason="the native flood gate was not built (no C compiler)")

PCM16K = AudioFormat("audio/pcm", 16000)
OUTPUT = AudioFormat("audio/pcmu", 8000)
FORMATS = [None, DEFAULT_FORMAT, PCM16K]
AUDIO = ["", "AAAA", "AAAAAAAA", "AAAAAA==", "QUJD", 7, None, ["AAAA"]]
ITEMS = ["a", "b", 3, None, math.nan, {"x": 1}]
KINDS = [ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA, "response.audio.delta",
         ev.CONVERSATION_ITEM_TRUNCATE, ev.SESSION_UPDATE, None, "relay.audio_saved"]  # fmt: skip


@st.composite
def entries(draw: st.DrawFn) -> LogEntry:
    kind = draw(st.sampled_from(KINDS))
    event: Any
    if draw(st.integers(0, 9)) == 0:
        event = draw(st.sampled_from([None, "text", ["a"], 3]))
    else:
        event = {}
        for key, values in (("audio", AUDIO), ("delta", AUDIO), ("item_id", ITEMS), ("audio_end_ms", [0, 1.5, "x"])):
            if draw(st.booleans()):
                event[key] = draw(st.sampled_from(values))
    direction = draw(st.sampled_from(["client", "server", "relay"]))
    return LogEntry(direction, kind, event, audio_format=draw(st.sampled_from(FORMATS)))


GATES = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from([0.5, 1.0, 2.0, math.inf]),
        st.sampled_from([DEFAULT_FORMAT, PCM16K, OUTPUT]),
        st.sampled_from([None, "a", "b", 3, math.nan]),
        st.sampled_from([4, 8]),
        st.integers(0, 500),
        st.integers(0, 500),
    ),
)


def _answers(function: Any, *args: Any) -> tuple[Any, int]:
    calls = [0]

    def output_format() -> AudioFormat:
        calls[0] += 1
        return OUTPUT

    return function(*args, output_format), calls[0]


@needs_native
@settings(max_examples=600, deadline=None)
@given(
    batch=st.lists(entries(), max_size=12),
    start=st.integers(0, 13),
    mono=st.sampled_from([0.0, 1.0, 1.5, math.nan]),
    left=GATES,
    right=GATES,
)
def test_the_native_flood_gate_answers_as_the_python_one(
    batch: list[LogEntry], start: int, mono: float, left: Any, right: Any
) -> None:
    """Same index, same dropped and skipped frames, and the output format asked as often, whatever the entries hold
    (not dicts, missing or non-string audio, padded base64, items of any JSON type, NaN) and whatever the gates."""
    assert native is not None
    args = (batch, start, mono, left, right, DEFAULT_FORMAT)
    assert _answers(native, *args) == _answers(pass_over_python, *args)


def _flood(n: int, item: str = "a") -> list[LogEntry]:
    out = []
    for _ in range(n):
        out.append(LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "AAAAAAAA"}, audio_format=DEFAULT_FORMAT))
        out.append(LogEntry("server", ev.RESPONSE_OUTPUT_AUDIO_DELTA, {"delta": "AAAAAAAA", "item_id": item}))
    return out


@pytest.mark.parametrize("function", [pass_over_python, native], ids=["python", "native"])
def test_a_flood_behind_open_gates_is_passed_over_and_counted(function: Any) -> None:
    if function is None:
        pytest.skip("the native flood gate was not built")
    left = (2.0, DEFAULT_FORMAT, None, 8, 6, 6)
    right = (2.0, OUTPUT, "a", 8, 6, 5)
    assert function(_flood(16), 0, 1.0, left, right, DEFAULT_FORMAT, lambda: OUTPUT) == (32, 16 * 6 + 16 * 5, 16 * 6)
    # The gate's time has passed, the item changed, or a gate is closed: stopped at the first such chunk.
    assert function(_flood(4), 0, 2.5, left, right, DEFAULT_FORMAT, lambda: OUTPUT) == (0, 0, 0)
    assert function(_flood(4, item="b"), 0, 1.0, left, right, DEFAULT_FORMAT, lambda: OUTPUT) == (1, 6, 0)
    assert function(_flood(4), 3, 1.0, None, right, DEFAULT_FORMAT, lambda: OUTPUT) == (4, 5, 6)
    truncate = LogEntry("client", ev.CONVERSATION_ITEM_TRUNCATE, {"item_id": "a", "audio_end_ms": 10})
    assert function([truncate], 0, 1.0, left, right, DEFAULT_FORMAT, lambda: OUTPUT) == (0, 0, 0)
    relay = LogEntry("relay", ev.RELAY_AUDIO_SAVED, {"item_id": "a"})
    assert function([relay, *_flood(1)], 0, 1.0, None, None, DEFAULT_FORMAT, lambda: OUTPUT) == (1, 0, 0)


@needs_native
def test_the_native_flood_gate_refuses_garbage_arguments_with_an_error_not_a_crash() -> None:
    assert native is not None
    from relay.recording import _floodgate

    good: list[Any] = [_flood(1), 0, 1.0, None, None, DEFAULT_FORMAT, lambda: OUTPUT]
    for position, garbage, error in [
        (0, (1, 2), TypeError),  # not a list
        (1, -1, ValueError),
        (1, "0", TypeError),
        (2, "soon", TypeError),
        (3, (1.0, DEFAULT_FORMAT), TypeError),  # a gate of the wrong shape
        (3, (None, DEFAULT_FORMAT, None, 8, 6, 6), TypeError),
    ]:
        args = list(good)
        args[position] = garbage
        with pytest.raises(error):
            native(*args)
    with pytest.raises(TypeError):
        _floodgate.pass_over(*good[:6])
    with pytest.raises(TypeError):
        _floodgate.set_kinds("a", ["b"], "c")  # type: ignore[arg-type]
    # An entry without the fields of a log entry, and an output format that raises: the error comes through.
    with pytest.raises(AttributeError):
        native([object()], 0, 1.0, None, None, DEFAULT_FORMAT, lambda: OUTPUT)  # type: ignore[list-item]

    def broken() -> AudioFormat:
        raise RuntimeError("boom")

    delta = LogEntry("server", ev.RESPONSE_OUTPUT_AUDIO_DELTA, {"delta": "AAAA", "item_id": "a"})
    with pytest.raises(RuntimeError, match="boom"):
        native([delta], 0, 1.0, None, None, DEFAULT_FORMAT, broken)


def test_the_native_flood_gate_is_built_wherever_the_record_writer_is() -> None:
    from relay.eventlog.records import native_audio_record

    assert (native is None) == (native_audio_record is None)
