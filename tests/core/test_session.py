"""The pure session core, fed frames without a loop or sockets: what it forwards, logs, retrieves and saves."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import session as session_module
from relay.core.formats import AudioFormat
from relay.core.frames import deep_merge, parse_event
from relay.core.keptaudio import RUN_BYTES
from relay.core.policy import SessionPolicy
from relay.core.resume import ResumePolicy
from relay.core.session import RelaySession
from relay.eventlog.records import RecordBuilder


def j(event: dict[str, Any]) -> str:
    return json.dumps(event)


def pcm(n_samples: int, value: int = 1000) -> bytes:
    return int(value).to_bytes(2, "little", signed=True) * n_samples


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def session_created(rate: int = 24000, fmt: str = "audio/pcm") -> dict[str, Any]:
    return {
        "type": "session.created",
        "event_id": "e0",
        "session": {
            "id": "sess_up",
            "audio": {"input": {"format": {"type": fmt, "rate": rate}}, "output": {"format": {"type": fmt, "rate": rate}}},
        },
    }


def assistant_item(item_id: str, with_audio: bool = True) -> dict[str, Any]:
    content = [{"type": "output_audio", "transcript": "hi"}] if with_audio else [{"type": "output_text", "text": "hi"}]
    return {"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": content}


def new_session(**policy: Any) -> RelaySession:
    core = RelaySession(SessionPolicy(**policy))
    core.upstream_connected(1.0)
    core.receive_server_text(j(session_created()))
    drain(core)
    return core


def drain(core: RelaySession) -> dict[str, list[Any]]:
    return {
        "upstream": core.to_upstream(),
        "client": core.to_client(),
        "log": core.to_log(),
        "save": core.to_save(),
        "arm": core.to_arm(),
    }


def stream_assistant_audio(core: RelaySession, item_id: str, chunks: list[bytes]) -> None:
    core.receive_server_text(
        j({"type": "response.output_item.added", "event_id": "a", "response_id": "r1", "item": assistant_item(item_id)})
    )
    for chunk in chunks:
        core.receive_server_text(
            j(
                {
                    "type": "response.output_audio.delta",
                    "event_id": "d",
                    "response_id": "r1",
                    "item_id": item_id,
                    "delta": b64(chunk),
                }
            )
        )


def test_client_frames_are_forwarded_as_the_exact_text_received() -> None:
    core = new_session()
    text = '{"type":"response.create",  "event_id":"x1" , "extra":{"unknown":[1,2]}}'
    core.receive_client_text(text)
    out = drain(core)
    assert out["upstream"] == [text]
    assert out["client"] == []
    assert [(e.dir, e.type) for e in out["log"]] == [("client", "response.create")]


def test_unknown_server_event_types_are_forwarded_untouched() -> None:
    core = new_session()
    text = '{"type":"vendor.something_new","event_id":"s9","x":1}'
    core.receive_server_text(text)
    out = drain(core)
    assert out["client"] == [text]
    assert out["log"][0].type == "vendor.something_new"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('"string"', "invalid_json"),
        ("{}", "missing_type"),
        ('{"type": 5, "event_id": "e7"}', "missing_type"),
        ("[" * 600 + "]" * 600, "invalid_json"),
        ('{"type": "x", "a": ' + "[" * 520 + "]" * 520 + "}", "invalid_json"),
        ('{"type": "x", "a": NaN}', "invalid_json"),  # Python's extensions are not JSON
        ('{"type": "x", "a": -Infinity}', "invalid_json"),
    ],
)
def test_invalid_client_frames_get_an_error_and_are_not_forwarded(frame: str, code: str) -> None:
    core = new_session()
    core.receive_client_text(frame)
    out = drain(core)
    assert out["upstream"] == []
    (reply,) = out["client"]
    error = json.loads(reply)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code
    assert [e.type for e in out["log"]] == ["relay.client_error"]


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "x", "text": "\\ud800"}',  # a lone surrogate, escaped: valid JSON text
        '{"type": "x", "n": 123456789012345678901234567890}',  # past 64 bits
        '{"type": "x", "n": 1e400}',  # past a double's range
    ],
)
def test_json_that_orjson_refuses_is_still_forwarded_and_logged(frame: str) -> None:
    core = new_session()
    core.receive_client_text(frame)
    out = drain(core)
    assert out["upstream"] == [frame] and out["client"] == []
    (entry,) = out["log"]
    assert entry.type == "x"
    RecordBuilder().build("s", 1, 0.0, 0.0, entry)  # its record encodes


def test_an_invalid_frame_echoes_the_clients_event_id() -> None:
    core = new_session()
    core.receive_client_text('{"event_id": "mine_1"}')
    error = json.loads(drain(core)["client"][0])
    assert error["error"]["event_id"] == "mine_1"


def test_binary_client_frames_are_refused() -> None:
    core = new_session()
    core.receive_client_binary(10)
    out = drain(core)
    assert out["upstream"] == []
    assert json.loads(out["client"][0])["error"]["code"] == "binary_not_supported"


def test_blocked_event_types_are_refused_with_event_blocked() -> None:
    core = new_session(blocked_client_events=frozenset({"session.update"}))
    core.receive_client_text(j({"type": "session.update", "event_id": "u1", "session": {}}))
    out = drain(core)
    assert out["upstream"] == []
    error = json.loads(out["client"][0])["error"]
    assert (error["code"], error["event_id"]) == ("event_blocked", "u1")


def test_nesting_of_exactly_512_levels_is_accepted() -> None:
    deep = "[" * 511 + "]" * 511
    assert parse_event('{"type": "x", "a": ' + deep + "}") is not None


def test_audio_item_done_triggers_exactly_one_retrieve() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(480)])
    drain(core)
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    core.receive_server_text(
        j({"type": "response.output_item.done", "event_id": "y", "response_id": "r1", "item": assistant_item("item_a")})
    )
    out = drain(core)
    retrieves = [json.loads(t) for t in out["upstream"]]
    assert retrieves == [{"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": "relay_retrieve_item_a"}]
    assert out["arm"] == ["item_a"]
    relay_logged = [e for e in out["log"] if e.dir == "relay"]
    assert [e.type for e in relay_logged] == ["conversation.item.retrieve"]


def test_items_without_audio_are_not_retrieved() -> None:
    core = new_session()
    core.receive_server_text(
        j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("t1", with_audio=False)})
    )
    assert drain(core)["upstream"] == []


def test_retrieve_is_off_when_disabled() -> None:
    core = new_session(retrieve_after_done=False)
    stream_assistant_audio(core, "item_a", [pcm(480)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    assert drain(core)["upstream"] == []


def test_a_server_that_skips_item_done_still_gets_one_retrieve_per_audio_item() -> None:
    core = new_session()
    core.receive_server_text(
        j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": "user_1", "previous_item_id": None})
    )
    core.receive_server_text(
        j(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "event_id": "t",
                "item_id": "user_1",
                "content_index": 0,
                "transcript": "hello",
            }
        )
    )
    stream_assistant_audio(core, "item_b", [pcm(240)])
    core.receive_server_text(
        j({"type": "response.output_item.done", "event_id": "y", "response_id": "r1", "item": assistant_item("item_b")})
    )
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "late", "item": assistant_item("item_b")}))
    ids = [json.loads(t)["item_id"] for t in drain(core)["upstream"]]
    assert ids == ["user_1", "item_b"]


def test_the_relays_retrieved_answer_is_swallowed_and_its_audio_saved() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(480)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    post_processed = pcm(480, value=5000)
    item = assistant_item("item_a")
    item["content"][0]["audio"] = b64(post_processed)
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "srv_1", "item": item}))
    out = drain(core)
    assert out["client"] == []
    assert [(e.dir, e.type) for e in out["log"]] == [("relay", "conversation.item.retrieved")]
    (save,) = out["save"]
    assert (save.item_id, save.pcm, save.format, save.source) == (
        "item_a",
        post_processed,
        AudioFormat("audio/pcm", 24000),
        "retrieved",
    )


def test_a_clients_retrieve_after_the_relays_gets_the_second_answer() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(480)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": "client_r"}))
    drain(core)
    item = assistant_item("item_a")
    item["content"][0]["audio"] = b64(pcm(480, 7))
    first = j({"type": "conversation.item.retrieved", "event_id": "srv_1", "item": item})
    second = j({"type": "conversation.item.retrieved", "event_id": "srv_2", "item": item})
    core.receive_server_text(first)
    assert drain(core)["client"] == []
    core.receive_server_text(second)
    assert drain(core)["client"] == [second]


def test_a_retrieve_error_matched_by_event_id_is_swallowed_and_logged_as_failed() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(480, 3)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    error = {
        "type": "error",
        "event_id": "s",
        "error": {"type": "invalid_request_error", "code": "x", "message": "m", "event_id": "relay_retrieve_item_a"},
    }
    core.receive_server_text(j(error))
    out = drain(core)
    assert out["client"] == []
    failed = [e for e in out["log"] if e.type == "relay.retrieve_failed"]
    assert failed[0].event["reason"] == "error"
    assert out["save"][0].source == "stream"
    assert out["save"][0].pcm == pcm(480, 3)


def test_a_retrieved_item_without_audio_is_saved_from_the_stream() -> None:
    core = new_session()
    chunks = [pcm(240, 11), pcm(240, 12)]
    stream_assistant_audio(core, "item_a", chunks)
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "s", "item": assistant_item("item_a")}))
    (save,) = drain(core)["save"]
    assert (save.source, save.pcm) == ("stream", b"".join(chunks))


def test_a_timed_out_retrieve_is_logged_and_the_late_answer_still_swallowed() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(240)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    core.retrieve_timed_out("item_a")
    out = drain(core)
    assert [e.event["reason"] for e in out["log"] if e.type == "relay.retrieve_failed"] == ["timeout"]
    assert out["save"][0].source == "stream"
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "s", "item": assistant_item("item_a")}))
    late = drain(core)
    assert late["client"] == [] and late["save"] == []


def test_a_clients_retrieve_after_the_relay_gave_up_on_a_silent_upstream_is_answered() -> None:
    """An upstream that never answers the relay's retrieve must not make a later client retrieve wait forever."""
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(240)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    core.retrieve_timed_out("item_a")
    core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": "client_r"}))
    drain(core)
    answer = j({"type": "conversation.item.retrieved", "event_id": "s", "item": assistant_item("item_a")})
    core.receive_server_text(answer)
    assert drain(core)["client"] == [answer]


