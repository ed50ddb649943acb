"""The mic session through the real relay core and the real simulator, with a sound card made of software.

`SoftSoundCard` stands where PortAudio stands: a capture thread delivers blocks with
`loop.call_soon_threadsafe` like the capture callback, and a speaker thread calls `PlaybackBuffer.read_into`
like the output callback, keeping everything it "played". Both run on one device clock (faster than real
time here, since the simulator runs with speed 0 and its VAD counts appended audio, not wall time). So these
tests check the whole `mic` path except PortAudio itself: appends, echo playback, barge-in with the truncate
point counted at the callback, half-duplex muting, event log and WAVs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from audio.playback import PlaybackBuffer, PlaybackWriter
from relay.core.formats import DEFAULT_FORMAT
from relay.mic.agent import MicAgent
from relay.mic.display import Display
from relay.mic.session import drive_session
from relay.settings import Settings, load_settings
from tests.support.timing import seconds

RATE = 48000  # the soft card's rate (capture and playback)
BLOCK = RATE // 100  # 10 ms device blocks
CLOCK_SPEEDUP = 4.0  # device time runs this much faster than wall time


class SoftSoundCard:
    """A capture clock feeding the loop and a speaker clock draining the buffer, in device time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[np.ndarray], buffer: PlaybackBuffer) -> None:
        self._loop, self._queue, self._buffer = loop, queue, buffer
        self._lock = threading.Lock()
        self._to_say: list[np.ndarray] = []
        self.heard: list[np.ndarray] = []  # every block the speaker played, in order
        self._running = False
        self._thread: threading.Thread | None = None

    def say(self, samples: np.ndarray) -> None:
        """Speak into the microphone from the next block on."""
        with self._lock:
            self._to_say.append(samples.astype(np.float32))

    @property
    def saying(self) -> bool:
        with self._lock:
            return bool(self._to_say)

    def heard_samples(self) -> np.ndarray:
        return np.concatenate(list(self.heard)) if self.heard else np.zeros(0, np.float32)

    def _next_capture_block(self) -> np.ndarray:
        block = np.zeros(BLOCK, np.float32)
        with self._lock:
            filled = 0
            while self._to_say and filled < BLOCK:
                head = self._to_say[0]
                n = min(BLOCK - filled, len(head))
                block[filled : filled + n] = head[:n]
                filled += n
                if n == len(head):
                    self._to_say.pop(0)
                else:
                    self._to_say[0] = head[n:]
        return block

    def _run(self) -> None:
        tick = BLOCK / RATE / CLOCK_SPEEDUP
        next_at = time.monotonic()
        while self._running:
            block = self._next_capture_block()
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, block)
            except RuntimeError:
                return
            out = np.zeros(BLOCK, np.float32)
            self._buffer.read_into(out)
            self.heard.append(out)
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))  # the device clock, not a synchronisation

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)


class Recorder(Display):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.words: dict[str, str] = {}

    def status(self, text: str) -> None:
        self.lines.append(f"[{text}]")

    def user_transcript(self, text: str) -> None:
        self.lines.append(f"you: {text}")

    def assistant_delta(self, item_id: str, text: str) -> None:
        self.words[item_id] = self.words.get(item_id, "") + text

    def assistant_done(self, item_id: str, interrupted: bool = False) -> None:
        said = self.words.pop(item_id, "")
        self.lines.append(f"assistant done {item_id}: {said}{' [interrupted]' if interrupted else ''}")

    def notice(self, text: str) -> None:
        self.lines.append(f"* {text}")


def settings_for(tmp_path: Path, env: dict[str, str] | None = None, **flags: Any) -> Settings:
    base = {
        "upstream": "sim",
        "sim_speed": 0,
        "log_dir": str(tmp_path / "logs"),
        "data_dir": str(tmp_path / "data"),
    }
    return load_settings({**base, **flags}, env=env or {}).settings


def utterance(secs: float, pitch: float = 150.0) -> np.ndarray:
    """A voiced, speech-like sound whose pitch glides (so a correlation can only match it at one place)."""
    t = np.arange(int(RATE * secs)) / RATE
    phase = 2 * np.pi * (pitch * t + 40 * t**2)
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.3 * wave / np.max(np.abs(wave)) * envelope).astype(np.float32)


