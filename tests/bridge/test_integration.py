"""The relay core end to end on loopback: real clients -> real relay -> real simulator (CONTRACT C3, C4, C5, C6).

Each test starts the simulator and a relay app on port 0 (tests.support.relay_fixtures) and talks to the relay the way
users do: raw WebSocket clients and the official `openai` SDK.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets.asyncio.server
from openai import AsyncOpenAI
from websockets.asyncio.server import ServerConnection

from audio import pcm as pcmlib
from relay.simulator.server import STATE_KEY as SIM_STATE
from tests.links.test_upstream import close_frame, raw_upstream, text
from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

Event = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def receive_until(ws: aiohttp.ClientWebSocketResponse, done: Callable[[Event], bool], timeout: float = 10.0) -> list[Event]:
    """Every event until (and including) the first for which `done` is true."""
    events: list[Event] = []
    async with asyncio.timeout(seconds(timeout)):
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended before the awaited event: {message.type} {ws.close_code}")
            event = json.loads(message.data)
            events.append(event)
            if done(event):
                return events


async def send(ws: aiohttp.ClientWebSocketResponse, event: Event) -> str:
    text = json.dumps(event)
    await ws.send_str(text)
    return text


async def voice_turn(ws: aiohttp.ClientWebSocketResponse, rate: int = 24000) -> tuple[list[Event], list[str]]:
    """Append one speech-like utterance in 20 ms chunks; return (events up to response.done, frames sent)."""
    clip = synthesize(rate=rate, utterances=(0.8,), seed=3)
    chunk = rate // 50 * 2
    sent = []
    for offset in range(0, len(clip.pcm), chunk):
        sent.append(await send(ws, {"type": "input_audio_buffer.append", "audio": b64(clip.pcm[offset : offset + chunk])}))
    events = await receive_until(ws, lambda e: e["type"] == "response.done")
    return events, sent


def text_item(text: str) -> Event:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def ended_records(relay: RunningRelay, count: int = 1) -> dict[str, list[Event]]:
    """Session logs once `count` sessions have written relay.session_ended."""

    def complete() -> bool:
        records = relay.session_records()
        return len(records) >= count and all(r and r[-1]["type"] == "relay.session_ended" for r in records.values())

    await wait_for(complete)
    return relay.session_records()


async def test_sdk_text_turn_through_the_relay_matches_a_direct_connection(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:

        async def turn(base_url: str) -> list[str]:
            client = AsyncOpenAI(api_key="unused", base_url=base_url)
            async with client.realtime.connect(model="speech-realtime-250923") as conn:
                types = [(await conn.recv()).type]
                await conn.conversation.item.create(item=text_item("hello there")["item"])  # type: ignore[arg-type]
                await conn.response.create()
                async for event in conn:
                    types.append(event.type)
                    if event.type == "response.done":
                        return types
            raise AssertionError("no response.done")

        through_relay = await turn(f"{relay.base_url}/v1")
        direct = await turn(relay.sim.rest_base)
    assert through_relay == direct
    assert "response.output_audio.delta" in through_relay


async def test_sdk_voice_turn_through_the_relay(tmp_path: Path) -> None:
    clip = synthesize(rate=24000, utterances=(0.8,), seed=5)
    async with running_relay(tmp_path) as relay:
        client = AsyncOpenAI(api_key="unused", base_url=f"{relay.base_url}/v1")
        async with client.realtime.connect(model="speech-realtime-250923") as conn:
            assert (await conn.recv()).type == "session.created"
            for offset in range(0, len(clip.pcm), 960):
                await conn.input_audio_buffer.append(audio=b64(clip.pcm[offset : offset + 960]))
            types = []
            async for event in conn:
                types.append(event.type)
                if event.type == "response.done":
                    break
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped")
    assert "response.output_audio.delta" in types
    assert "conversation.item.retrieved" not in types


async def test_every_audio_item_is_retrieved_once_and_saved_with_the_post_processed_audio(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url + "?relay_events=1") as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            events, _ = await voice_turn(ws)
            item_ids = {e["item"]["id"] for e in events if e["type"] == "conversation.item.done"}

            def saved_ids(seen: list[Event]) -> set[str]:
                return {e["item_id"] for e in seen if e["type"] == "relay.audio_saved"}

            saved: list[Event] = []
            while not item_ids <= saved_ids(events + saved):
                saved += await receive_until(ws, lambda e: e["type"] == "relay.audio_saved")
        assert all(e["type"] != "conversation.item.retrieved" for e in events + saved)
        records = await ended_records(relay)
        (log,) = records.values()
        retrieves = [r for r in log if r["type"] == "conversation.item.retrieve"]
        assert sorted(r["item_id"] for r in retrieves) == sorted(item_ids)
        assert all(r["dir"] == "relay" for r in retrieves)
        for item_id in item_ids:
            (wav,) = list(relay.data_dir.glob(f"sessions/*/{item_id}.wav"))
            pcm, rate = pcmlib.read_wav(wav)
            expected = relay.sim.item_audio(item_id)
            assert expected is not None
            assert (pcm, rate) == expected
        sources = {r["event"]["source"] for r in log if r["type"] == "relay.audio_saved"}
        assert sources == {"retrieved"}


async def test_session_ended_counts_every_record_the_size_limit_dropped_the_recording_line_too(tmp_path: Path) -> None:
    """Past max_session_log_bytes records are dropped and declared by one relay.log_gap; session_ended's log_dropped
    counts all of them, including relay.recording_saved, logged just before it."""
    async with running_relay(tmp_path, settings={"max_session_log_bytes": 4096}) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            await voice_turn(ws)
        records = await ended_records(relay)
    (log,) = records.values()
    gaps = [r["event"] for r in log if r["type"] == "relay.log_gap"]
    dropped = sum(gap["to_seq"] - gap["from_seq"] + 1 for gap in gaps)
    assert dropped > 0
    assert log[-1]["type"] == "relay.session_ended"
    assert log[-1]["event"]["log_dropped"] == dropped
    assert log[-1]["seq"] == max(gap["to_seq"] for gap in gaps) + 1  # recording_saved was the last one dropped


async def test_a_clients_own_retrieve_passes_through(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            events, _ = await voice_turn(ws)
            assistant = next(e["item"]["id"] for e in events if e["type"] == "response.output_item.done")
            await send(ws, {"type": "conversation.item.retrieve", "item_id": assistant, "event_id": "mine"})
            (retrieved,) = [
                e
                for e in await receive_until(ws, lambda e: e["type"] == "conversation.item.retrieved")
                if e["type"] == "conversation.item.retrieved"
            ]
    assert retrieved["item"]["id"] == assistant
    assert any("audio" in part for part in retrieved["item"]["content"])


async def test_a_rate_change_mid_session_is_honoured_when_saving(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            await send(
                ws,
                {
                    "type": "session.update",
                    "session": {
                        "audio": {
                            "input": {"format": {"type": "audio/pcm", "rate": 16000}},
                            "output": {"format": {"type": "audio/pcm", "rate": 44100}},
                        }
                    },
                },
            )
            await receive_until(ws, lambda e: e["type"] == "session.updated")
            events, _ = await voice_turn(ws, rate=16000)
            user = next(e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed")
            assistant = next(e["item"]["id"] for e in events if e["type"] == "response.output_item.done")
        await ended_records(relay)
    assert pcmlib.read_wav(next(relay.data_dir.glob(f"sessions/*/{user}.wav")))[1] == 16000
    assert pcmlib.read_wav(next(relay.data_dir.glob(f"sessions/*/{assistant}.wav")))[1] == 44100


async def test_a_three_minute_item_is_retrieved_and_saved(tmp_path: Path) -> None:
    rate = 24000
    minutes_of_audio = (np.sin(np.arange(rate * 180) * 2 * np.pi * 220 / rate) * 8000).astype("<i2").tobytes()
    async with running_relay(tmp_path, settings={"retrieve_timeout_seconds": 30}) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url, max_msg_size=0) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            await send(ws, {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
            await receive_until(ws, lambda e: e["type"] == "session.updated")
            for offset in range(0, len(minutes_of_audio), rate * 2):
                await send(ws, {"type": "input_audio_buffer.append", "audio": b64(minutes_of_audio[offset : offset + rate * 2])})
            await send(ws, {"type": "input_audio_buffer.commit"})
            committed = await receive_until(ws, lambda e: e["type"] == "input_audio_buffer.committed", timeout=30)
            item_id = committed[-1]["item_id"]
            await wait_for(lambda: any(relay.data_dir.glob(f"sessions/*/{item_id}.wav")), timeout=30)
    pcm, saved_rate = pcmlib.read_wav(next(relay.data_dir.glob(f"sessions/*/{item_id}.wav")))
    assert saved_rate == rate
    assert len(pcm) == len(minutes_of_audio) > 1 << 20
    assert (pcm, saved_rate) == relay.sim.item_audio(item_id)


async def test_the_log_has_every_frame_exactly_once_in_order_without_audio_or_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "yc-test-api-key-0123456789abcdef"
    monkeypatch.setenv("YANDEX_API_KEY", secret)
    monkeypatch.setenv("YANDEX_FOLDER_ID", "b1gtestfolder")
    async with running_relay(tmp_path, sim_api_key=secret) as relay, aiohttp.ClientSession() as http:
        received: list[str] = []
        sent: list[str] = []
        async with http.ws_connect(relay.ws_url) as ws:
            first = await ws.receive()
            received.append(first.data)
            for turn in range(3):
                clip = synthesize(rate=24000, utterances=(1.5,), seed=turn)
                for offset in range(0, len(clip.pcm), 480):  # 10 ms chunks: many frames
                    sent.append(
                        await send(ws, {"type": "input_audio_buffer.append", "audio": b64(clip.pcm[offset : offset + 480])})
                    )
                async with asyncio.timeout(seconds(15)):
                    while True:
                        message = await ws.receive()
                        received.append(message.data)
                        if json.loads(message.data)["type"] == "response.done":
                            break
            await asyncio.sleep(0.3)
            while True:
                try:
                    message = await ws.receive(timeout=0.3)
                except TimeoutError:
                    break
                received.append(message.data)
        (log,) = (await ended_records(relay)).values()
    assert len(sent) + len(received) > 1000
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))
    client_records = [r for r in log if r["dir"] == "client"]
    server_records = [r for r in log if r["dir"] == "server"]
    assert [r["bytes"] for r in client_records] == [len(t) for t in sent]
    assert [r["bytes"] for r in server_records] == [len(t) for t in received]
    assert [r["event"]["type"] for r in server_records] == [json.loads(t)["type"] for t in received]
    text = (relay.log_files()[0]).read_text()
    assert secret not in text
    assert not re.search(r"[A-Za-z0-9+/]{200,}", text), "base64 audio leaked into the log"
    appends = [r for r in client_records if r["type"] == "input_audio_buffer.append"]
    assert appends[0]["event"]["audio"]["audio_ms"] == 10.0


async def test_retrieves_without_audio_are_saved_from_the_stream(tmp_path: Path) -> None:
    async with running_relay(tmp_path, upstream_query="retrieve_no_audio=1") as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            events, _ = await voice_turn(ws)
        (log,) = (await ended_records(relay)).values()
    deltas: dict[str, bytearray] = {}
    for event in events:
        if event["type"] == "response.output_audio.delta":
            deltas.setdefault(event["item_id"], bytearray()).extend(base64.b64decode(event["delta"]))
    saved = [r["event"] for r in log if r["type"] == "relay.audio_saved"]
    assert saved and {s["source"] for s in saved} == {"stream"}
    for item_id, audio in deltas.items():
        pcm, _ = pcmlib.read_wav(next(relay.data_dir.glob(f"sessions/*/{item_id}.wav")))
        assert pcm == bytes(audio)


async def test_a_truncate_past_the_forwarded_audio_is_clamped_and_the_session_goes_on(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            events, _ = await voice_turn(ws)
            assistant = next(e["item"]["id"] for e in events if e["type"] == "response.output_item.done")
            await send(
                ws, {"type": "conversation.item.truncate", "item_id": assistant, "content_index": 0, "audio_end_ms": 10_000_000}
            )
            answer = await receive_until(ws, lambda e: e["type"] in ("conversation.item.truncated", "error"))
            assert answer[-1]["type"] == "conversation.item.truncated"
            await send(ws, text_item("still there?"))
            await send(ws, {"type": "response.create"})
            await receive_until(ws, lambda e: e["type"] == "response.done")
        (log,) = (await ended_records(relay)).values()
    (record,) = [r for r in log if r["type"] == "conversation.item.truncate"]
    assert record["client_event"]["audio_end_ms"] == 10_000_000
    assert 0 < record["event"]["audio_end_ms"] < 10_000_000


@pytest.mark.parametrize("flavour", ["yandex", "openai"])
async def test_the_upstream_session_id_the_client_sees_is_the_one_logged(tmp_path: Path, flavour: str) -> None:
    async with running_relay(tmp_path, sim_flavour=flavour) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            (created,) = await receive_until(ws, lambda e: e["type"] == "session.created")
        (log,) = (await ended_records(relay)).values()
    upstream_id = created["session"]["id"]
    assert isinstance(upstream_id, str) and upstream_id.startswith("sess_")
    (connected,) = [r for r in log if r["type"] == "relay.upstream_connected"]
    assert connected["event"]["upstream_session_id"] == upstream_id


async def test_an_unreachable_upstream_is_reported_and_closed_1013(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, settings={"upstream": "ws://127.0.0.1:9/v1/realtime"}) as relay,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(relay.ws_url) as ws:
            events = await receive_until(ws, lambda e: e["type"] == "error")
            closing = await ws.receive()
        (log,) = (await ended_records(relay)).values()
    assert events[-1]["error"]["code"] == "upstream_unavailable"
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1013
    assert log[-1]["event"]["reason"] == "upstream_unavailable"


async def test_a_refused_handshake_reports_the_upstream_status(tmp_path: Path) -> None:
    async with running_relay(tmp_path, upstream_query="refuse=429") as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            events = await receive_until(ws, lambda e: e["type"] == "error")
            await ws.receive()
    assert events[-1]["error"]["code"] == "upstream_unavailable"
    assert "429" in events[-1]["error"]["message"]
    assert ws.close_code == 1013


async def test_an_upstream_drop_mid_response_is_reported_and_closed_1014(tmp_path: Path) -> None:
    # With upstream_resume on (the default) a drop is resumed instead: tests/test_resume_*.py.
    settings = {"upstream_resume": False}
    async with (
        running_relay(tmp_path, settings=settings, upstream_query="close_after=12") as relay,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            await send(ws, text_item("tell me a long story"))
            await send(ws, {"type": "response.create"})
            started = time.monotonic()
            events = await receive_until(ws, lambda e: e["type"] == "error")
            closing = await ws.receive()
            assert time.monotonic() - started < seconds(5)
        (log,) = (await ended_records(relay)).values()
    assert events[-1]["error"]["code"] == "upstream_disconnected"
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1014
    assert log[-1]["event"]["reason"] == "upstream_disconnected"


async def test_a_client_leaving_mid_response_closes_the_upstream_and_ends_the_log(tmp_path: Path) -> None:
    async with running_relay(tmp_path, sim_speed=1.0) as relay, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(relay.ws_url)
        await receive_until(ws, lambda e: e["type"] == "session.created")
        await send(ws, text_item("talk for a while"))
        await send(ws, {"type": "response.create"})
        await receive_until(ws, lambda e: e["type"] == "response.output_audio.delta")
        links = relay.sim.app[SIM_STATE].links
        assert len(links) == 1
        await ws.close()
        left = time.monotonic()
        await wait_for(lambda: len(links) == 0, timeout=2)
        assert time.monotonic() - left < seconds(1.5)
        (log,) = (await ended_records(relay)).values()
    assert log[-1]["type"] == "relay.session_ended"
    assert log[-1]["event"]["reason"] == "client_closed"
    assert log[-1]["event"]["client_close_code"] == 1000


async def test_a_credentials_file_gone_bad_is_reported_as_upstream_unavailable(tmp_path: Path) -> None:
    credentials = tmp_path / "creds.env"
    credentials.write_text("YANDEX_API_KEY=first-key\n")
    async with running_relay(tmp_path, settings={"credentials_file": str(credentials)}) as relay, aiohttp.ClientSession() as http:
        credentials.write_text("this line has no equals sign\n")
        async with http.ws_connect(relay.ws_url) as ws:
            events = await receive_until(ws, lambda e: e["type"] == "error")
            await ws.receive()
        (log,) = (await ended_records(relay)).values()
    assert events[-1]["error"]["code"] == "upstream_unavailable"
    assert "credentials_file" in events[-1]["error"]["message"]
    assert "this line" not in events[-1]["error"]["message"]
    assert ws.close_code == 1013
    assert relay.sim_handshakes == 0
    assert log[0]["type"] == "relay.session_started" and log[0]["event"]["upstream_url"] is None
    assert log[-1]["event"]["reason"] == "upstream_unavailable"


async def audio_item_then_a_turn(relay: RunningRelay, http: aiohttp.ClientSession, item_id: str) -> list[dict[str, Any]]:
    """A client-created audio item under `item_id`, then a text turn; returns the session's log once it ended."""
    audio = {"type": "input_audio", "audio": b64(bytes(4800))}
    item = {"id": item_id, "type": "message", "role": "user", "content": [audio]}
    async with http.ws_connect(relay.ws_url + "?relay_events=1") as ws:
        await receive_until(ws, lambda e: e["type"] == "session.created")
        await send(ws, {"type": "conversation.item.create", "item": item})
        await receive_until(ws, lambda e: e["type"] in ("conversation.item.done", "error"))
        await send(ws, text_item("and a normal one"))
        await send(ws, {"type": "response.create"})
        await receive_until(ws, lambda e: e["type"] == "relay.audio_saved")
    (log,) = (await ended_records(relay)).values()
    return log