def test_a_retrieve_lost_with_a_dropped_upstream_fails_at_once_and_never_takes_a_later_answer() -> None:
    core = new_session(resume=ResumePolicy())
    stream_assistant_audio(core, "item_a", [pcm(240, 5)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    core.upstream_dropped(1006, "connection lost")
    out = drain(core)
    failed = [e.event for e in out["log"] if e.type == "relay.retrieve_failed"]
    assert failed == [{"item_id": "item_a", "reason": "timeout", "error": "the upstream dropped before answering"}]
    assert "item_a" in core.to_disarm()
    assert [(s.source, s.pcm) for s in out["save"]] == [("stream", pcm(240, 5))]
    core.retrieve_timed_out("item_a")  # its timer, if it still fires, finds nothing to do
    assert drain(core)["log"] == []
    # On the new upstream (restored items keep their ids), the client's own retrieve gets its answer.
    core.begin_restore(1, 1.0)
    core.receive_server_text(j({"type": "session.updated", "event_id": "u", "session": {}}))
    core.finish_restore(1, 10.0)
    core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": "client_r"}))
    drain(core)
    answer = j({"type": "conversation.item.retrieved", "event_id": "s", "item": assistant_item("item_a")})
    core.receive_server_text(answer)
    assert drain(core)["client"] == [answer]


def test_a_timer_for_an_answered_retrieve_does_nothing() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(240)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "s", "item": assistant_item("item_a")}))
    drain(core)
    core.retrieve_timed_out("item_a")
    assert drain(core)["log"] == []