class Session:
    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None, **flags: Any) -> None:
        self.settings = settings_for(tmp_path, env, **flags)
        self.buffer = PlaybackBuffer(RATE, prefill_ms=self.settings.playback_buffer_ms)
        self.display = Recorder()
        self.agent = MicAgent(
            capture_rate=RATE,
            writer=PlaybackWriter(self.buffer, DEFAULT_FORMAT.rate),
            chunk_ms=self.settings.chunk_ms,
            duplex=self.settings.duplex,
            display=self.display,
        )
        self.stop = asyncio.Event()
        self.queue: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self.card = SoftSoundCard(asyncio.get_running_loop(), self.queue, self.buffer)
        self.task = asyncio.create_task(
            drive_session(self.settings, self.agent, self.queue, self.card, started_info={"test": True}, stop=self.stop)
        )

    async def until(self, condition: Any, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + seconds(timeout)
        while not condition():
            if self.task.done():
                await self.task
                raise AssertionError(f"session ended while waiting for {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; display: {self.display.lines}")
            await asyncio.sleep(0.01)

    def shown(self, text: str) -> bool:
        return any(text in line for line in self.display.lines)

    async def finish(self) -> Any:
        self.stop.set()
        return await asyncio.wait_for(self.task, seconds(20))


def log_records(tmp_path: Path) -> list[dict[str, Any]]:
    files = sorted((tmp_path / "logs").glob("*/*.jsonl"))
    assert len(files) == 1
    return [orjson.loads(line) for line in files[0].read_bytes().splitlines()]


def all_files(paths: Any) -> bool:
    return all(Path(p).is_file() for p in paths)


def best_correlation(haystack: np.ndarray, needle: np.ndarray) -> float:
    n = len(needle)
    size = 1 << int(np.ceil(np.log2(len(haystack) + n)))
    corr = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)[: len(haystack) - n + 1]
    energy = np.convolve(haystack.astype(np.float64) ** 2, np.ones(n), mode="valid")
    return float(np.max(corr / (np.sqrt(np.maximum(energy, 1e-12)) * np.linalg.norm(needle))))


async def echo_session(tmp_path: Path) -> tuple[Session, np.ndarray, Any]:
    """One utterance said, its echo played out, the session ended: (session, what was said, its run)."""
    s = Session(tmp_path)
    await s.until(lambda: s.agent.ready, "session.created")
    said = utterance(1.5)
    s.card.say(said)
    await s.until(lambda: s.shown("[listening]") and s.shown("assistant done"), "the reply")
    await s.until(lambda: not s.buffer.is_active, "the reply to play out")
    return s, said, await s.finish()


async def test_the_echo_of_what_was_said_is_played_and_logged(tmp_path: Path) -> None:
    s, said, run = await echo_session(tmp_path)

    assert run.outcome.reason == "client_closed"
    assert best_correlation(s.card.heard_samples(), said) > 0.95
    records = log_records(tmp_path)
    assert records[0]["type"] == "relay.session_started"
    assert records[0]["event"]["mode"] == "mic"
    appends = [r for r in records if r["type"] == "input_audio_buffer.append"]
    assert appends and {r["event"]["audio"]["audio_ms"] for r in appends} == {20.0}
    assert records[-1]["type"] == "relay.session_ended"
    saved = [r["event"] for r in records if r["type"] == "relay.audio_saved"]
    assert {Path(e["path"]).parent for e in saved} == {tmp_path / "data" / "sessions" / run.outcome.session_id}
    assert len(saved) == 2 and all_files(e["path"] for e in saved)
    assert s.shown("* saved")  # the terminal hears about saved audio through relay events


