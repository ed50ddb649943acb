"""What the simulator offers resume tests: `recall` shows the context the model has, client-given item ids are
kept, and `close_after_sessions` drops only the first K sockets of a simulator process."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from relay.simulator import SimulatorOptions, start_simulator
from relay.simulator.knobs import KnobError, parse_knobs
from tests.support.sim_fixtures import Driver
from tests.support.speechlike import synthesize
from tests.support.timing import seconds


def create(text: str, role: str = "user", item_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    part = "output_text" if role == "assistant" else "input_text"
    item: dict[str, Any] = {"type": "message", "role": role, "content": [{"type": part, "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    event: dict[str, Any] = {"type": "conversation.item.create", "item": item}
    if event_id is not None:
        event["event_id"] = event_id
    return event


def reply_text(driver: Driver) -> str:
    events = driver.send({"type": "response.create"}) + driver.finish()
    done = next(e for e in events if e["type"] == "response.done")
    part = done["response"]["output"][0]["content"][0]
    return str(part.get("text") or part.get("transcript"))


def test_recall_answers_with_the_earlier_user_texts_in_order() -> None:
    driver = Driver("yandex")
    driver.send(create("my name is Ada", item_id="item_a"))
    driver.send(create("Hello Ada", role="assistant", item_id="item_b"))
    driver.send(create("I live in Kazan"))
    assert reply_text(driver) == 'You said: "I live in Kazan".'
    driver.send(create("what do you recall?"))
    assert reply_text(driver) == 'Earlier you said: "my name is Ada" | "I live in Kazan".'


def test_recall_includes_the_transcripts_of_voice_turns_and_says_when_there_is_nothing() -> None:
    driver = Driver("openai")
    driver.send(create("Recall"))
    assert reply_text(driver) == "You have not said anything earlier."
    clip = synthesize(rate=24000, utterances=(0.8,), seed=2)
    events = driver.append(clip.pcm + b"\0\0" * 24000, 24000)
    transcript = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")["transcript"]
    driver.send(create("recall"))
    assert reply_text(driver) == f'Earlier you said: "Recall" | "{transcript}".'


def test_a_client_given_item_id_is_kept_and_a_duplicate_is_refused_with_the_clients_event_id() -> None:
    driver = Driver("yandex")
    added = driver.send(create("first", item_id="item_mine"))
    assert added[0]["type"] == "conversation.item.added" and added[0]["item"]["id"] == "item_mine"
    refused = driver.send(create("again", item_id="item_mine", event_id="evt_7"))
    assert [e["type"] for e in refused] == ["error"]
    assert refused[0]["error"]["event_id"] == "evt_7"
    assert list(driver.session.items) == ["item_mine"]


def test_close_after_sessions_is_a_count_of_at_least_one() -> None:
    assert parse_knobs({}, {"close_after": "3", "close_after_sessions": "2"}).close_after_sessions == 2
    with pytest.raises(KnobError):
        parse_knobs({}, {"close_after_sessions": "0"})
    with pytest.raises(KnobError):
        parse_knobs({}, {"close_after_sessions": "x"})


async def test_close_after_sessions_drops_only_the_first_k_sockets_of_the_process() -> None:
    sim = await start_simulator(SimulatorOptions(speed=0.0))
    try:
        async with aiohttp.ClientSession() as http:
            outcomes = []
            for _ in range(3):
                url = sim.realtime_url + "?close_after=2&close_after_sessions=2"
                async with http.ws_connect(url) as ws:
                    created = await ws.receive(timeout=seconds(5))
                    assert json.loads(created.data)["type"] == "session.created"
                    await ws.send_str(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
                    updated = await ws.receive(timeout=seconds(5))
                    assert json.loads(updated.data)["type"] == "session.updated"
                    await ws.send_str(json.dumps({"type": "session.update", "session": {"instructions": "y"}}))
                    after = await ws.receive(timeout=seconds(5))
                    outcomes.append(after.type)
    finally:
        await sim.close()
    assert outcomes[:2] != [aiohttp.WSMsgType.TEXT] * 2 and aiohttp.WSMsgType.TEXT not in outcomes[:2]
    assert outcomes[2] == aiohttp.WSMsgType.TEXT  # the third socket is past K: never dropped
