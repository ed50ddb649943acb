"""Session recording end to end: the official SDK -> `serve` -> the simulator with server VAD; the recording's two
channels hold what each side heard, where the event log says it crossed the relay."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from openai import AsyncOpenAI

from audio import pcm as pcmlib
from tests.support.recording_helpers import assert_stream_placed, placed_at_ms, read_stereo, rms
from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

RATE = 24000
TOLERANCE_MS = 40.0
Event = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def ended_log(relay: RunningRelay) -> list[Event]:
    """The one session's records, once its relay.session_ended is written."""
    deadline = time.monotonic() + seconds(10)
    while True:
        logs = relay.session_records()
        if logs and all(r and r[-1]["type"] == "relay.session_ended" for r in logs.values()):
            (records,) = logs.values()
            return records
        assert time.monotonic() < deadline, "the session did not end"
        await asyncio.sleep(0.02)


async def paced_appends(send: Any, data: bytes, rate: int, width: int = 2, chunk_ms: int = 20) -> None:
    """Append `data` in chunk_ms chunks at real time (absolute deadlines, so pacing does not drift)."""
    chunk = rate * chunk_ms // 1000 * width
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(data), chunk)):
        await send(data[offset : offset + chunk])
        await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.monotonic()))


def chunks_of(records: list[Event], type_: str, item_id: str | None = None) -> list[tuple[float, float]]:
    """(t_ms, audio ms) of each audio frame of a type (and item) as the log has it."""
    field = "audio" if type_ == "input_audio_buffer.append" else "delta"
    return [
        (r["t_ms"], r["event"][field]["audio_ms"])
        for r in records
        if r["type"] == type_ and r["dir"] in ("client", "server") and (item_id is None or r["item_id"] == item_id)
    ]


def first(records: list[Event], type_: str, dir_: str) -> Event:
    return next(r for r in records if r["type"] == type_ and r["dir"] == dir_)


