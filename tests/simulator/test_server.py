"""The simulator on a real socket: handshake, auth, knobs, flavours, pacing, conversation tie, item_audio."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from relay.simulator import RunningSimulator, SimulatorOptions, create_app, replies, start_simulator
from tests.support.relay_fixtures import RawWebSocket, running_relay_process
from tests.support.sim_fixtures import audio_of, connect, first, types
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

RATE = 24000


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorOptions(flavour="yandex", speed=0))
    yield running
    await running.close()


@pytest.fixture
async def sim_openai() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorOptions(flavour="openai", speed=0))
    yield running
    await running.close()


async def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_running_simulator_urls(sim: RunningSimulator) -> None:
    assert sim.realtime_url == f"ws://127.0.0.1:{sim.port}/v1/realtime"
    assert sim.rest_base == f"http://127.0.0.1:{sim.port}/v1"
    assert sim.port > 0


def test_create_app_serves_realtime_and_conversations() -> None:
    app = create_app(SimulatorOptions())
    paths = {getattr(r.resource, "canonical", None) for r in app.router.routes()}
    assert "/v1/realtime" in paths
    assert any(p and p.startswith("/v1/conversations") for p in paths)


def test_simulator_options_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        SimulatorOptions(flavour="azure")
    with pytest.raises(ValueError):
        SimulatorOptions(speed=-1)
    with pytest.raises(ValueError):
        SimulatorOptions(knobs={"no_such_knob": 1})


@pytest.mark.parametrize("flavour", ["yandex", "openai"])
async def test_voice_turn_over_the_socket(flavour: str) -> None:
    running = await start_simulator(SimulatorOptions(flavour=flavour, speed=0))
    try:
        async with connect(running.realtime_url + "?model=gpt://f/m", flavour) as client:
            created = await client.recv()
            assert created["type"] == "session.created" and created["session"]["model"] == "gpt://f/m"
            await client.append(synthesize(RATE, utterances=(0.8,), seed=1).pcm, RATE)
            events = await client.until("response.done")
            assert first(events, "response.done")["response"]["status"] == "completed"
            assert audio_of(events)
            assistant = first(events, "response.output_item.done")["item"]["id"]
            await client.send({"type": "conversation.item.retrieve", "item_id": assistant})
            retrieved = (await client.until("conversation.item.retrieved"))[-1]
            audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
            assert running.item_audio(assistant) == (audio, RATE)
            assert audio != audio_of(events)  # post-processed, so a test can tell them apart
    finally:
        await running.close()


async def test_item_audio_is_none_for_unknown_and_text_items(sim: RunningSimulator) -> None:
    assert sim.item_audio("item_unknown") is None
    async with connect(sim.realtime_url, "yandex") as client:
        await client.recv()
        await client.send({"type": "session.update", "session": {"output_modalities": ["text"]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
    assert sim.item_audio(first(events, "response.output_item.done")["item"]["id"]) is None


async def test_item_audio_of_a_user_turn_is_the_post_processed_appended_samples(sim: RunningSimulator) -> None:
    clip = synthesize(RATE, utterances=(0.7,), seed=12)
    async with connect(sim.realtime_url, "yandex") as client:
        await client.recv()
        await client.append(clip.pcm, RATE)
        events = await client.until("response.done")
    start = first(events, "input_audio_buffer.speech_started")["audio_start_ms"]
    end = first(events, "input_audio_buffer.speech_stopped")["audio_end_ms"]
    user_id = first(events, "input_audio_buffer.committed")["item_id"]
    appended = clip.pcm[math.ceil(start * RATE / 1000) * 2 : math.ceil(end * RATE / 1000) * 2]
    assert sim.item_audio(user_id) == (replies.post_process(appended), RATE)


async def test_yandex_never_answers_pings(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(sim.realtime_url, autoping=False) as ws:
        await ws.receive(timeout=seconds(5))  # session.created
        await ws.ping(b"are you there")
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.5)


async def test_openai_answers_pings(sim_openai: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(sim_openai.realtime_url, autoping=False) as ws:
        await ws.receive(timeout=seconds(5))
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=seconds(5))
        assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are you there"


async def test_binary_and_garbage_frames_get_errors_over_the_socket(sim: RunningSimulator) -> None:
    async with connect(sim.realtime_url, "yandex") as client:
        await client.recv()
        await client.ws.send_bytes(b"\x00\x01")
        assert (await client.recv())["type"] == "error"
        await client.ws.send_str("{{{{")
        assert (await client.recv())["type"] == "error"
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def test_api_key_is_required_when_configured() -> None:
    running = await start_simulator(SimulatorOptions(api_key="s3cret", speed=0))
    try:
        url = running.realtime_url
        assert await handshake_status(url) == 401
        assert await handshake_status(url, {"Authorization": "Api-Key wrong"}) == 401
        assert await handshake_status(url, {"Authorization": "Basic s3cret"}) == 401
        assert await handshake_status(url, {"Authorization": "Api-Key s3cret"}) == 101
        assert await handshake_status(url, {"Authorization": "api-key s3cret"}) == 101  # Yandex's examples
        assert await handshake_status(url, {"Authorization": "Bearer s3cret"}) == 101
        async with aiohttp.ClientSession() as http:
            async with http.post(running.rest_base + "/conversations", json={}) as response:
                assert response.status == 401
            async with http.post(
                running.rest_base + "/conversations", json={}, headers={"Authorization": "Bearer s3cret"}
            ) as response:
                assert response.status == 200
    finally:
        await running.close()


async def test_reject_auth_knob_answers_401(sim: RunningSimulator) -> None:
    assert await handshake_status(sim.realtime_url + "?reject_auth=1") == 401


@pytest.mark.parametrize(("value", "status"), [("1", 503), ("true", 503), ("429", 429), ("500", 500), ("403", 403)])
async def test_refuse_knob_answers_with_the_status(sim: RunningSimulator, value: str, status: int) -> None:
    assert await handshake_status(f"{sim.realtime_url}?refuse={value}") == status


@pytest.mark.parametrize(
    "query",
    ["close_after=0", "close_after=x", "refuse=200", "delay_ms=-5", "stall=no", "item_created_name=made", "retrieve_fail=maybe"],
)
async def test_bad_knob_values_are_answered_400(sim: RunningSimulator, query: str) -> None:
    assert await handshake_status(f"{sim.realtime_url}?{query}") == 400


async def test_knob_defaults_come_from_the_options_and_queries_override_them() -> None:
    running = await start_simulator(SimulatorOptions(speed=0, knobs={"refuse": 503}))
    try:
        assert await handshake_status(running.realtime_url) == 503
        assert await handshake_status(running.realtime_url + "?refuse=0") == 101
    finally:
        await running.close()


async def test_close_after_drops_the_socket_after_n_events(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(sim.realtime_url + "?close_after=3") as ws:
        await ws.send_str(json.dumps({"type": "bogus"}))
        await ws.send_str(json.dumps({"type": "bogus"}))
        await ws.send_str(json.dumps({"type": "bogus"}))
        received = []
        while True:
            msg = await ws.receive(timeout=seconds(5))
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            received.append(json.loads(msg.data)["type"])
        assert received == ["session.created", "error", "error"]
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        assert ws.close_code != 1000


async def test_delay_ms_delays_every_event(sim: RunningSimulator) -> None:
    async with connect(sim.realtime_url + "?delay_ms=150", "yandex") as client:
        await client.recv()
        began = time.monotonic()
        await client.send({"type": "input_audio_buffer.clear"})
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.until("input_audio_buffer.cleared")
        assert time.monotonic() - began >= 0.3  # a lower bound: the knob's effect, not a speed claim


async def test_inject_error_knob_over_the_socket(sim: RunningSimulator) -> None:
    async with connect(sim.realtime_url + "?inject_error=1", "yandex") as client:
        assert (await client.recv())["type"] == "session.created"
        error = await client.recv()
        assert error["type"] == "error" and error["error"]["code"] == "injected_error"
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def test_stall_stops_reading_so_the_sender_blocks(sim: RunningSimulator) -> None:
    quick_close = aiohttp.ClientWSTimeout(ws_close=0.5)
    async with connect(sim.realtime_url + "?stall=1", "yandex", timeout=quick_close) as client:
        await client.recv()
        await client.send({"type": "bogus", "event_id": "read"})
        assert (await client.recv())["error"]["event_id"] == "read"  # the first frame is still read
        frame = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(1 << 20)).decode()})
        blocked = False
        for _ in range(256):  # ~340 MB: far beyond any socket buffer
            try:
                await asyncio.wait_for(client.ws.send_str(frame), timeout=seconds(1))
            except TimeoutError:
                blocked = True
                break
        assert blocked


async def test_item_created_name_knob_over_the_socket(sim: RunningSimulator) -> None:
    async with connect(sim.realtime_url + "?item_created_name=created", "yandex") as client:
        await client.recv()
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
            }
        )
        assert (await client.recv())["type"] == "conversation.item.created"


async def test_a_session_tied_to_a_conversation_adds_its_items_to_history(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.rest_base + "/conversations", json={}) as response:
            conversation = await response.json()
        url = f"{sim.realtime_url}?conversation_id={conversation['id']}"
        async with connect(url, "yandex") as client:
            await client.recv()
            await client.send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "remember me"}]},
                }
            )
            await client.send({"type": "response.create"})
            events = await client.until("response.done")
            await client.append(synthesize(RATE, utterances=(0.6,), seed=2).pcm, RATE)
            events += await client.until("response.done")
            assert first(events, "response.created")["response"]["conversation_id"] == conversation["id"]
        async with http.get(f"{sim.rest_base}/conversations/{conversation['id']}/items?order=asc") as response:
            listed = await response.json()
    items = listed["data"]
    assert [(i["role"], i["content"][0]["type"]) for i in items] == [
        ("user", "input_text"),
        ("assistant", "output_audio"),
        ("user", "input_audio"),
        ("assistant", "output_audio"),
    ]
    assert items[0]["content"][0]["text"] == "remember me"
    assert items[2]["content"][0]["transcript"].startswith("[speech ")
    assert items[3]["content"][0]["transcript"].startswith("Echo of [speech")
    assert all("audio" not in part for item in items for part in item["content"])


async def test_an_unknown_conversation_id_is_answered_404(sim: RunningSimulator) -> None:
    assert await handshake_status(sim.realtime_url + "?conversation_id=conv_nope") == 404


async def test_audio_is_paced_at_real_time_scaled_by_speed() -> None:
    running = await start_simulator(SimulatorOptions(speed=2.0))
    try:
        async with connect(running.realtime_url, "yandex") as client:
            await client.recv()
            await client.append(synthesize(RATE, utterances=(1.0,), seed=3).pcm, RATE)
            await client.until("response.created")
            began = time.monotonic()
            events = await client.until("response.done")
            audio_s = len(audio_of(events)) / 2 / RATE
            # Lower bound only: at speed 2 the reply cannot arrive faster than half its duration.
            assert time.monotonic() - began >= audio_s / 2 * 0.9
    finally:
        await running.close()


async def test_barge_in_over_the_socket_cancels_the_paced_response() -> None:
    running = await start_simulator(SimulatorOptions(speed=1.0))
    try:
        async with connect(running.realtime_url, "yandex") as client:
            await client.recv()
            await client.append(synthesize(RATE, utterances=(1.5,), seed=4).pcm, RATE)
            await client.until("response.output_audio.delta")
            await client.append(synthesize(RATE, utterances=(0.5,), seed=5).pcm, RATE)
            events = await client.until("response.done")
            assert "input_audio_buffer.speech_started" in types(events)
            done = first(events, "response.done")["response"]
            assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"
            events = await client.until("response.done")  # the new turn gets its own answer
            assert first(events, "response.done")["response"]["status"] == "completed"
    finally:
        await running.close()


async def test_close_during_a_paced_response_ends_cleanly() -> None:
    running = await start_simulator(SimulatorOptions(speed=1.0))
    try:
        async with connect(running.realtime_url, "yandex") as client:
            await client.recv()
            await client.append(synthesize(RATE, utterances=(1.0,), seed=4).pcm, RATE)
            await client.until("response.output_audio.delta")
        async with connect(running.realtime_url, "yandex") as client:  # the server still serves
            assert (await client.recv())["type"] == "session.created"
    finally:
        await running.close()


async def test_clients_that_leave_right_after_the_upgrade_leave_no_error_in_serves_log(tmp_path: Path) -> None:
    """With the embedded simulator, a client gone before the relay's own upstream handshake ends means the
    simulator's client (the relay) is gone too: nothing to answer, and nothing for the log but the session's end."""
    async with running_relay_process(tmp_path) as relay:
        for _ in range(4):
            sockets = await asyncio.gather(*(RawWebSocket.connect("127.0.0.1", relay.port) for _ in range(20)))
            for raw in sockets:
                raw.sock.close()
            await asyncio.sleep(0.3)
        assert await healthz_ok(relay.port)
        relay.terminate()
        assert await relay.wait() == 0
    problems = [r for r in relay.log_lines if r.get("level") in ("error", "critical")]
    assert problems == [], problems[:2]
    assert "Traceback" not in b"".join(relay.raw_stdout).decode("utf-8", "replace")


async def healthz_ok(port: int) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
        return resp.status == 200
