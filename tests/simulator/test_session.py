"""The simulator's protocol state machine (pure, no sockets): turns, replies, items, errors, knobs.

Every event emitted here is validated against the SDK models by the Driver (tests/support/sim_fixtures.py).
"""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from audio import pcm
from relay.simulator import replies
from relay.simulator.knobs import Knobs
from tests.support.sim_fixtures import Driver, audio_of, b64, first, types
from tests.support.speechlike import synthesize

RATE = 24000


def voice_turn(driver: Driver, seed: int = 0, utterance_s: float = 1.0) -> list[dict]:
    clip = synthesize(RATE, utterances=(utterance_s,), seed=seed)
    return driver.append(clip.pcm, RATE)


def test_session_created_is_first_and_carries_the_full_config() -> None:
    driver = Driver("yandex")
    assert types(driver.created) == ["session.created"]
    session = driver.created[0]["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt://test/model"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["output"]["voice"]
    assert session["output_modalities"] == ["audio"]


def test_voice_turn_emits_the_documented_sequence() -> None:
    driver = Driver("yandex")
    events = voice_turn(driver)
    expected_prefix = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert types(events)[: len(expected_prefix)] == expected_prefix
    tail = [t for t in types(events) if not t.endswith(".delta")][len(expected_prefix) :]
    assert tail == [
        "response.output_audio.done",
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    started, stopped = events[0], events[1]
    assert started["item_id"] == stopped["item_id"] == events[2]["item_id"] == events[3]["item"]["id"]
    done = first(events, "response.done")["response"]
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"] > 0


def test_user_item_audio_is_exactly_the_appended_samples_between_start_and_end() -> None:
    driver = Driver("yandex")
    clip = synthesize(RATE, utterances=(0.9,), seed=3)
    events = driver.append(clip.pcm, RATE)
    start = first(events, "input_audio_buffer.speech_started")["audio_start_ms"]
    end = first(events, "input_audio_buffer.speech_stopped")["audio_end_ms"]
    item_id = first(events, "input_audio_buffer.committed")["item_id"]
    stored = driver.session.items[item_id]
    lo, hi = math.ceil(start * RATE / 1000), math.ceil(end * RATE / 1000)
    assert bytes(stored.audio or b"") == clip.pcm[lo * 2 : hi * 2]


def test_transcription_completed_describes_the_utterance_with_usage() -> None:
    driver = Driver("yandex")
    events = voice_turn(driver, utterance_s=1.2)
    done = first(events, "conversation.item.input_audio_transcription.completed")
    assert done["transcript"].startswith("[speech ") and done["transcript"].endswith(" s]")
    spoken = float(done["transcript"][len("[speech ") : -len(" s]")])
    assert 1.0 <= spoken <= 1.5
    assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] > spoken


def test_echo_reply_is_a_tone_then_the_utterance_at_the_output_rate() -> None:
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}})
    events = voice_turn(driver, seed=5)
    user_id = first(events, "input_audio_buffer.committed")["item_id"]
    user_audio = bytes(driver.session.items[user_id].audio or b"")
    reply = audio_of(events)
    expected = pcm.resample_pcm16(user_audio, RATE, 16000)
    lead = replies.ECHO_LEAD_MS * 16000 // 1000
    got = pcm.pcm16_to_float(reply)[lead : lead + len(expected) // 2]
    want = pcm.pcm16_to_float(expected)[: len(got)]
    correlation = float(np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert correlation > 0.99
    tone = pcm.pcm16_to_float(reply)[: replies.TONE_MS * 16000 // 1000]
    spectrum = np.abs(np.fft.rfft(tone))
    assert abs(np.argmax(spectrum) * 16000 / len(tone) - replies.TONE_HZ) < 20


def test_audio_deltas_are_between_20_and_100_ms() -> None:
    driver = Driver("yandex")
    events = voice_turn(driver)
    deltas = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) > 5
    for chunk in deltas[:-1]:
        assert 20 <= pcm.duration_ms(len(chunk), RATE) <= 100


def test_yandex_flavour_streams_text_deltas_and_openai_transcript_deltas() -> None:
    for flavour, delta, done in (
        ("yandex", "response.output_text.delta", "response.output_text.done"),
        ("openai", "response.output_audio_transcript.delta", "response.output_audio_transcript.done"),
    ):
        driver = Driver(flavour)
        events = voice_turn(driver)
        text = "".join(e["delta"] for e in events if e["type"] == delta)
        assert text == first(events, done).get("text", first(events, done).get("transcript"))
        assert text.startswith("Echo of [speech")
        other = {"response.output_text.delta", "response.output_audio_transcript.delta"} - {delta}
        assert not other & set(types(events))


def test_text_turn_gets_a_text_reply_spoken_when_audio_is_asked() -> None:
    driver = Driver("yandex")
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]},
        }
    )
    driver.send({"type": "response.create"})
    events = driver.finish()
    assert first(events, "response.output_text.done")["text"] == 'You said: "hi there".'
    assert audio_of(events)


