"""The official `openai` SDK client talks to the simulator: a voice turn, a text turn, history via REST.

The SDK derives the WebSocket URL from `base_url` (`http://H/v1` -> `ws://H/v1/realtime?model=...`) and sends
`Authorization: Bearer <api_key>`; its `recv()` does not validate, so every event is also checked with the
schema oracle here.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from relay.simulator import RunningSimulator, SimulatorOptions, start_simulator
from tests.support.schema_oracle import validate_server_event
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

KEY = "sdk-test-key"


@pytest.fixture(params=["yandex", "openai"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorOptions(flavour=request.param, speed=0, api_key=KEY))
    yield running
    await running.close()


def flavour_of(sim: RunningSimulator) -> str:
    from relay.simulator.server import STATE_KEY

    return sim.app[STATE_KEY].options.flavour


async def collect_until(connection: Any, flavour: str, type_: str) -> list[dict[str, Any]]:
    """Events up to `type_`: each read with the SDK, parsed by the SDK, and validated by the oracle."""
    events: list[dict[str, Any]] = []
    while True:
        frame = await asyncio.wait_for(connection.recv_bytes(), timeout=seconds(10))
        parsed = connection.parse_event(frame)
        raw = json.loads(frame)
        assert parsed.type == raw["type"]
        validate_server_event(raw, flavour)
        events.append(raw)
        if raw["type"] == type_:
            return events


async def test_sdk_client_completes_a_voice_turn(sim: RunningSimulator) -> None:
    flavour = flavour_of(sim)
    client = AsyncOpenAI(api_key=KEY, base_url=sim.rest_base)
    rate = 44100 if flavour == "yandex" else 24000
    async with client.realtime.connect(
        model="gpt://folder/speech-realtime-250923", websocket_connection_options={"max_size": None}
    ) as connection:
        created = await collect_until(connection, flavour, "session.created")
        assert created[-1]["session"]["model"] == "gpt://folder/speech-realtime-250923"
        fmt = {"type": "audio/pcm", "rate": rate}
        await connection.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}},
            }
        )
        await collect_until(connection, flavour, "session.updated")
        clip = synthesize(rate, utterances=(0.8,), seed=7)
        step = rate // 50 * 2
        for i in range(0, len(clip.pcm), step):
            await connection.input_audio_buffer.append(audio=base64.b64encode(clip.pcm[i : i + step]).decode())
        events = await collect_until(connection, flavour, "response.done")
    names = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" in names and "input_audio_buffer.speech_stopped" in names
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert len(audio) / 2 / rate > 0.8
    assert events[-1]["response"]["status"] == "completed"


async def test_sdk_client_completes_a_text_turn(sim: RunningSimulator) -> None:
    flavour = flavour_of(sim)
    client = AsyncOpenAI(api_key=KEY, base_url=sim.rest_base)
    async with client.realtime.connect(model="gpt://folder/speech-realtime-250923") as connection:
        await collect_until(connection, flavour, "session.created")
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What time is it?"}]}
        )
        await connection.response.create(response={"output_modalities": ["text"]})
        events = await collect_until(connection, flavour, "response.done")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == 'You said: "What time is it?".'


async def test_sdk_lists_the_history_of_a_tied_session(sim: RunningSimulator) -> None:
    flavour = flavour_of(sim)
    client = AsyncOpenAI(api_key=KEY, base_url=sim.rest_base, timeout=seconds(10))
    conversation = await client.conversations.create()
    async with client.realtime.connect(model="gpt://f/m", extra_query={"conversation_id": conversation.id}) as conn:
        await collect_until(conn, flavour, "session.created")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "note this"}]}
        )
        await conn.response.create()
        await collect_until(conn, flavour, "response.done")
    items = [item async for item in client.conversations.items.list(conversation.id, order="asc")]
    assert [item.type for item in items] == ["message", "message"]
    assert [item.role for item in items] == ["user", "assistant"]  # type: ignore[union-attr]


async def test_sdk_client_with_a_wrong_key_is_refused(sim: RunningSimulator) -> None:
    client = AsyncOpenAI(api_key="wrong", base_url=sim.rest_base)
    with pytest.raises(Exception) as caught:
        async with client.realtime.connect(model="m") as connection:
            await connection.recv()
    assert "401" in str(caught.value)