def test_user_item_audio_is_the_appended_span_between_vad_boundaries() -> None:
    core = new_session()
    # 1 s of audio in 100 ms chunks, each chunk a distinct sample value, at 24 kHz.
    for k in range(10):
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(2400, k + 1))}))
    core.receive_server_text(
        j({"type": "input_audio_buffer.speech_started", "event_id": "a", "audio_start_ms": 200, "item_id": "u1"})
    )
    core.receive_server_text(
        j({"type": "input_audio_buffer.speech_stopped", "event_id": "b", "audio_end_ms": 500, "item_id": "u1"})
    )
    core.receive_server_text(
        j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": "u1", "previous_item_id": None})
    )
    core.receive_server_text(
        j(
            {
                "type": "conversation.item.done",
                "event_id": "d",
                "item": {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]},
            }
        )
    )
    drain(core)
    core.session_closed()
    (save,) = drain(core)["save"]
    assert save.pcm == pcm(2400, 3) + pcm(2400, 4) + pcm(2400, 5)
    assert save.source == "stream"


def test_session_close_saves_unanswered_items_from_the_stream() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(100, 9)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    assert core.pending_retrieves == ["item_a"]
    core.session_closed()
    out = drain(core)
    assert [e.event for e in out["log"] if e.type == "relay.retrieve_failed"] == [
        {"item_id": "item_a", "reason": "session_closed"}
    ]
    assert out["save"][0].pcm == pcm(100, 9)
    assert core.pending_retrieves == []