async def test_a_client_chosen_item_id_cannot_write_outside_the_data_dir(tmp_path: Path) -> None:
    evil = "../../../../escaped"
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        log = await audio_item_then_a_turn(relay, http, evil)
    assert not list(tmp_path.rglob("escaped*")) and not list(Path("/").glob("escaped*"))
    assert all(r["event"].get("item_id") != evil for r in log if r["type"] == "relay.audio_saved")
    assert [r["event"]["reason"] for r in log if r["type"] == "relay.audio_not_saved"] == ["unsafe_item_id"]


async def test_an_item_named_recording_never_takes_the_place_of_the_session_recording(tmp_path: Path) -> None:
    """`<item_id>.wav` and the session's `recording.wav` share a folder: an item a client named `recording` is
    not saved (and the item route does not serve the recording under that name)."""
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        log = await audio_item_then_a_turn(relay, http, "recording")
        session_id = log[0]["session_id"]
        async with http.get(f"{relay.base_url}/relay/sessions/{session_id}/items/recording.wav") as answer:
            assert answer.status == 404
    assert [r["event"] for r in log if r["type"] == "relay.audio_not_saved"] == [
        {"item_id": "recording", "reason": "unsafe_item_id"}
    ]
    with wave.open(str(relay.data_dir / "sessions" / session_id / "recording.wav")) as recording:
        assert recording.getnchannels() == 2  # still the session's stereo recording