def test_a_text_of_millions_of_words_is_answered_whole_but_spoken_for_a_bounded_time() -> None:
    """A client's 12 MB text once made the simulator synthesize days of audio until the OOM killer came."""
    words = "a b " * 1_000_000
    driver = Driver("yandex")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}
    driver.send({"type": "conversation.item.create", "item": item})
    driver.send({"type": "response.create"})
    events = driver.finish()
    assert first(events, "response.output_text.done")["text"] == f'You said: "{words}".'
    spoken = audio_of(events)
    assert len(spoken) == len(replies.speak_text("a " * replies.MAX_SPOKEN_WORDS, 24000))
    assert len(spoken) / 2 / 24000 < 120  # seconds


def test_text_only_modality_gets_text_deltas_without_audio() -> None:
    driver = Driver("openai")
    driver.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]},
        }
    )
    events = driver.send({"type": "response.create"}) + driver.finish()
    assert "response.output_audio.delta" not in types(events)
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == 'You said: "ping".'
    item = first(events, "response.output_item.done")["item"]
    assert item["content"] == [{"type": "output_text", "text": 'You said: "ping".'}]


def test_response_create_on_an_empty_conversation_greets() -> None:
    driver = Driver("yandex")
    events = driver.send({"type": "response.create"}) + driver.finish()
    assert first(events, "response.output_text.done")["text"] == replies.GREETING
    assert first(events, "response.done")["response"]["status"] == "completed"


def test_response_modalities_override_from_response_create() -> None:
    driver = Driver("yandex")
    events = driver.send({"type": "response.create", "response": {"modalities": ["text"]}}) + driver.finish()
    assert "response.output_audio.delta" not in types(events)


def test_response_create_while_one_is_live_is_an_error() -> None:
    driver = Driver("yandex")
    driver.send({"type": "response.create"})
    events = driver.send({"type": "response.create", "event_id": "second"})
    error = first(events, "error")["error"]
    assert error["code"] == "conversation_already_has_active_response" and error["event_id"] == "second"


TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}]


def _say(driver: Driver, text: str) -> list[dict]:
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    return driver.send({"type": "response.create"}) + driver.finish()


def test_text_asking_to_call_a_configured_tool_gets_a_function_call() -> None:
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"tools": TOOLS}})
    events = _say(driver, "please call get_weather for Moscow")
    item = first(events, "response.output_item.done")["item"]
    assert item["type"] == "function_call" and item["name"] == "get_weather" and item["arguments"] == "{}"
    assert first(events, "response.function_call_arguments.done")["call_id"] == item["call_id"]
    assert first(events, "response.done")["response"]["output"][0]["type"] == "function_call"


def test_function_call_output_and_response_create_continue_the_turn() -> None:
    driver = Driver("openai")
    driver.send({"type": "session.update", "session": {"type": "realtime", "tools": TOOLS}})
    call = first(_say(driver, "call get_weather"), "response.output_item.done")["item"]
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": '{"t": 21}'},
        }
    )
    events = driver.send({"type": "response.create"}) + driver.finish()
    assert first(events, "response.output_audio_transcript.done")["transcript"] == 'Tool get_weather returned: {"t": 21}'


def test_the_answer_after_several_calls_names_every_output_in_order() -> None:
    driver = Driver("openai")
    clock = {"type": "function", "name": "get_time", "description": "Time", "parameters": {"type": "object"}}
    driver.send({"type": "session.update", "session": {"type": "realtime", "tools": [*TOOLS, clock]}})
    events = _say(driver, "call get_weather and call get_time")
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    for call, output in zip(calls, ('{"t": 21}', '"noon"'), strict=True):
        driver.send(
            {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call["call_id"], "output": output}}
        )
    events = driver.send({"type": "response.create"}) + driver.finish()
    transcript = first(events, "response.output_audio_transcript.done")["transcript"]
    assert transcript == 'Tool get_weather returned: {"t": 21} Tool get_time returned: "noon"'


