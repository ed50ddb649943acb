"""The schema oracle itself: it must reject what the SDK does not know, and exempt only the yandex extensions
(any PCM rate 8000..48000, `audio.input.languages`, `audio.output.role`)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.schema_oracle import known_server_event_types, validate_server_event


def session_event(rate: int = 24000, **audio_extra: Any) -> dict[str, Any]:
    fmt = {"type": "audio/pcm", "rate": rate}
    audio_in: dict[str, Any] = {"format": fmt, "turn_detection": None}
    audio_out: dict[str, Any] = {"format": dict(fmt), "voice": "alena"}
    if "languages" in audio_extra:
        audio_in["languages"] = audio_extra["languages"]
    if "role" in audio_extra:
        audio_out["role"] = audio_extra["role"]
    return {
        "type": "session.updated",
        "event_id": "event_1",
        "session": {"type": "realtime", "audio": {"input": audio_in, "output": audio_out}},
    }


def test_a_valid_event_passes_in_both_flavours() -> None:
    for flavour in ("yandex", "openai"):
        validate_server_event(session_event(), flavour)
        validate_server_event({"type": "input_audio_buffer.cleared", "event_id": "e"}, flavour)


def test_unknown_keys_fail_anywhere_in_the_tree() -> None:
    event = session_event()
    event["session"]["audio"]["input"]["format"]["channels"] = 1
    with pytest.raises(AssertionError, match=r"format\.channels"):
        validate_server_event(event, "yandex")
    with pytest.raises(AssertionError, match=r"event\.surprise"):
        validate_server_event({"type": "input_audio_buffer.cleared", "event_id": "e", "surprise": 1}, "openai")


def test_rates_other_than_24000_pass_only_in_the_yandex_flavour() -> None:
    validate_server_event(session_event(44100), "yandex")
    with pytest.raises(AssertionError, match="rate"):
        validate_server_event(session_event(44100), "openai")
    with pytest.raises(AssertionError, match="rate"):
        validate_server_event(session_event(96000), "yandex")


def test_yandex_extensions_pass_only_in_the_yandex_flavour() -> None:
    event = session_event(languages=["ru-RU"], role="good")
    validate_server_event(copy.deepcopy(event), "yandex")
    with pytest.raises(AssertionError, match="languages"):
        validate_server_event(event, "openai")
    with pytest.raises(AssertionError, match="languages"):
        validate_server_event(session_event(languages="ru-RU"), "yandex")


def test_missing_required_fields_fail() -> None:
    with pytest.raises(AssertionError, match="event_id"):
        validate_server_event({"type": "input_audio_buffer.cleared"}, "yandex")
    with pytest.raises(AssertionError, match="usage"):
        validate_server_event(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "event_id": "e",
                "item_id": "i",
                "content_index": 0,
                "transcript": "t",
            },
            "openai",
        )


@pytest.mark.parametrize("event", [{"type": "no.such.event", "event_id": "e"}, {"event_id": "e"}, []])
def test_unknown_types_and_non_objects_fail(event: Any) -> None:
    with pytest.raises(AssertionError):
        validate_server_event(event, "yandex")


def test_known_types_cover_the_voice_turn() -> None:
    assert {
        "session.created",
        "conversation.item.added",
        "conversation.item.retrieved",
        "response.output_audio.delta",
        "response.done",
    } <= known_server_event_types()