async def test_log_content_off_keeps_text_out_of_the_log_end_to_end(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"log_content": "false"}) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            await send(ws, {"type": "session.update", "session": {"instructions": "SECRETINSTRUCTIONS"}})
            await send(ws, text_item("hello SECRETUSERTEXT"))
            await send(ws, {"type": "response.create"})
            events = await receive_until(ws, lambda e: e["type"] == "response.done")
            await voice_turn(ws)
        await ended_records(relay)
    assert any("SECRETUSERTEXT" in json.dumps(e) for e in events)  # the client got the text...
    text = relay.log_files()[0].read_text()
    assert "SECRET" not in text  # ...the log did not
    assert "[speech" not in text  # nor the voice turn's transcripts


@asynccontextmanager
async def scripted_upstream(
    handler: Callable[[ServerConnection], Awaitable[None]], handshake_delay: float = 0.0
) -> AsyncIterator[tuple[str, list[str]]]:
    """A bare websockets upstream on loopback running `handler`; yields (url, what happened, in order)."""
    happened: list[str] = []

    async def process_request(connection: ServerConnection, request: Any) -> None:
        happened.append("handshake_started")
        await asyncio.sleep(handshake_delay)

    async def run(connection: ServerConnection) -> None:
        happened.append("session_opened")
        try:
            await handler(connection)
        finally:
            happened.append("session_closed")

    async with websockets.asyncio.server.serve(run, "127.0.0.1", 0, process_request=process_request) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime", happened


