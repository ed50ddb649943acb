"""relay.eventlog.records, the record builder on its own (no queue, no thread, no file): the record's fields and
their JSON types for any event a client or upstream may send, the `relay.log_gap` line, timestamps, and what the
summaries never do (mutate the event, fail on garbage). The record format is docs/event-log.md."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry
from relay.eventlog.records import SCHEMA_VERSION, RecordBuilder, _Rfc3339, audio_summary, summarize_event

HEAD = ["v", "ts", "level", "t_ms", "session_id", "seq", "dir", "type"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["audio", "delta", "text", "transcript", "instructions", "item", "response", "id", "event_id",
                         "item_id", "response_id", "arguments", "output", "content", "x"]) | st.text(max_size=5),
        children,
        max_size=5,
    ),
    max_leaves=30,
)
record_types = st.sampled_from(
    [None, "", ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA, ev.RESPONSE_OUTPUT_TEXT_DELTA,
     ev.RELAY_TOOL_CALL, ev.RESPONSE_DONE, "made.up"]
)


def build(entry: LogEntry, **options: bool) -> dict[str, Any]:
    line = RecordBuilder(**options).build("sess_1", 7, 1_700_000_000.25, 12.34567, entry)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record: dict[str, Any] = json.loads(line)
    return record


def test_a_record_starts_with_the_fixed_fields_in_order() -> None:
    record = build(LogEntry("client", ev.RESPONSE_CREATE, {"type": ev.RESPONSE_CREATE}, bytes=26))
    assert list(record) == [*HEAD, "bytes", "event"]
    assert record["v"] == SCHEMA_VERSION and record["level"] == "info" and record["t_ms"] == 12.346
    assert (record["session_id"], record["seq"], record["dir"], record["bytes"]) == ("sess_1", 7, "client", 26)
    assert record["ts"] == "2023-11-14T22:13:20.250000Z"


def test_the_relay_s_own_records_have_no_bytes_and_a_changed_frame_keeps_both_versions() -> None:
    own = build(LogEntry("relay", ev.RELAY_SESSION_STARTED, {"model": "m"}))
    assert "bytes" not in own and own["event"] == {"model": "m"}
    changed = build(LogEntry("server", ev.SESSION_UPDATED, {"a": 2}, bytes=9, client_event={"a": 0},
                             server_event={"a": 1}))
    assert list(changed)[-3:] == ["event", "client_event", "server_event"]
    assert (changed["client_event"], changed["server_event"]) == ({"a": 0}, {"a": 1})


@pytest.mark.parametrize(
    ("event", "ids"),
    [
        ({"event_id": "e", "item_id": "i", "response_id": "r"}, {"event_id": "e", "item_id": "i", "response_id": "r"}),
        ({"item": {"id": "i2"}, "response": {"id": "r2"}}, {"item_id": "i2", "response_id": "r2"}),
        ({"event_id": 5, "item_id": ["x"], "response_id": None}, {}),  # not strings: only inside `event`
        ({"item": "not an object", "response": [1]}, {}),
        ({"item": {"id": 3}}, {}),
        ([1, 2], {}),
        ("text", {}),
        (None, {}),
    ],
)
def test_top_level_ids_are_strings_or_absent(event: Any, ids: dict[str, str]) -> None:
    record = build(LogEntry("client", "x", event))
    assert {k: record[k] for k in ("event_id", "item_id", "response_id") if k in record} == ids
    assert record["event"] == event


def test_the_gap_line_has_a_null_seq_and_says_what_was_dropped() -> None:
    started = time.monotonic() - 2.0
    gap = json.loads(RecordBuilder().gap("sess_1", started, 3, 9, "queue_full"))
    assert list(gap) == [*HEAD, "event"]
    assert (gap["seq"], gap["dir"], gap["type"]) == (None, "relay", ev.RELAY_LOG_GAP)
    assert gap["event"] == {"from_seq": 3, "to_seq": 9, "reason": "queue_full"}
    assert 2000.0 <= gap["t_ms"] < 60_000.0


def test_a_frame_nested_deeper_than_orjson_goes_still_gets_its_record() -> None:
    deep: Any = "bottom"
    for _ in range(400):
        deep = [deep]
    record = build(LogEntry("client", "x", {"deep": deep}))
    assert record["event"]["deep"] == deep


def test_what_orjson_refuses_but_json_can_say_still_gets_its_record() -> None:
    """A lone surrogate (sent escaped, which is valid JSON) and an integer past 64 bits."""
    line = RecordBuilder().build("s", 1, 0.0, 0.0, LogEntry("client", "x", {"text": "\ud800", "n": 2**70}))
    assert json.loads(line)["event"] == {"text": "\ud800", "n": 2**70}


def test_what_no_json_can_say_is_raised_for_the_writer_to_declare() -> None:
    with pytest.raises(orjson.JSONEncodeError):  # no frame parses to one: a relay bug's record
        RecordBuilder().build("s", 1, 0.0, 0.0, LogEntry("relay", "x", {"n": object()}))


def test_timestamps_are_rfc3339_utc_microseconds_across_second_boundaries() -> None:
    stamp = _Rfc3339()
    for wall in (0.0, 0.999999, 1.0, 1_700_000_000.5, 1_700_000_001.000001, 1_700_000_000.5):
        expected = datetime.fromtimestamp(int(wall * 1_000_000) / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert stamp(wall) == expected


@pytest.mark.parametrize("payload", ["", "AAAA", "AAA=", "AA==", "not base64 at all", "ÿÿÿ", "A" * 4001])
def test_audio_summaries_never_fail_on_any_string(payload: str) -> None:
    summary = audio_summary(payload, AudioFormat("audio/pcm", 16000), with_hash=True)
    assert summary["audio_bytes"] >= 0 and len(summary["sha256"]) == 16
    assert audio_summary(payload, None)["audio_ms"] is None


@settings(max_examples=150, deadline=None)
@given(event=json_values, record_type=record_types, keep_text=st.booleans(), audio_hash=st.booleans())
def test_summaries_never_mutate_and_always_encode(event: Any, record_type: str | None, keep_text: bool, audio_hash: bool) -> None:
    before = copy.deepcopy(event)
    out = summarize_event(event, record_type, AudioFormat(), keep_text, audio_hash)
    assert event == before
    orjson.dumps(out)
    if keep_text and not _has_audio(event):
        assert out == event
    if not keep_text and isinstance(out, dict):
        assert not any(isinstance(out.get(k), str) for k in ("text", "transcript", "instructions", "audio"))


def _has_audio(value: Any) -> bool:
    if isinstance(value, dict):
        return any((k in ("audio", "delta") and isinstance(v, str)) or _has_audio(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_audio(v) for v in value)
    return False


@settings(max_examples=100, deadline=None)
@given(event=json_values, record_type=record_types, direction=st.sampled_from(["client", "server", "relay"]))
def test_any_event_builds_one_line_with_one_json_type_per_head_field(event: Any, record_type: str | None, direction: str) -> None:
    record = build(LogEntry(direction, record_type, event, bytes=len(orjson.dumps(event))), keep_text=False)
    assert list(record)[:8] == HEAD
    assert isinstance(record["ts"], str) and isinstance(record["seq"], int) and isinstance(record["t_ms"], float)
    assert all(isinstance(record[k], str) for k in ("event_id", "item_id", "response_id") if k in record)


# Every integer orjson parses as an int (it parses larger ones as floats); text without lone surrogates, which no
# parsed frame holds.
flat_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
)
flat_audio_events = st.tuples(
    st.sampled_from([ev.INPUT_AUDIO_BUFFER_APPEND, ev.RESPONSE_OUTPUT_AUDIO_DELTA]),
    st.dictionaries(
        st.sampled_from(["type", "event_id", "item_id", "response_id", "audio", "delta", "text", "x"]) | st.text(max_size=4),
        flat_scalars,
        max_size=6,
    ),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=64),
)


@settings(max_examples=300)
@given(
    flat_audio_events,
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, AudioFormat(), AudioFormat("audio/pcmu", 8000)]),
    st.floats(0, 1e10),
    st.sampled_from(["client", "server"]),
)
def test_the_fast_record_of_a_flat_audio_frame_is_the_record_the_general_path_builds(
    shape: tuple[str, dict[str, Any], str],
    keep_text: bool,
    audio_hash: bool,
    fmt: AudioFormat | None,
    t_ms: float,
    direction: str,
) -> None:
    record_type, fields, payload = shape
    event = {**fields, ev.AUDIO_PAYLOAD_FIELD[record_type]: payload}
    entry = LogEntry(direction, record_type, event, bytes=len(payload) + 40, audio_format=fmt)
    fast = RecordBuilder(keep_text=keep_text, audio_hash=audio_hash, native=False)  # native: test_flatrecord.py
    general = RecordBuilder(keep_text=keep_text, audio_hash=audio_hash, native=False)
    general._flat_audio = lambda *args: None  # type: ignore[method-assign]
    wall = 1_700_000_000.123456
    assert fast.build("s", 7, wall, t_ms, entry) == general.build("s", 7, wall, t_ms, entry)