def test_item_format_is_the_one_in_effect_when_the_item_appeared() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(160)])
    core.receive_server_text(
        j(
            {
                "type": "session.updated",
                "event_id": "u",
                "session": {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 44100}}}},
            }
        )
    )
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    stream_assistant_audio(core, "item_b", [pcm(160)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "y", "item": assistant_item("item_b")}))
    core.session_closed()
    saves = {s.item_id: s.format for s in drain(core)["save"]}
    assert saves == {"item_a": AudioFormat("audio/pcm", 24000), "item_b": AudioFormat("audio/pcm", 44100)}


def test_g711_formats_are_8khz_one_byte_per_sample() -> None:
    fmt = AudioFormat.from_config({"type": "audio/pcmu"}, AudioFormat())
    assert (fmt.type, fmt.rate, fmt.ms(8000)) == ("audio/pcmu", 8000, 1000.0)


def test_truncate_past_the_forwarded_audio_is_clamped_and_both_values_logged() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(2400), pcm(2400)])  # 200 ms at 24 kHz
    drain(core)
    original = {
        "type": "conversation.item.truncate",
        "event_id": "t1",
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 5000,
    }
    core.receive_client_text(j(original))
    out = drain(core)
    sent = json.loads(out["upstream"][0])
    assert sent["audio_end_ms"] == 200
    (entry,) = out["log"]
    assert entry.event["audio_end_ms"] == 200
    assert entry.client_event["audio_end_ms"] == 5000