async def hold_open(connection: ServerConnection) -> None:
    await connection.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
    await connection.wait_closed()


async def test_a_client_leaving_during_the_upstream_handshake_opens_no_upstream_session(tmp_path: Path) -> None:
    async with scripted_upstream(hold_open, handshake_delay=2.0) as (url, happened):
        async with running_relay(tmp_path, settings={"upstream": url}) as relay, aiohttp.ClientSession() as http:
            ws = await http.ws_connect(relay.ws_url)
            await wait_for(lambda: "handshake_started" in happened)
            await ws.send_str(json.dumps({"type": "response.create"}))
            await ws.close()
            (log,) = (await ended_records(relay)).values()
            await asyncio.sleep(2.5)  # past the handshake delay: the upstream session must never open
    assert "session_opened" not in happened
    assert log[-1]["event"]["reason"] == "client_closed"
    assert not [r for r in log if r["dir"] == "client"]  # nothing was forwarded for nobody


async def test_frames_sent_during_the_upstream_handshake_are_forwarded_in_order(tmp_path: Path) -> None:
    received: list[str] = []

    async def record(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
        async for message in connection:
            received.append(str(message))

    async with scripted_upstream(record, handshake_delay=0.5) as (url, _):
        async with running_relay(tmp_path, settings={"upstream": url}) as relay, aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url) as ws:
                sent = [await send(ws, {"type": "response.create", "event_id": f"c{n}"}) for n in range(5)]
                await receive_until(ws, lambda e: e["type"] == "session.created")
                await wait_for(lambda: len(received) == 5)
    assert received == sent


