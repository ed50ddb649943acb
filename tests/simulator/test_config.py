"""`session.update` in the simulator: patch semantics, validation errors, and the two flavours' rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.sim_fixtures import Driver, first, types


def update(driver: Driver, session: Any, event_id: str = "upd") -> list[dict]:
    return driver.send({"type": "session.update", "event_id": event_id, "session": session})


def config(driver: Driver) -> dict:
    return copy.deepcopy(driver.session.config)


def test_session_update_is_a_patch_answered_with_the_full_config() -> None:
    driver = Driver("yandex")
    before = config(driver)
    events = update(driver, {"instructions": "Be brief."})
    assert types(events) == ["session.updated"]
    after = events[0]["session"]
    assert after["instructions"] == "Be brief."
    assert after["audio"] == before["audio"] and after["tools"] == before["tools"]


def test_turn_detection_fields_merge_into_the_current_ones() -> None:
    driver = Driver("yandex")
    after = update(driver, {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}}})
    td = after[0]["session"]["audio"]["input"]["turn_detection"]
    assert td["threshold"] == 0.7 and td["silence_duration_ms"] == 400 and td["prefix_padding_ms"] == 300


def test_rate_change_applies_to_input_and_output_independently() -> None:
    driver = Driver("yandex")
    session = update(driver, {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}})[0]["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 44100}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


# Unknown keys are refused by the openai flavour only: see tests/test_sim_leniency.py.
BAD_UPDATES = [
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 7999}}}}, "session.audio.input.format.rate"),
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 48001}}}}, "session.audio.input.format.rate"),
    ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": "24000"}}}}, "session.audio.output.format.rate"),
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000.5}}}}, "session.audio.input.format.rate"),
    ({"audio": {"input": {"format": {"type": "audio/opus"}}}}, "session.audio.input.format.type"),
    ({"audio": {"input": {"format": "pcm16"}}}, "session.audio.input.format"),
    ({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}, "session.audio.input.turn_detection.type"),
    (
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}}},
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": -1}}}},
        "session.audio.input.turn_detection.silence_duration_ms",
    ),
    (
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "prefix_padding_ms": "300"}}}},
        "session.audio.input.turn_detection.prefix_padding_ms",
    ),
    ({"audio": {"input": {"turn_detection": "on"}}}, "session.audio.input.turn_detection"),
    ({"audio": {"output": {"voice": 7}}}, "session.audio.output.voice"),
    ({"audio": {"output": {"speed": 9}}}, "session.audio.output.speed"),
    ({"output_modalities": ["video"]}, "session.output_modalities"),
    ({"output_modalities": "audio"}, "session.output_modalities"),
    ({"instructions": 5}, "session.instructions"),
    ({"tools": {"name": "x"}}, "session.tools"),
    ({"tools": [{"type": "function"}]}, "session.tools[0].name"),
    ({"tools": [{"type": "code_interpreter", "name": "x"}]}, "session.tools[0].type"),
    ({"tool_choice": "sometimes"}, "session.tool_choice"),
    ({"max_output_tokens": 0}, "session.max_output_tokens"),
    ({"type": "transcription"}, "session.type"),
    ("not an object", "session"),
]


@pytest.mark.parametrize("flavour", ["yandex", "openai"])
@pytest.mark.parametrize(("patch", "param"), BAD_UPDATES)
def test_invalid_updates_get_an_error_and_change_nothing(flavour: str, patch: Any, param: str) -> None:
    driver = Driver(flavour)
    if isinstance(patch, dict) and flavour == "openai":
        patch = {"type": "realtime", **patch} if "type" not in patch else patch
    before = config(driver)
    events = update(driver, patch, event_id="bad_1")
    assert types(events) == ["error"]
    error = events[0]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["event_id"] == "bad_1"
    assert error["param"] == param, error
    assert config(driver) == before


def test_session_update_without_session_is_an_error() -> None:
    driver = Driver("yandex")
    error = driver.send({"type": "session.update", "event_id": "u"})[0]["error"]
    assert error["param"] == "session" and error["event_id"] == "u"


def test_yandex_accepts_updates_without_session_type() -> None:
    driver = Driver("yandex")
    assert types(update(driver, {"instructions": "x"})) == ["session.updated"]


def test_openai_requires_session_type_realtime() -> None:
    driver = Driver("openai")
    error = update(driver, {"instructions": "x"})[0]["error"]
    assert error["param"] == "session.type" and error["code"] == "missing_required_parameter"
    assert types(update(driver, {"type": "realtime", "instructions": "x"})) == ["session.updated"]


def test_yandex_echoes_languages_role_and_any_voice() -> None:
    driver = Driver("yandex")
    session = update(
        driver, {"audio": {"input": {"languages": ["ru-RU", "kk-KZ"]}, "output": {"voice": "dasha", "role": "good"}}}
    )[0]["session"]
    assert session["audio"]["input"]["languages"] == ["ru-RU", "kk-KZ"]
    assert session["audio"]["output"]["voice"] == "dasha" and session["audio"]["output"]["role"] == "good"


def test_openai_rejects_the_yandex_extensions() -> None:
    driver = Driver("openai")
    for patch, param in (
        ({"input": {"languages": ["ru-RU"]}}, "session.audio.input.languages"),
        ({"output": {"role": "good"}}, "session.audio.output.role"),
    ):
        error = update(driver, {"type": "realtime", "audio": patch})[0]["error"]
        assert error["param"] == param and error["code"] == "unknown_parameter"


def test_yandex_accepts_what_its_own_examples_send() -> None:
    # From yandex-ai-studio-api-examples realtime/voice_agent.py: channels in the format, both modalities,
    # a turn_detection without prefix padding, and tools whose parameters are the string "{}" or missing.
    driver = Driver("yandex")
    session = update(
        driver,
        {
            "instructions": "Ты ассистент.",
            "output_modalities": ["text", "audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 44100, "channels": 1},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 400},
                },
                "output": {"format": {"type": "audio/pcm", "rate": 44100}, "voice": "dasha"},
            },
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Погода",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
                {"type": "function", "name": "web_search", "description": "Поиск", "parameters": "{}"},
                {"type": "function", "name": "file_search"},
            ],
        },
    )[0]["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 44100}  # channels not echoed
    assert [t["name"] for t in session["tools"]] == ["get_weather", "web_search", "file_search"]
    assert session["tools"][1]["parameters"] == "{}"


def test_yandex_rejects_stereo() -> None:
    driver = Driver("yandex")
    error = update(driver, {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000, "channels": 2}}}})
    assert error[0]["error"]["param"] == "session.audio.input.format.channels"


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_yandex_accepts_any_rate_in_range(rate: int) -> None:
    driver = Driver("yandex")
    fmt = {"type": "audio/pcm", "rate": rate}
    session = update(driver, {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}})[0]["session"]
    assert session["audio"]["input"]["format"]["rate"] == session["audio"]["output"]["format"]["rate"] == rate


def test_openai_accepts_only_24000_and_g711() -> None:
    driver = Driver("openai")
    error = update(driver, {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
    assert error[0]["error"]["param"] == "session.audio.input.format.rate"
    for kind in ("audio/pcmu", "audio/pcma"):
        session = update(driver, {"type": "realtime", "audio": {"input": {"format": {"type": kind}}}})[0]["session"]
        assert session["audio"]["input"]["format"] == {"type": kind}


def test_yandex_rejects_g711() -> None:
    driver = Driver("yandex")
    error = update(driver, {"audio": {"input": {"format": {"type": "audio/pcmu"}}}})[0]["error"]
    assert error["param"] == "session.audio.input.format.type"


def test_openai_rejects_both_modalities_at_once() -> None:
    driver = Driver("openai")
    error = update(driver, {"type": "realtime", "output_modalities": ["text", "audio"]})[0]["error"]
    assert error["param"] == "session.output_modalities"


@pytest.mark.parametrize(
    ("response", "param"),
    [
        ({"output_modalities": ["smell"]}, "response.output_modalities"),
        ("x", "response"),
        ({"conversation": "elsewhere"}, "response.conversation"),
        ({"metadata": {"a": 1}}, "response.metadata"),
    ],
)
def test_bad_response_create_params_are_rejected(response: Any, param: str) -> None:
    driver = Driver("openai")
    error = first(driver.send({"type": "response.create", "event_id": "rc", "response": response}), "error")["error"]
    assert error["param"] == param and error["event_id"] == "rc"
    assert not driver.session.responding


def test_openai_rejects_unknown_response_params_yandex_ignores_them() -> None:
    strict = Driver("openai")
    assert first(strict.send({"type": "response.create", "response": {"modalities": ["text"]}}), "error")
    lenient = Driver("yandex")
    events = lenient.send({"type": "response.create", "response": {"modalities": ["text"], "conversation": "default"}})
    assert types(events)[0] == "response.created"