def test_truncate_within_the_forwarded_audio_is_forwarded_unchanged() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(2400)])
    drain(core)
    text = j({"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 50})
    core.receive_client_text(text)
    assert drain(core)["upstream"] == [text]


def test_clamping_can_be_disabled() -> None:
    core = new_session(clamp_truncate=False)
    stream_assistant_audio(core, "item_a", [pcm(2400)])
    drain(core)
    text = j({"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 9999})
    core.receive_client_text(text)
    assert drain(core)["upstream"] == [text]


def test_pinned_fields_win_over_the_clients_session_update() -> None:
    pinned = {"instructions": "be brief", "audio": {"output": {"voice": "alena"}}}
    core = RelaySession(SessionPolicy(pinned_session=pinned))
    core.upstream_connected(1.0)
    start = drain(core)
    first = json.loads(start["upstream"][0])
    assert first["type"] == "session.update" and first["session"]["instructions"] == "be brief"
    assert [(e.dir, e.type) for e in start["log"]] == [("relay", "session.update")]
    client = {
        "type": "session.update",
        "session": {"instructions": "be chatty", "audio": {"output": {"voice": "x", "speed": 1.2}}},
    }
    core.receive_client_text(j(client))
    out = drain(core)
    sent = json.loads(out["upstream"][0])
    assert sent["session"] == {"instructions": "be brief", "audio": {"output": {"voice": "alena", "speed": 1.2}}}
    assert out["log"][0].client_event == client


def test_deep_merge_replaces_lists_and_merges_objects() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}, "d": 1}


def test_relay_events_are_sent_to_clients_only_when_asked() -> None:
    record = {
        "item_id": "i",
        "path": "/x",
        "url": "/u",
        "duration_ms": 1.0,
        "audio_bytes": 2,
        "rate": 24000,
        "source": "retrieved",
    }
    quiet = new_session()
    quiet.audio_saved(record)
    assert drain(quiet)["client"] == []
    chatty = new_session(relay_events=True)
    chatty.audio_saved(record)
    event = json.loads(drain(chatty)["client"][0])
    assert event == {
        "type": "relay.audio_saved",
        "event_id": "relay_saved_i",
        "item_id": "i",
        "url": "/u",
        "duration_ms": 1.0,
        "source": "retrieved",
    }


def test_nothing_is_forwarded_once_the_session_is_closing() -> None:
    core = new_session()
    core.session_closing()
    core.receive_client_text(j({"type": "response.create"}))
    core.receive_server_text(j({"type": "response.done", "event_id": "x"}))
    out = drain(core)
    assert out["upstream"] == [] and out["client"] == [] and out["log"] == []


def test_non_json_server_frames_are_forwarded_and_logged_as_such() -> None:
    core = new_session()
    core.receive_server_text("oops")
    out = drain(core)
    assert out["client"] == ["oops"]
    assert out["log"][0].event["invalid_json"] is True


def test_the_upstream_session_id_is_taken_from_session_created() -> None:
    core = RelaySession(SessionPolicy())
    core.upstream_connected(2.5)
    core.receive_server_text(j(session_created()))
    connected = drain(core)["log"][0]
    assert connected.type == "relay.upstream_connected"
    assert connected.event == {"upstream_session_id": "sess_up", "connect_ms": 2.5}


def test_logged_bytes_are_the_utf8_length_of_the_frame() -> None:
    core = new_session()
    text = json.dumps({"type": "response.output_text.delta", "event_id": "d", "delta": "Привет"}, ensure_ascii=False)
    core.receive_server_text(text)
    (entry,) = drain(core)["log"]
    assert entry.bytes == len(text.encode()) > len(text)


def test_items_whose_ids_are_unfit_for_file_names_are_never_saved() -> None:
    core = new_session()
    stream_assistant_audio(core, "../../etc/evil", [pcm(240)])
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("../../etc/evil")}))
    out = drain(core)
    assert out["upstream"] == [] and out["save"] == []
    assert [e.event for e in out["log"] if e.dir == "relay"] == [{"item_id": "../../etc/evil", "reason": "unsafe_item_id"}]
    core.session_closed()
    assert drain(core)["save"] == []


def test_a_client_retrieve_before_the_relays_keeps_both_answers_matched() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(240)])
    core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": "client_r"}))
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    item = assistant_item("item_a")
    item["content"][0]["audio"] = b64(pcm(240, 7))
    clients_answer = j({"type": "conversation.item.retrieved", "event_id": "srv_1", "item": item})
    relays_answer = j({"type": "conversation.item.retrieved", "event_id": "srv_2", "item": item})
    core.receive_server_text(clients_answer)
    first = drain(core)
    assert first["client"] == [clients_answer]
    assert [s.source for s in first["save"]] == ["retrieved"]  # a client's retrieve is saved too
    core.receive_server_text(relays_answer)
    second = drain(core)
    assert second["client"] == []
    assert core.pending_retrieves == []