async def test_barge_in_truncates_at_the_samples_the_speaker_played(tmp_path: Path) -> None:
    # The simulator paces its reply on the sound card's clock, so the response is still live when interrupted.
    s = Session(tmp_path, duplex="full", sim_speed=CLOCK_SPEEDUP)
    await s.until(lambda: s.agent.ready, "session.created")
    s.card.say(utterance(3.0))
    await s.until(lambda: np.count_nonzero(s.card.heard_samples()) > RATE // 2, "half a second of the reply")
    s.card.say(utterance(1.0, pitch=220.0))
    await s.until(lambda: s.agent.stats.barge_ins, "the barge-in")
    barge = s.agent.stats.barge_ins[0]
    await s.until(lambda: s.shown("[listening]") and not s.card.saying, "the interruption to be sent")
    await s.finish()

    heard = s.card.heard_samples()
    sounding = np.flatnonzero(np.abs(heard) > 0)
    reply_start = sounding[0]
    # The reply stopped at once: after its last played sample the speaker is silent until the next reply.
    reply_end = reply_start + barge.cleared.played_samples
    assert not np.any(heard[reply_end : reply_end + RATE // 5])
    assert np.any(heard[reply_end - BLOCK : reply_end])
    assert barge.audio_end_ms == barge.cleared.played_samples * 1000 // RATE
    records = log_records(tmp_path)
    sent = [r for r in records if r["dir"] == "client" and r["type"] in ("response.cancel", "conversation.item.truncate")]
    assert [r["type"] for r in sent] == ["response.cancel", "conversation.item.truncate"]
    assert sent[1]["event"]["audio_end_ms"] == barge.audio_end_ms
    assert sent[1]["event"]["item_id"] == barge.item_id
    assert any(r["type"] == "conversation.item.truncated" for r in records)


async def test_half_duplex_sends_silence_while_the_reply_plays(tmp_path: Path) -> None:
    s = Session(tmp_path, duplex="half")
    await s.until(lambda: s.agent.ready, "session.created")
    s.card.say(utterance(2.0))
    await s.until(lambda: np.count_nonzero(s.card.heard_samples()) > RATE // 2, "the reply")
    s.card.say(utterance(0.8, pitch=220.0))  # said over the reply: the model must not hear it
    await s.until(lambda: not s.card.saying, "the words to be said")
    await s.until(lambda: not s.buffer.recently_active(500), "the reply to end")
    await s.finish()

    assert s.agent.stats.barge_ins == []
    assert s.agent.stats.muted_blocks > 0
    records = log_records(tmp_path)
    assert sum(r["type"] == "input_audio_buffer.speech_started" for r in records) == 1


async def test_an_unreachable_upstream_ends_the_session_with_a_message(tmp_path: Path) -> None:
    s = Session(tmp_path, upstream="ws://127.0.0.1:9/v1/realtime")
    run = await asyncio.wait_for(s.task, seconds(20))
    assert run.outcome.reason == "upstream_unavailable"
    assert s.shown("upstream_unavailable")


@pytest.mark.parametrize("flavour", ["yandex", "openai"])
async def test_transcripts_of_both_flavours_reach_the_terminal(tmp_path: Path, flavour: str) -> None:
    s = Session(tmp_path, sim_flavour=flavour)
    await s.until(lambda: s.agent.ready, "session.created")
    s.card.say(utterance(1.0))
    await s.until(lambda: s.shown("assistant done"), "the reply")
    await s.finish()
    assert s.shown("you: [speech")
    assert s.shown(": Echo of [speech")  # yandex: response.output_text.delta; openai: ...audio_transcript.delta


async def test_the_session_rates_are_followed_when_the_session_changes_them(tmp_path: Path) -> None:
    # An operator-pinned session.update goes out at session start; its session.updated sets new rates.
    pinned = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}, "output": {"format": {"type": "audio/pcm", "rate": 22050}}}}
    s = Session(tmp_path, env={"RELAY_PINNED_SESSION": orjson.dumps(pinned).decode()})
    await s.until(lambda: s.agent.input_format.rate == 16000 and s.agent.output_format.rate == 22050, "the new rates")
    said = utterance(1.5)
    s.card.say(said)
    await s.until(lambda: s.shown("assistant done"), "the reply")
    await s.until(lambda: not s.buffer.is_active, "the reply to play out")
    await s.finish()

    records = log_records(tmp_path)
    appends = [r["event"]["audio"] for r in records if r["type"] == "input_audio_buffer.append"]
    assert appends[-1] == {**appends[-1], "audio_bytes": 640}  # 20 ms at 16 kHz
    deltas = [r for r in records if r["type"] == "response.output_audio.delta"]
    assert deltas
    # Played at the right speed: the echo matches what was said (a wrong rate would stretch it).
    assert best_correlation(s.card.heard_samples(), said) > 0.9
