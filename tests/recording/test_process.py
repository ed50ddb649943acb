"""Session recording in a real `serve` process: a SIGKILL leaves a file that opens with the audio so far, and a
file that cannot grow (the process's file size limit, the way a full disk fails a write) stops the recording
with a logged gap while the session goes on."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.support import relay_fixtures
from tests.support.recording_helpers import assert_stream_placed, read_stereo
from tests.support.relay_fixtures import running_relay_process
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

RATE = 24000


def recording_frames(path: Path) -> int:
    """Frames the WAV header says the file holds (0 while it does not exist yet)."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes()
    except (FileNotFoundError, EOFError, wave.Error):
        return 0


async def paced(ws: aiohttp.ClientWebSocketResponse, data: bytes, chunk_ms: int = 20) -> None:
    chunk = RATE * chunk_ms // 1000 * 2
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(data), chunk)):
        audio = base64.b64encode(data[offset : offset + chunk]).decode()
        await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.monotonic()))


async def test_a_sigkilled_session_leaves_a_recording_that_opens_with_the_audio_so_far(tmp_path: Path) -> None:
    clip = synthesize(RATE, utterances=(1.5,), lead_s=0.2, tail_s=0.3, seed=31)
    async with running_relay_process(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await ws.receive()  # session.created
            await paced(ws, clip.pcm)
            started = await relay.wait_for_log("relay.session_started")
            path = tmp_path / "data" / "sessions" / started["session_id"] / "recording.wav"
            deadline = time.monotonic() + seconds(10)
            while recording_frames(path) < RATE * 1.5:  # the file catches up within a second or so
                assert time.monotonic() < deadline, "the recording did not reach the OS"
                await asyncio.sleep(0.05)
            relay.send_signal(signal.SIGKILL)
            assert await relay.wait() == -signal.SIGKILL
    frames, rate = read_stereo(path)  # the header matches the data: the file opens as it is
    assert rate == RATE and len(frames) >= RATE * 1.5
    assert path.stat().st_size == 44 + len(frames) * 4
    # The user's audio is in it, where the log says it arrived (the part written before the kill).
    lines = (tmp_path / "logs").glob(f"*/{started['session_id']}.jsonl")
    records = [json.loads(line) for path in lines for line in path.read_bytes().split(b"\n") if line.endswith(b"}")]
    chunks = [(r["t_ms"], r["event"]["audio"]["audio_ms"]) for r in records if r["type"] == "input_audio_buffer.append"]
    assert assert_stream_placed(frames[:, 0], np.frombuffer(clip.pcm, "<i2"), RATE, chunks) >= 3


async def test_a_file_that_cannot_grow_stops_the_recording_with_a_logged_gap_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 200_000  # bytes per file: the recording (96 kB/s) hits it after ~2 s, the event log much later
    launcher = (
        "import os, resource, sys;"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}));"
        "os.execv(sys.executable, [sys.executable, '-m', 'relay', *sys.argv[1:]])"
    )
    monkeypatch.setattr(relay_fixtures, "relay_command", lambda: [sys.executable, "-c", launcher])
    first = synthesize(RATE, utterances=(1.0,), lead_s=0.2, tail_s=0.8, seed=32)
    second = synthesize(RATE, utterances=(0.6,), lead_s=0.2, tail_s=0.8, seed=33)
    async with running_relay_process(tmp_path, args=["--log-level", "info"]) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            await ws.receive()  # session.created
            for clip in (first, second):
                sender = asyncio.create_task(paced(ws, clip.pcm))
                async with asyncio.timeout(seconds(20)):
                    while json.loads((await ws.receive()).data)["type"] != "response.done":
                        pass
                await sender
            stopped = await relay.wait_for_log("relay.recording_stopped")
        saved = await relay.wait_for_log("relay.recording_saved")
        ended = await relay.wait_for_log("relay.session_ended")
    assert stopped["reason"] == "write_failed" and "File too large" in stopped["error"]
    assert ended["reason"] == "client_closed"
    assert saved["stopped"] == "write_failed"
    path = Path(saved["path"])
    frames, _ = read_stereo(path)  # what was written before the limit still opens
    assert 0 < len(frames) * 4 + 44 <= limit
    assert saved["bytes_field"] == path.stat().st_size  # a daemon record keeps `bytes` as bytes_field (docs/configuration.md, one stdout schema)