def test_unconfigured_tool_names_are_not_called() -> None:
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"tools": TOOLS}})
    events = _say(driver, "call launch_rockets")
    assert first(events, "response.output_item.done")["item"]["type"] == "message"


def test_audio_turns_call_tools_only_with_the_tool_on_audio_knob() -> None:
    plain = Driver("yandex")
    plain.send({"type": "session.update", "session": {"tools": TOOLS}})
    assert first(voice_turn(plain), "response.output_item.done")["item"]["type"] == "message"
    knobbed = Driver("yandex", Knobs(tool_on_audio=True))
    knobbed.send({"type": "session.update", "session": {"tools": TOOLS}})
    item = first(voice_turn(knobbed), "response.output_item.done")["item"]
    assert item["type"] == "function_call" and item["name"] == "get_weather"


def test_speech_during_a_response_cancels_it() -> None:
    driver = Driver("yandex")
    first_turn = synthesize(RATE, utterances=(1.0,), seed=1, tail_s=0.6)
    events = driver.append(first_turn.pcm, RATE, finish_responses=False)
    assert driver.session.responding
    events += driver.step() + driver.step()
    barge = synthesize(RATE, utterances=(0.8,), seed=2)
    events += driver.append(barge.pcm, RATE, finish_responses=False)
    dones = [e for e in events if e["type"] == "response.done"]
    assert dones[0]["response"]["status"] == "cancelled"
    assert dones[0]["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    started = [i for i, e in enumerate(events) if e["type"] == "input_audio_buffer.speech_started"]
    assert started[1] < events.index(dones[0])
    assert dones[0]["response"]["output"][0]["status"] == "incomplete"


def test_response_cancel_cancels_the_live_response() -> None:
    driver = Driver("yandex")
    driver.send({"type": "response.create"})
    driver.step()
    events = driver.send({"type": "response.cancel"})
    done = first(events, "response.done")["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    assert not driver.session.responding


def test_response_cancel_without_a_live_response_is_an_error() -> None:
    driver = Driver("yandex")
    error = first(driver.send({"type": "response.cancel", "event_id": "c1"}), "error")["error"]
    assert error["code"] == "response_cancel_not_active" and error["event_id"] == "c1"


def _assistant_audio_item(driver: Driver) -> tuple[str, float]:
    events = voice_turn(driver)
    item = first(events, "response.output_item.done")["item"]
    stored = driver.session.items[item["id"]]
    return item["id"], stored.audio_ms()


def test_truncate_cuts_the_item_audio() -> None:
    driver = Driver("yandex")
    item_id, _ = _assistant_audio_item(driver)
    events = driver.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 300})
    assert first(events, "conversation.item.truncated") | {"event_id": None} == {
        "type": "conversation.item.truncated",
        "event_id": None,
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 300,
    }
    assert driver.session.items[item_id].audio_ms() == 300