@pytest.mark.parametrize("code", [1001, 4000])
async def test_an_upstream_close_other_than_1000_is_a_disconnect(tmp_path: Path, code: int) -> None:
    async def close_with_code(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
        await connection.close(code, "bye")

    async with scripted_upstream(close_with_code) as (url, _):
        async with running_relay(tmp_path, settings={"upstream": url}) as relay, aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url) as ws:
                events = await receive_until(ws, lambda e: e["type"] == "error")
                await ws.receive()
            (log,) = (await ended_records(relay)).values()
    assert events[-1]["error"]["code"] == "upstream_disconnected"
    assert ws.close_code == 1014
    assert log[-1]["event"]["reason"] == "upstream_disconnected"


async def test_a_normal_upstream_close_closes_the_client_with_1000(tmp_path: Path) -> None:
    async def close_normally(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
        await connection.close(1000)

    async with scripted_upstream(close_normally) as (url, _):
        async with running_relay(tmp_path, settings={"upstream": url}) as relay, aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url) as ws:
                first = await ws.receive()
                closing = await ws.receive()
            (log,) = (await ended_records(relay)).values()
    assert json.loads(first.data)["type"] == "session.created"
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1000
    assert (log[-1]["event"]["reason"], log[-1]["event"]["upstream_close_code"]) == ("upstream_closed", 1000)