def test_a_client_retrieve_answered_by_an_error_leaves_the_line() -> None:
    core = new_session()
    stream_assistant_audio(core, "item_a", [pcm(240)])
    core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": "client_r"}))
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": assistant_item("item_a")}))
    drain(core)
    error = {"type": "error", "event_id": "s", "error": {"type": "invalid_request_error", "code": "x", "message": "m", "event_id": "client_r"}}
    core.receive_server_text(j(error))
    assert drain(core)["client"] == [j(error)]
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "s2", "item": assistant_item("item_a")}))
    out = drain(core)
    assert out["client"] == []
    assert core.pending_retrieves == []


def test_logged_upstream_urls_hide_credentials_and_query_values_but_the_model() -> None:
    from relay.links.upstream import redact_url

    shown = redact_url("wss://user:pw@host:443/v1/realtime?token=SECRET&model=gpt://f/m")
    assert "SECRET" not in shown and "pw" not in shown
    assert shown == "wss://host:443/v1/realtime?token=****&model=gpt://f/m"


def test_appended_audio_is_kept_only_while_an_item_may_need_it() -> None:
    core = new_session()  # server VAD, prefix padding 300 ms by default
    core.receive_server_text(j({"type": "session.updated", "event_id": "u", "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "prefix_padding_ms": 300}}}}}))
    for _ in range(500):  # 10 s of silence in 20 ms chunks
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(480))}))
    kept_ms = sum(c.end_ms - c.start_ms for c in core._input_chunks)
    run_ms = RUN_BYTES * 1000 / 48000  # appends are kept (and trimmed) in runs
    assert kept_ms <= 300 + 2000 + run_ms  # prefix padding + lag margin, not the whole silence
    core.receive_server_text(j({"type": "input_audio_buffer.speech_started", "event_id": "a", "audio_start_ms": 9000, "item_id": "u1"}))
    for _ in range(250):  # 5 s more: the item's start must stay available
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(480, 5))}))
    assert core._input_chunks[0].start_ms <= 9000
    core.receive_server_text(j({"type": "input_audio_buffer.speech_stopped", "event_id": "b", "audio_end_ms": 14000, "item_id": "u1"}))
    core.receive_server_text(j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": "u1", "previous_item_id": None}))
    core.receive_server_text(j({"type": "conversation.item.input_audio_transcription.completed", "event_id": "t", "item_id": "u1", "content_index": 0, "transcript": "x"}))
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "r", "item": {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": b64(pcm(480))}]}}))
    assert drain(core)["save"]
    core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(480))}))
    assert core._input_chunks[0].start_ms >= 14000 - 2300  # the saved item's audio is let go


def test_manual_turns_keep_the_whole_uncommitted_buffer() -> None:
    core = new_session()
    core.receive_server_text(j({"type": "session.updated", "event_id": "u", "session": {"audio": {"input": {"turn_detection": None}}}}))
    sent = b"".join(pcm(480, k) for k in range(300))
    for k in range(300):
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(480, k))}))
    core.receive_server_text(j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": "m1", "previous_item_id": None}))
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "d", "item": {"id": "m1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}}))
    core.session_closed()
    (save,) = drain(core)["save"]
    assert save.pcm == sent


def test_with_retrieve_off_no_stream_audio_is_kept() -> None:
    core = new_session(retrieve_after_done=False)
    for _ in range(50):
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(480))}))
    stream_assistant_audio(core, "item_a", [pcm(480)] * 50)
    assert not core._input_chunks
    assert all(not item.output_audio for item in core._items.values())


def test_an_error_naming_a_relay_event_id_is_never_forwarded_even_when_the_client_used_the_prefix() -> None:
    # Every `relay_` event_id is the relay's (docs/forwarding.md): a client that borrows the prefix for its own
    # retrieve does not get the error answering it; it is logged as the relay's, and the retrieve leaves the line.
    core = new_session()
    core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "nope", "event_id": "relay_retrieve_nope"}))
    drain(core)
    error = {"type": "error", "event_id": "s", "error": {"type": "invalid_request_error", "code": "x", "message": "m", "event_id": "relay_retrieve_nope"}}
    core.receive_server_text(j(error))
    out = drain(core)
    assert out["client"] == []
    assert [(entry.dir, entry.type) for entry in out["log"]] == [("relay", "error")]
    assert "nope" not in core.retrieves and core.retrieves.client_event_ids == {}