def test_truncate_beyond_the_item_audio_is_an_error() -> None:
    driver = Driver("yandex")
    item_id, audio_ms = _assistant_audio_item(driver)
    events = driver.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": int(audio_ms) + 50,
            "event_id": "t1",
        }
    )
    error = first(events, "error")["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "audio_end_ms", "t1")
    assert driver.session.items[item_id].audio_ms() == audio_ms


@pytest.mark.parametrize(
    "event",
    [
        {"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 0},
        {"type": "conversation.item.delete", "item_id": "nope"},
        {"type": "conversation.item.retrieve", "item_id": "nope"},
        {"type": "conversation.item.retrieve"},
    ],
)
def test_unknown_items_get_an_error_with_the_client_event_id(event: dict) -> None:
    driver = Driver("yandex")
    error = first(driver.send({**event, "event_id": "evt_9"}), "error")["error"]
    assert error["event_id"] == "evt_9" and error["param"] == "item_id"
    assert error["type"] == "invalid_request_error"


def test_delete_removes_the_item() -> None:
    driver = Driver("yandex")
    item_id, _ = _assistant_audio_item(driver)
    assert (
        first(driver.send({"type": "conversation.item.delete", "item_id": item_id}), "conversation.item.deleted")["item_id"]
        == item_id
    )
    assert item_id not in driver.session.items
    assert first(driver.send({"type": "conversation.item.retrieve", "item_id": item_id}), "error")


def test_retrieve_returns_the_full_audio_peak_normalized() -> None:
    driver = Driver("yandex")
    events = voice_turn(driver)
    for item_id in (
        first(events, "input_audio_buffer.committed")["item_id"],
        first(events, "response.output_item.done")["item"]["id"],
    ):
        retrieved = first(driver.send({"type": "conversation.item.retrieve", "item_id": item_id}), "conversation.item.retrieved")
        audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
        original = bytes(driver.session.items[item_id].audio or b"")
        assert len(audio) == len(original)
        peak = np.max(np.abs(pcm.pcm16_to_float(audio)))
        assert abs(20 * np.log10(peak) - replies.PEAK_DBFS) < 0.05
        assert audio != original
        assert driver.archive.retrieved_pcm(item_id) == (audio, RATE)


def test_retrieve_fail_knob_answers_with_an_error() -> None:
    driver = Driver("yandex", Knobs(retrieve_fail=True))
    item_id, _ = _assistant_audio_item(driver)
    error = first(driver.send({"type": "conversation.item.retrieve", "item_id": item_id, "event_id": "r1"}), "error")["error"]
    assert error["event_id"] == "r1" and error["type"] == "server_error"


def test_retrieve_no_audio_knob_keeps_the_transcript_but_drops_audio() -> None:
    driver = Driver("yandex", Knobs(retrieve_no_audio=True))
    item_id, _ = _assistant_audio_item(driver)
    item = first(driver.send({"type": "conversation.item.retrieve", "item_id": item_id}), "conversation.item.retrieved")["item"]
    assert "audio" not in item["content"][0] and item["content"][0]["transcript"].startswith("Echo of")


def test_manual_turns_when_turn_detection_is_null() -> None:
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    clip = synthesize(RATE, utterances=(0.7,), seed=4)
    events = driver.append(clip.pcm, RATE)
    assert events == []  # no VAD, no automatic response
    committed = driver.send({"type": "input_audio_buffer.commit"})
    assert types(committed)[:3] == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    item_id = committed[0]["item_id"]
    assert bytes(driver.session.items[item_id].audio or b"") == clip.pcm
    events = driver.send({"type": "response.create"}) + driver.finish()
    assert first(events, "response.done")["response"]["status"] == "completed"


def test_commit_of_less_than_100_ms_is_an_error() -> None:
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    driver.append(bytes(RATE // 20 * 2), RATE)  # 50 ms
    error = first(driver.send({"type": "input_audio_buffer.commit", "event_id": "k"}), "error")["error"]
    assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "k"


def test_clear_empties_the_buffer() -> None:
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    driver.append(bytes(RATE * 2), RATE)
    assert types(driver.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]
    assert first(driver.send({"type": "input_audio_buffer.commit"}), "error")


@pytest.mark.parametrize(
    ("audio", "param"),
    [("not base64!!", "audio"), (b64(b"\x01\x02\x03"), "audio"), (None, "audio"), (12, "audio")],
)
def test_bad_appends_get_an_error(audio: object, param: str) -> None:
    driver = Driver("yandex")
    event = {"type": "input_audio_buffer.append", "event_id": "a1"}
    if audio is not None:
        event["audio"] = audio
    error = first(driver.send(event), "error")["error"]
    assert error["param"] == param and error["event_id"] == "a1"


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "[1, 2]",
        '"text"',
        "{}",
        '{"type": 5}',
        '{"type": "nope.nope"}',
        '{"type": "output_audio_buffer.clear"}',
        "\x00\xff",
    ],
)
def test_garbage_frames_get_an_error_and_the_session_goes_on(frame: str) -> None:
    driver = Driver("yandex")
    assert types(driver.send_text(frame)) == ["error"]
    assert types(driver.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]


def test_unknown_event_type_error_names_param_type_and_the_event_id() -> None:
    driver = Driver("openai")
    error = driver.send({"type": "session.destroy", "event_id": "e42"})[0]["error"]
    assert error == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "param": "type",
        "event_id": "e42",
        "message": error["message"],
    }


def test_binary_frames_get_an_error() -> None:
    driver = Driver("yandex")
    driver.session.receive_binary()
    assert types(driver.session.drain()) == ["error"]


@pytest.mark.parametrize(
    "item",
    [
        None,
        {"type": "message", "role": "robot", "content": [{"type": "input_text", "text": "x"}]},
        {"type": "message", "role": "user", "content": []},
        {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": 5}]},
        {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "%%%"}]},
        {"type": "function_call_output", "output": "x"},
        {"type": "reasoning"},
    ],
)
def test_bad_items_are_rejected(item: object) -> None:
    driver = Driver("yandex")
    event = {"type": "conversation.item.create", "event_id": "i1"}
    if item is not None:
        event["item"] = item
    error = first(driver.send(event), "error")["error"]
    assert error["event_id"] == "i1"
    assert not driver.session.items


