"""The simulator is as lenient as Yandex about unknown keys in `session.update`, and the openai flavour is not.

Yandex's own example clients send keys the reference does not document (one a misspelling); Yandex accepts and
ignores them. The yandex flavour must do the same at any depth of `session` (no error, not echoed); the openai
flavour keeps answering `unknown_parameter` naming the key.
"""

from __future__ import annotations

from typing import Any

import pytest

from relay.simulator import SimulatorOptions, start_simulator
from tests.support.sim_fixtures import Driver, connect, types

# (patch carrying one unknown key, the dotted path of that key). Known siblings ride along so the test also
# proves the known part of the patch still applies.
UNKNOWN_AT_DEPTH: list[tuple[dict[str, Any], str]] = [
    ({"instructions": "hi", "temperatur": 0.8}, "session.temperatur"),
    ({"audio": {"mixer": {"gain": 2}, "input": {"noise_reduction": None}}}, "session.audio.mixer"),
    ({"audio": {"input": {"languages_": ["ru-RU"], "noise_reduction": None}}}, "session.audio.input.languages_"),
    ({"audio": {"output": {"speed": 1.0, "pitch": 3}}}, "session.audio.output.pitch"),
    (
        {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000, "bits": 16}}}},
        "session.audio.input.format.bits",
    ),
    (
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.6, "bogus": {"x": [1]}}}}},
        "session.audio.input.turn_detection.bogus",
    ),
    (
        {"audio": {"input": {"transcription": {"model": "whisper-1", "promt": "x"}}}},
        "session.audio.input.transcription.promt",
    ),
    (
        {"tools": [{"type": "function", "name": "get_time", "parameters": {"type": "object"}, "strict": True}]},
        "session.tools[0].strict",
    ),
    ({"tool_choice": {"type": "function", "name": "get_time", "why": "x"}}, "session.tool_choice.why"),
]

UNKNOWN_NAMES = {path.rsplit(".", 1)[-1] for _, path in UNKNOWN_AT_DEPTH}


def _keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for child in value.values() for k in _keys_anywhere(child)}
    if isinstance(value, list):
        return {k for child in value for k in _keys_anywhere(child)}
    return set()


def _with_type(patch: dict[str, Any]) -> dict[str, Any]:
    return {"type": "realtime", **patch}


@pytest.mark.parametrize(("patch", "path"), UNKNOWN_AT_DEPTH, ids=[p for _, p in UNKNOWN_AT_DEPTH])
def test_yandex_accepts_and_ignores_an_unknown_key_at_any_depth(patch: dict[str, Any], path: str) -> None:
    driver = Driver("yandex")
    if "tool_choice" in patch:
        driver.send({"type": "session.update", "session": {"tools": [{"type": "function", "name": "get_time"}]}})
    events = driver.send({"type": "session.update", "event_id": "upd", "session": patch})
    assert types(events) == ["session.updated"], events
    session = events[0]["session"]
    assert path.rsplit(".", 1)[-1] not in _keys_anywhere(session), f"{path} was echoed"
    if "instructions" in patch:
        assert session["instructions"] == "hi"
    if "threshold" in str(patch):
        assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.6


@pytest.mark.parametrize(("patch", "path"), UNKNOWN_AT_DEPTH, ids=[p for _, p in UNKNOWN_AT_DEPTH])
def test_openai_refuses_an_unknown_key_at_any_depth_naming_it(patch: dict[str, Any], path: str) -> None:
    driver = Driver("openai")
    before = dict(driver.session.config)
    events = driver.send({"type": "session.update", "event_id": "upd", "session": _with_type(patch)})
    assert types(events) == ["error"]
    error = events[0]["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("unknown_parameter", path, "upd")
    assert driver.session.config == before


def test_yandex_accepts_unknown_keys_at_every_depth_in_one_update() -> None:
    merged: dict[str, Any] = {"audio": {"input": {}, "output": {}}}
    for patch, _ in UNKNOWN_AT_DEPTH:
        if "tool_choice" in patch:
            continue
        for key, value in patch.items():
            if key == "audio":
                for direction, part in value.items():
                    merged["audio"].setdefault(direction, {}).update(part)
            else:
                merged[key] = value
    events = Driver("yandex").send({"type": "session.update", "event_id": "upd", "session": merged})
    assert types(events) == ["session.updated"]
    assert not (UNKNOWN_NAMES & _keys_anywhere(events[0]["session"]))


async def test_a_misspelled_key_over_the_socket_still_gets_session_updated() -> None:
    """As Yandex's example client does it: a real socket, an undocumented key, and `session.updated` back."""
    sim = await start_simulator(SimulatorOptions(flavour="yandex", speed=0))
    try:
        async with connect(sim.realtime_url, "yandex") as client:
            await client.until("session.created")
            update = {"instructions": "x", "input_audio_transcripton": {"model": "general"}}
            await client.send({"type": "session.update", "session": update})
            events = await client.until("session.updated")
            assert "error" not in types(events)
            assert "input_audio_transcripton" not in _keys_anywhere(events[-1]["session"])
    finally:
        await sim.close()
