"""relay.recording.intake: which entries of a flush the recording passes over in a flood, which the run extender
takes in real time; the native versions answer as the Python ones do, for any entries, gates and runs, and refuse
garbage arguments clearly."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import events as ev
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.outbox import LogEntry
from relay.recording import intake
from relay.recording.intake import pass_over_python

native = intake.native_pass_over
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
    from relay.recording import _intake

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
        _intake.pass_over(*good[:6])
    with pytest.raises(TypeError):
        _intake.set_kinds("a", ["b"], "c")  # type: ignore[arg-type]
    # An entry without the fields of a log entry, and an output format that raises: the error comes through.
    with pytest.raises(AttributeError):
        native([object()], 0, 1.0, None, None, DEFAULT_FORMAT, lambda: OUTPUT)  # type: ignore[list-item]

    def broken() -> AudioFormat:
        raise RuntimeError("boom")

    delta = LogEntry("server", ev.RESPONSE_OUTPUT_AUDIO_DELTA, {"delta": "AAAA", "item_id": "a"})
    with pytest.raises(RuntimeError, match="boom"):
        native([delta], 0, 1.0, None, None, DEFAULT_FORMAT, broken)


def test_the_native_intake_is_built_wherever_the_record_writer_is() -> None:
    from relay.eventlog.records import native_audio_record

    assert (native is None) == (native_audio_record is None) == (intake.NativeRunExtender is None)


# ---- the run extender -------------------------------------------------------------------------------------------

native_extender = intake.NativeRunExtender
needs_native_extender = pytest.mark.skipif(native_extender is None, reason="the native intake was not built")
PCM8K = AudioFormat("audio/pcm", 8000)
RUN_FORMATS = [None, PCM8K, AudioFormat("audio/pcm", 8000), DEFAULT_FORMAT, AudioFormat("audio/pcmu", 8000)]
RUN_AUDIO = ["AAAAAAAA", "AAAAAAAAAAAAAAAA", "AAAAAA==", "AAAA", "A" * 1064, "", 7]
RUN_ITEMS = ["a", "b", 3, None]


@st.composite
def run_entries(draw: st.DrawFn) -> LogEntry:
    """Mostly audio that could continue an 8 kHz run, with everything that must stop it among them."""
    kind = draw(st.sampled_from([ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA, ev.CONVERSATION_ITEM_TRUNCATE,
                                 ev.SESSION_UPDATE]))  # fmt: skip
    event: Any = {"audio": draw(st.sampled_from(RUN_AUDIO)), "delta": draw(st.sampled_from(RUN_AUDIO))}
    event["item_id"] = draw(st.sampled_from(RUN_ITEMS))
    if draw(st.integers(0, 15)) == 0:
        event = draw(st.sampled_from([None, ["a"]]))
    direction = draw(st.sampled_from(["client", "server"]))
    return LogEntry(direction, kind, event, audio_format=draw(st.sampled_from(RUN_FORMATS)))


def _extender_answers(kind: Any, arms: list[Any], calls: list[Any]) -> list[Any]:
    """What an extender of `kind` answers to a sequence of arm / take / disarm calls, errors included."""
    extender = kind(8000, 800, 2400, 100_000, 10.0)
    for channel, end, item in arms:
        extender.arm(channel, end, item)
    answers: list[Any] = []
    asked = [0]

    def output_format() -> AudioFormat:
        asked[0] += 1
        return PCM8K

    for call in calls:
        try:
            if call[0] == "take":
                answers.append(extender.take(call[1], call[2], call[3], DEFAULT_FORMAT, output_format))
            else:
                answers.append(extender.disarm(call[1]))
        except Exception as exc:  # the same error, from either version
            answers.append(type(exc))
    answers.append((extender.disarm(0), extender.disarm(1), asked[0]))
    return answers


_ARMS = st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(-100, 30_000), st.sampled_from(["a", "b"])), max_size=3)
_CALLS = st.lists(
    st.one_of(
        st.tuples(
            st.just("take"),
            st.lists(run_entries(), max_size=10),
            st.integers(0, 11),
            st.sampled_from([10.0, 10.5, 11.0, 13.0, 9.0, math.nan]),
        ),
        st.tuples(st.just("disarm"), st.sampled_from([0, 1])),
    ),
    max_size=6,
)


@needs_native_extender
@settings(max_examples=600, deadline=None)
@given(arms=_ARMS, calls=_CALLS)
def test_the_native_run_extender_answers_as_the_python_one(arms: list[Any], calls: list[Any]) -> None:
    """Same index where each take stops, the same runs handed back, the output format asked as often, and the same
    errors, for any entries (padded or short audio, other formats and items, not dicts, truncates, NaN times)."""
    assert _extender_answers(native_extender, arms, calls) == _extender_answers(intake.PythonRunExtender, arms, calls)


def _stream(n: int, *, item: str = "a", audio: str = "A" * 1064) -> list[LogEntry]:
    """n rounds of 8 kHz audio both ways, 1064 base64 characters (399 frames, ~50 ms) each."""
    out = []
    for _ in range(n):
        out.append(LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": audio}, audio_format=PCM8K))
        out.append(LogEntry("server", ev.RESPONSE_OUTPUT_AUDIO_DELTA, {"delta": audio, "item_id": item}, audio_format=PCM8K))
    return out


@pytest.mark.parametrize("kind", [intake.PythonRunExtender, native_extender], ids=["python", "native"])
def test_the_run_extender_takes_what_continues_each_run_and_stops_at_anything_else(kind: Any) -> None:
    if kind is None:
        pytest.skip("the native intake was not built")
    # 8 kHz, runs continue within 100 ms, a lead of 0.3 s, the file's cap at 10 s, the session started at 10.0.
    extender = kind(8000, 800, 2400, 80_000, 10.0)
    extender.arm(0, 8000, None)
    extender.arm(1, 8100, "a")
    relay = LogEntry("relay", ev.RELAY_AUDIO_SAVED, {"item_id": "a"})
    assert extender.take([relay, *_stream(2)], 0, 11.0, DEFAULT_FORMAT, lambda: PCM8K) == 5
    left, right = extender.disarm(0), extender.disarm(1)
    assert left == (8000, 798, ["A" * 1064] * 2) and right == (8100, 798, ["A" * 1064] * 2)
    assert extender.disarm(0) is None  # disarmed: nothing more is taken on that channel
    assert extender.take(_stream(1), 0, 11.0, DEFAULT_FORMAT, lambda: PCM8K) == 0

    def stops_at(entries: list[LogEntry], mono: float = 11.0, cap: int = 80_000) -> int:
        fresh = kind(8000, 800, 2400, cap, 10.0)
        fresh.arm(0, 8000, None)
        fresh.arm(1, 8000, "a")
        return int(fresh.take(entries, 0, mono, DEFAULT_FORMAT, lambda: PCM8K))

    truncate = LogEntry("client", ev.CONVERSATION_ITEM_TRUNCATE, {"item_id": "a", "audio_end_ms": 10})
    assert stops_at([*_stream(1), truncate, *_stream(1)]) == 2
    assert stops_at(_stream(2, item="b")) == 1  # another item
    assert stops_at(_stream(1, audio="AAAAAA==")) == 0  # padded: not whole samples
    assert stops_at(_stream(1, audio="AAAA")) == 0  # not whole 3-byte groups of samples
    assert stops_at(_stream(1), mono=11.2) == 0  # arrived more than 100 ms after the run's end: a new run
    assert stops_at(_stream(4), mono=10.8) == 4  # the fifth chunk would pass the clock plus the lead
    assert stops_at(_stream(4), cap=8500) == 2  # the third would pass the file's cap
    pcm16k = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "A" * 1064}, audio_format=PCM16K)
    assert stops_at([pcm16k]) == 0  # not at the recording rate: decoded and resampled by the recorder


@needs_native_extender
def test_the_native_run_extender_refuses_garbage_arguments_with_an_error_not_a_crash() -> None:
    assert native_extender is not None
    for args in [("8000", 800, 2400, 1, 0.0), (8000, 800, 2400, 1), (8000, 800, 2400, 1, "now")]:
        with pytest.raises(TypeError):
            native_extender(*args)
    extender = native_extender(8000, 800, 2400, 80_000, 10.0)
    for call, error in [
        (lambda: extender.arm(2, 0, None), ValueError),
        (lambda: extender.arm("left", 0, None), TypeError),
        (lambda: extender.arm(1, 0, 3), TypeError),  # the assistant's run is armed with its item id
        (lambda: extender.arm(0, 2**80, None), OverflowError),
        (lambda: extender.disarm(-1), ValueError),
        (lambda: extender.take((), 0, 1.0, DEFAULT_FORMAT, lambda: OUTPUT), TypeError),
        (lambda: extender.take([], -1, 1.0, DEFAULT_FORMAT, lambda: OUTPUT), ValueError),
        (lambda: extender.take([], 0, "soon", DEFAULT_FORMAT, lambda: OUTPUT), TypeError),
        (lambda: extender.take([]), TypeError),  # type: ignore[call-arg]
        (lambda: extender.take([object()], 0, 1.0, DEFAULT_FORMAT, lambda: OUTPUT), AttributeError),
    ]:
        with pytest.raises(error):
            call()
    extender.arm(0, 8000, None)
    odd = LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {"audio": "A" * 1064}, audio_format=object())  # type: ignore[arg-type]
    with pytest.raises(AttributeError):  # a format without a rate
        extender.take([odd], 0, 11.0, DEFAULT_FORMAT, lambda: OUTPUT)