def test_item_create_inserts_after_previous_item_id() -> None:
    driver = Driver("yandex")
    a = first(
        driver.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
            }
        ),
        "conversation.item.added",
    )["item"]["id"]
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "c"}]},
        }
    )
    added = first(
        driver.send(
            {
                "type": "conversation.item.create",
                "previous_item_id": a,
                "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "b"}]},
            }
        ),
        "conversation.item.added",
    )
    assert added["previous_item_id"] == a
    texts = [s.item["content"][0]["text"] for s in driver.session.items.values()]
    assert texts == ["a", "b", "c"]
    error = first(
        driver.send(
            {
                "type": "conversation.item.create",
                "previous_item_id": "missing",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "d"}]},
            }
        ),
        "error",
    )
    assert error["error"]["param"] == "previous_item_id"


def test_user_audio_item_created_by_the_client_is_echoed() -> None:
    driver = Driver("yandex")
    clip = synthesize(RATE, utterances=(0.6,), seed=8, lead_s=0.1, tail_s=0.1)
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": b64(clip.pcm)}]},
        }
    )
    events = driver.send({"type": "response.create"}) + driver.finish()
    reply = audio_of(events)
    assert len(reply) == len(pcm.resample_pcm16(clip.pcm, RATE, RATE)) + replies.ECHO_LEAD_MS * RATE // 1000 * 2


def test_omit_item_done_knob_sends_no_item_done() -> None:
    driver = Driver("yandex", Knobs(omit_item_done=True))
    assert "conversation.item.done" not in types(voice_turn(driver))


def test_item_created_name_knob_renames_item_added() -> None:
    driver = Driver("yandex", Knobs(item_created_name="created"))
    names = types(voice_turn(driver))
    assert "conversation.item.created" in names and "conversation.item.added" not in names


def test_double_session_updated_knob_answers_twice() -> None:
    driver = Driver("yandex", Knobs(double_session_updated=True))
    events = driver.send({"type": "session.update", "session": {"instructions": "x"}})
    assert types(events) == ["session.updated", "session.updated"]
    assert events[0]["session"] == events[1]["session"]


def test_inject_error_knob_follows_the_nth_event() -> None:
    driver = Driver("yandex", Knobs(inject_error=1))
    assert types(driver.created) == ["session.created", "error"]
    assert driver.created[1]["error"]["code"] == "injected_error"


def test_g711_input_and_output_in_the_openai_flavour() -> None:
    driver = Driver("openai")
    driver.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcma"}}},
            },
        }
    )
    clip = synthesize(8000, utterances=(0.8,), seed=6)
    events: list[dict] = []
    wire = pcm.ulaw_encode(clip.pcm)
    for i in range(0, len(wire), 160):
        events += driver.send({"type": "input_audio_buffer.append", "audio": b64(wire[i : i + 160])})
        events += driver.finish()
    user_id = first(events, "input_audio_buffer.committed")["item_id"]
    assert driver.session.items[user_id].fmt.rate == 8000  # type: ignore[union-attr]
    reply_pcm = pcm.alaw_decode(audio_of(events))
    expected = replies.ECHO_LEAD_MS * 8 + len(driver.session.items[user_id].audio or b"") // 2
    assert len(reply_pcm) // 2 == expected
    retrieved = first(driver.send({"type": "conversation.item.retrieve", "item_id": user_id}), "conversation.item.retrieved")[
        "item"
    ]["content"][0]["audio"]
    assert len(base64.b64decode(retrieved)) == len(driver.session.items[user_id].audio or b"") // 2  # 1 byte/sample
    assert driver.archive.retrieved_pcm(user_id) == (pcm.ulaw_decode(base64.b64decode(retrieved)), 8000)


def test_manual_mode_keeps_only_the_newest_uncommitted_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.simulator import turns as session_module

    monkeypatch.setattr(session_module, "MAX_BUFFER_S", 1)
    driver = Driver("yandex")
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    clip = synthesize(RATE, utterances=(1.5,), seed=13)
    driver.append(clip.pcm, RATE)
    item_id = driver.send({"type": "input_audio_buffer.commit"})[0]["item_id"]
    assert bytes(driver.session.items[item_id].audio or b"") == clip.pcm[-RATE * 2 :]