async def test_a_client_leaving_is_noticed_while_the_upstream_has_stopped_reading(tmp_path: Path) -> None:
    async with running_relay(tmp_path, upstream_query="stall=1") as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        key = base64.b64encode(b"0123456789abcdef").decode()
        writer.write(
            f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        payload = json.dumps({"type": "input_audio_buffer.append", "audio": b64(bytes(48000))}).encode()
        frame = bytes([0x81, 0xFF]) + len(payload).to_bytes(8, "big") + b"\0\0\0\0" + payload  # masked, zero key
        for _ in range(150):  # ~10 MB: more than the stalled upstream's socket buffers take
            writer.write(frame)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.2)
        writer.transport.abort()  # the client is gone, mid-stream
        left = time.monotonic()
        (log,) = (await ended_records(relay)).values()
        assert time.monotonic() - left < seconds(3)
    assert log[-1]["event"]["reason"] == "client_closed"


async def test_an_upstream_that_stops_reading_ends_the_session_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import relay.upstream_side

    monkeypatch.setattr(relay.upstream_side, "UPSTREAM_BACKLOG_LIMIT_BYTES", 2 * 1024 * 1024)
    async with running_relay(tmp_path, upstream_query="stall=1") as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            chunk = b64(bytes(48000))
            for _ in range(200):  # 12.8 MB: far past the bound plus what the sockets can buffer
                if ws.closed:
                    break
                await send(ws, {"type": "input_audio_buffer.append", "audio": chunk})
            events = await receive_until(ws, lambda e: e["type"] == "error", timeout=15)
            await ws.receive()
        (log,) = (await ended_records(relay)).values()
    assert events[-1]["error"]["code"] == "upstream_disconnected"
    assert "stopped reading" in events[-1]["error"]["message"]
    assert ws.close_code == 1014
    assert log[-1]["event"]["reason"] == "upstream_disconnected"