def test_an_error_answering_the_pinned_session_update_is_logged_not_forwarded() -> None:
    core = RelaySession(SessionPolicy(pinned_session={"instructions": "be brief"}))
    core.upstream_connected(1.0)
    core.receive_server_text(j(session_created()))
    drain(core)
    error = {
        "type": "error",
        "event_id": "s",
        "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "m", "event_id": "relay_pinned_session"},
    }
    core.receive_server_text(j(error))
    out = drain(core)
    assert out["client"] == []
    assert [(entry.dir, entry.type, entry.event) for entry in out["log"]] == [("relay", "error", error)]
    # An error naming a client's own event_id still reaches the client.
    theirs = {**error, "error": {**error["error"], "event_id": "c1"}}
    core.receive_server_text(j(theirs))
    assert drain(core)["client"] == [j(theirs)]


def test_answered_client_retrieves_leave_no_bookkeeping_behind() -> None:
    core = new_session()
    for n in range(20):
        core.receive_client_text(j({"type": "conversation.item.retrieve", "item_id": "item_a", "event_id": f"c{n}"}))
        core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": f"s{n}", "item": assistant_item("item_a", with_audio=False)}))
    assert core.retrieves.client_event_ids == {}


# ---- stream deltas take a short path --------------------------------------------------------------------------

_ITEM_IDS = st.sampled_from(["item_a", "item_b", "relay_x"])
_server_events = st.one_of(
    st.builds(
        lambda kind, item_id, payload, extra: {"type": kind, "item_id": item_id, "delta": payload, **extra},
        st.sampled_from(
            ["response.output_audio.delta", "response.output_text.delta", "response.output_audio_transcript.delta"]
        ),
        _ITEM_IDS | st.integers() | st.none(),
        st.sampled_from(["AAAA", "AAA=", "", "!!"]) | st.integers(),
        st.dictionaries(st.sampled_from(["event_id", "response_id", "relay"]), st.text(max_size=8), max_size=2),
    ),
    st.builds(
        lambda item_id: {"type": "response.output_item.done", "item": {"id": item_id, "type": "message", "role": "assistant"}},
        _ITEM_IDS,
    ),
    st.builds(lambda item_id: {"type": "conversation.item.retrieved", "item": {"id": item_id}}, _ITEM_IDS),
    st.just({"type": "error", "error": {"event_id": "relay_retrieve_item_a", "code": "x"}}),
    st.just({"type": "relay.audio_saved", "item_id": "item_a"}),
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(_server_events, max_size=12), resume=st.booleans())
def test_a_stream_delta_has_the_same_outcome_on_its_short_path_as_on_the_general_one(
    events: list[dict[str, Any]], resume: bool
) -> None:
    """The short path only skips checks no stream delta can meet (relay answers, relay.* names, resume bookkeeping,
    retrieve triggers): with it off, every output and the items' bookkeeping are the same."""
    outcomes = []
    for short_path in (True, False):
        with pytest.MonkeyPatch.context() as monkeypatch:
            if not short_path:
                monkeypatch.setattr(session_module, "_STREAM_DELTAS", frozenset())
            core = RelaySession(SessionPolicy(resume=ResumePolicy() if resume else None))
            core.upstream_connected(1.0)
            core.receive_server_text(json.dumps({"type": "session.created", "event_id": "e0", "session": {"id": "s"}}))
            seen = []
            for event in events:
                core.receive_server_text(json.dumps(event))
                log = [(e.dir, e.type, e.event, e.bytes, e.audio_format) for e in core.to_log()]
                seen.append((core.to_client(), core.to_upstream(), log, core.to_arm()))
            items = {i: (it.has_audio, it.output_forwarded_bytes, it.output_audio_bytes) for i, it in core._items.items()}
            outcomes.append((seen, items, core.counts))
    assert outcomes[0] == outcomes[1]