async def test_the_recording_holds_the_user_and_the_reply_where_they_crossed_and_stops_at_a_barge_in(tmp_path: Path) -> None:
    question = synthesize(RATE, utterances=(1.0,), lead_s=0.3, tail_s=0.8, seed=11)
    interruption = synthesize(RATE, utterances=(0.6,), lead_s=0.0, tail_s=0.0, seed=12)
    async with running_relay(tmp_path, sim_speed=1.0) as relay:
        client = AsyncOpenAI(api_key="unused", base_url=f"{relay.base_url}/v1")
        async with client.realtime.connect(model="speech-realtime-250923") as conn:
            assert (await conn.recv()).type == "session.created"

            async def append(data: bytes) -> None:
                await conn.input_audio_buffer.append(audio=b64(data))

            reply = bytearray()
            reply_item: str | None = None
            first_delta_at = 0.0
            truncated_at_ms: int | None = None
            sender = asyncio.create_task(paced_appends(append, question.pcm, RATE))
            barge: asyncio.Task[None] | None = None
            async with asyncio.timeout(seconds(20)):
                async for event in conn:
                    if event.type == "response.output_audio.delta" and event.item_id == (reply_item or event.item_id):
                        if reply_item is None:
                            reply_item, first_delta_at = event.item_id, time.monotonic()
                        reply += base64.b64decode(event.delta)
                        if barge is None and len(reply) >= RATE * 2 * 0.7:  # 0.7 s of the reply heard: interrupt
                            await sender
                            barge = asyncio.create_task(paced_appends(append, interruption.pcm, RATE))
                    elif event.type == "input_audio_buffer.speech_started" and barge is not None and truncated_at_ms is None:
                        # What a real-time player has played of the reply by now is where it stops.
                        assert reply_item is not None
                        played = int((time.monotonic() - first_delta_at) * 1000)
                        truncated_at_ms = min(played, len(reply) * 1000 // (RATE * 2))
                        await conn.conversation.item.truncate(item_id=reply_item, content_index=0, audio_end_ms=truncated_at_ms)
                    elif event.type == "response.done" and truncated_at_ms is not None:
                        assert event.response.status == "cancelled"
                        break
            assert barge is not None
            await barge
        records = await ended_log(relay)

    assert reply_item is not None and truncated_at_ms is not None
    (saved,) = [r["event"] for r in records if r["type"] == "relay.recording_saved"]
    path = Path(saved["path"])
    assert path == relay.data_dir / "sessions" / records[0]["session_id"] / "recording.wav"
    assert saved["url"] == f"/relay/sessions/{records[0]['session_id']}/recording.wav"
    assert saved["bytes"] == path.stat().st_size and saved["dropped_ms"] == 0
    frames, rate = read_stereo(path)
    assert rate == RATE
    assert saved["duration_ms"] == pytest.approx(len(frames) * 1000 / RATE, abs=0.001)
    # Silence fills to the session's end: the file reaches the last record before it was saved.
    before_saved = records[[r["type"] for r in records].index("relay.recording_saved") - 1]
    assert len(frames) * 1000 / RATE >= before_saved["t_ms"] - 40

    left, right = frames[:, 0], frames[:, 1]
    # The user's two utterances, on the left, where their appends crossed the relay.
    said = np.frombuffer(question.pcm + interruption.pcm, "<i2")
    assert assert_stream_placed(left, said, RATE, chunks_of(records, "input_audio_buffer.append")) >= 5

    # The reply, on the right, from where its first delta crossed the relay, cut at the truncate point.
    deltas = chunks_of(records, "response.output_audio.delta", reply_item)
    heard = np.frombuffer(bytes(reply), "<i2")
    assert assert_stream_placed(right, heard, RATE, deltas, until_ms=truncated_at_ms) >= 1
    cut = int(placed_at_ms(deltas, truncated_at_ms) * RATE / 1000)
    assert rms(right[cut - RATE // 5 : cut]) > 100  # audible up to the cut
    assert not right[cut + RATE * 40 // 1000 :].any()  # silent after it
    truncate = first(records, "conversation.item.truncate", "client")
    assert truncate["event"]["audio_end_ms"] == truncated_at_ms


async def raw_turn(relay: RunningRelay, session: dict[str, Any], audio: bytes, rate: int, width: int) -> list[Event]:
    """A voice turn over a plain WebSocket: session.update, paced appends, events until response.done."""
    events: list[Event] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
        await ws.send_str(json.dumps({"type": "session.update", "session": session}))

        async def append(data: bytes) -> None:
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": b64(data)}))

        sender = asyncio.create_task(paced_appends(append, audio, rate, width))
        async with asyncio.timeout(seconds(20)):
            async for message in ws:
                event = json.loads(message.data)
                events.append(event)
                if event["type"] == "response.done":
                    break
        await sender
    return events


def _delta_audio(events: list[Event]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")


async def test_a_16_khz_session_is_recorded_at_the_recording_rate(tmp_path: Path) -> None:
    clip = synthesize(16000, utterances=(0.8,), lead_s=0.3, tail_s=0.8, seed=21)
    fmt = {"type": "audio/pcm", "rate": 16000}
    async with running_relay(tmp_path, sim_speed=1.0) as relay:
        events = await raw_turn(relay, {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}}, clip.pcm, 16000, 2)
        records = await ended_log(relay)
    frames, rate = read_stereo(relay.data_dir / "sessions" / records[0]["session_id"] / "recording.wav")
    assert rate == RATE
    user = np.frombuffer(pcmlib.resample_pcm16(clip.pcm, 16000, RATE), "<i2")
    assert assert_stream_placed(frames[:, 0], user, RATE, chunks_of(records, "input_audio_buffer.append")) >= 2
    reply = np.frombuffer(pcmlib.resample_pcm16(_delta_audio(events), 16000, RATE), "<i2")
    assert assert_stream_placed(frames[:, 1], reply, RATE, chunks_of(records, "response.output_audio.delta")) >= 2


async def test_a_g711_session_is_decoded_into_the_recording(tmp_path: Path) -> None:
    clip = synthesize(8000, utterances=(0.8,), lead_s=0.3, tail_s=0.8, seed=22)
    ulaw = pcmlib.ulaw_encode(clip.pcm)
    fmt = {"type": "audio/pcmu"}
    session = {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}
    async with running_relay(tmp_path, sim_speed=1.0, sim_flavour="openai") as relay:
        events = await raw_turn(relay, session, ulaw, 8000, 1)
        records = await ended_log(relay)
    frames, _ = read_stereo(relay.data_dir / "sessions" / records[0]["session_id"] / "recording.wav")
    user = np.frombuffer(pcmlib.resample_pcm16(pcmlib.ulaw_decode(ulaw), 8000, RATE), "<i2")
    assert assert_stream_placed(frames[:, 0], user, RATE, chunks_of(records, "input_audio_buffer.append")) >= 2
    reply = np.frombuffer(pcmlib.resample_pcm16(pcmlib.ulaw_decode(_delta_audio(events)), 8000, RATE), "<i2")
    assert assert_stream_placed(frames[:, 1], reply, RATE, chunks_of(records, "response.output_audio.delta")) >= 2


async def test_logs_html_of_a_recorded_session_shows_both_voices_under_the_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from relay.cli.main import main

    clip = synthesize(RATE, utterances=(0.8,), lead_s=0.3, tail_s=0.8, seed=41)
    async with running_relay(tmp_path, sim_speed=1.0) as relay:
        await raw_turn(relay, {}, clip.pcm, RATE, 2)
        records = await ended_log(relay)
    page = tmp_path / "page.html"
    assert main(["logs", str(relay.log_dir), "--html", str(page), "--data-dir", str(relay.data_dir)]) == 0
    capsys.readouterr()
    text = page.read_text()
    data = json.loads(re.search(r'id="recording-data">(.*?)</script>', text, re.S).group(1))  # type: ignore[union-attr]
    assert f'src="data/sessions/{records[0]["session_id"]}/recording.wav"' in text

    def loud_from_ms(peaks: list[int]) -> float:
        return next(i for i, v in enumerate(peaks) if v >= 5) * data["bucket_ms"]

    # Each voice shows where the log says it crossed the relay: the user's first loud append, the first delta.
    spoken_at = next(r["t_ms"] for r in records if r["type"] == "input_audio_buffer.append") + clip.utterances[0][0] * 1000
    assert abs(loud_from_ms(data["left"]) - spoken_at) <= 60
    first_delta = first(records, "response.output_audio.delta", "server")["t_ms"]
    assert abs(loud_from_ms(data["right"]) - first_delta) <= 60