async def test_a_client_leaving_with_a_retrieve_pending_closes_a_deaf_upstream_within_a_second(tmp_path: Path) -> None:
    """The retrieve grace and the close handshake together fit in the second: an upstream that answers neither the
    retrieve nor the close frame is still let go of within 1 s of the client leaving."""
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_audio"}]}
    script = [
        {"type": "session.created", "event_id": "e1", "session": {}},
        {"type": "response.output_item.added", "event_id": "e2", "response_id": "r1", "item": item},
        {"type": "response.output_audio.delta", "event_id": "e3", "response_id": "r1", "item_id": "item_a", "delta": b64(bytes(960))},
        {"type": "conversation.item.done", "event_id": "e4", "item": item},
    ]
    async with raw_upstream() as upstream:
        async with running_relay(tmp_path, settings={"upstream": upstream.url}) as relay, aiohttp.ClientSession() as http:
            ws = await http.ws_connect(relay.ws_url)
            peer = await upstream.accepted()
            peer.send(*(text(json.dumps(event)) for event in script))
            await receive_until(ws, lambda e: e["type"] == "conversation.item.done")
            await ws.close()
            left = time.monotonic()
            with contextlib.suppress(ConnectionResetError):  # read nothing back: no answer, no close frame
                while await asyncio.wait_for(peer.reader.read(1 << 16), seconds(5)):
                    pass
            gone = time.monotonic() - left
            (log,) = (await ended_records(relay)).values()
    assert gone < seconds(1.0)
    assert [r["event"]["reason"] for r in log if r["type"] == "relay.retrieve_failed"] == ["session_closed"]
    assert log[-1]["event"]["upstream_close_code"] == 1006  # let go of with no close frame from it


async def test_a_20_mb_upstream_event_and_the_events_right_behind_it_reach_a_reading_client(tmp_path: Path) -> None:
    """No size cap on the upstream side, and one big event followed at once by more is not a slow client: the
    client reads them all, in order, and the session goes on."""
    big = json.dumps({"type": "x.big", "event_id": "e2", "pad": "x" * (20 << 20)})
    after = [json.dumps({"type": "x.after", "event_id": f"e{n}"}) for n in range(3, 13)]

    async def flood_then_hold(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
        for event in (big, *after):
            await connection.send(event)
        await connection.wait_closed()

    async with scripted_upstream(flood_then_hold) as (url, _):
        async with running_relay(tmp_path, settings={"upstream": url}) as relay, aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url, max_msg_size=0) as ws:
                received = []
                async with asyncio.timeout(seconds(10)):
                    while len(received) < 2 + len(after):
                        message = await ws.receive()
                        assert message.type == aiohttp.WSMsgType.TEXT, (message.type, ws.close_code)
                        received.append(message.data)
            (log,) = (await ended_records(relay)).values()
    assert received[1:] == [big, *after]
    assert log[-1]["event"]["reason"] == "client_closed"


@pytest.mark.parametrize(("code", "client_code"), [(4000, 1014), (1000, 1000)])
async def test_an_upstream_close_frame_reaches_the_client_at_once_though_the_upstream_holds_tcp_open(
    tmp_path: Path, code: int, client_code: int
) -> None:
    """The client is told within 1 s of the upstream's close frame, however long the upstream keeps TCP open
    after it (the relay lets go of that connection after its close timeout)."""
    async with raw_upstream() as upstream:
        settings = {"upstream": upstream.url, "upstream_resume": False}
        async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url) as ws:
                peer = await upstream.accepted()
                peer.send(text(json.dumps({"type": "session.created", "event_id": "e1", "session": {}})))
                await receive_until(ws, lambda e: e["type"] == "session.created")
                peer.send(close_frame(code, "bye"))  # and never closes TCP
                dropped = time.monotonic()
                async with asyncio.timeout(seconds(5)):
                    while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        pass
                told = time.monotonic() - dropped
            (log,) = (await ended_records(relay)).values()
    assert ws.close_code == client_code
    assert told < seconds(0.5)
    assert log[-1]["event"]["upstream_close_code"] == code


async def test_a_wav_that_cannot_be_written_is_recorded_in_the_session_log_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full data_dir: the session's own log says which item has no WAV and why (not only the daemon's stream),
    and the conversation goes on."""
    import errno

    import relay.saving

    def full_disk(path: Path, save: Any) -> tuple[bytes, int]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(relay.saving, "write_item_wav", full_disk)
    async with running_relay(tmp_path, settings={"record_sessions": False}) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url + "?relay_events=1") as ws:
            await receive_until(ws, lambda e: e["type"] == "session.created")
            events, _ = await voice_turn(ws)
            item_ids = {e["item"]["id"] for e in events if e["type"] == "conversation.item.done"}
            await send(ws, text_item("still there?"))
            await send(ws, {"type": "response.create"})
            await receive_until(ws, lambda e: e["type"] == "response.done")
        (log,) = (await ended_records(relay)).values()
    not_saved = [r["event"] for r in log if r["type"] == "relay.audio_not_saved"]
    assert {e["item_id"] for e in not_saved} >= item_ids
    assert all(e["reason"] == "write_failed" and "No space left" in e["error"] for e in not_saved)
    assert not [r for r in log if r["type"] == "relay.audio_saved"]
    assert not list(relay.data_dir.rglob("*.wav*"))
