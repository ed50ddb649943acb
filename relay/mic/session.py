"""The `mic` session driver: this machine's microphone and speaker as the client of one relay session (C7).

Layers, each with one job:
- `MicAgent` is the client's brain and does no I/O: microphone blocks in -> `input_audio_buffer.append` frames
  out (converted to the session's input format, exactly `chunk_ms` each, muted in half duplex while the
  assistant is audible); server events in -> playback (through `PlaybackWriter`), transcripts (through a
  `Display`), and barge-in (`PlaybackWriter.clear()`, `response.cancel`, `conversation.item.truncate` with the
  milliseconds of that item the speaker actually played, counted at the output callback).
- `TerminalDisplay` prints transcripts as whole lines and, on a TTY, a status line with a level meter.
- `MicClient` is the in-process client side (`relay.links.base.ClientSide`): what a WebSocket is for `serve`.
- `drive_session()` runs one session through the relay core with any `AudioIO`; `run_mic_session()` does it
  on this machine's PortAudio devices (`audio.devices`).

The relay core (`relay.bridge`, `relay.core.session`) sits between `MicClient` and the upstream exactly as it sits
between a browser and the upstream in `serve`, so the event log, retrieve-after-done and WAV saving are the
same code. I/O here: the devices (through `audio.devices`), the terminal, and what the bridge does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import numpy as np
import numpy.typing as npt
import orjson

from audio import pcm
from audio.devices import CaptureStream, DeviceInfo, PlaybackStream, check_rate, find_device
from audio.playback import ClearResult, PlaybackBuffer, PlaybackWriter
from audio.resample import StreamResampler
from relay.bridge import SessionBridge
from relay.core import events as ev
from relay.core.session import DEFAULT_FORMAT, AudioFormat
from relay.eventlog.writer import EventLog
from relay.links.base import ClientFrame
from relay.links.upstream import redact_url
from relay.outcome import SessionOutcome
from relay.settings import UPSTREAM_SIM
from relay.simulator import RunningSimulator, start_simulator
from relay.wiring import session_environment, session_policy, simulator_options, upstream_target

if TYPE_CHECKING:
    from relay.settings import Settings

G711_TYPES: Final = ("audio/pcmu", "audio/pcma")
# How long after the last assistant sample left the callback the half-duplex mute holds, on top of the output
# stream's own latency: the sound is still in the sound server's buffers and the room.
ECHO_TAIL_MS: Final = 150
# The speaker stream: a barge-in's clear() is heard after at most one callback block plus the device latency.
# Measured through ALSA -> PulseAudio with PortAudio's clock: clear() -> DAC time of the first silent block
# ~25 ms (max ~29 ms), inside C7's 50 ms. PortAudio's "low" (~10 ms) stops faster but underruns audibly on a
# loaded machine, where the Python callback has to wait for the GIL.
OUTPUT_BLOCK_MS: Final = 5
OUTPUT_LATENCY_MS: Final = 20
LEVEL_EVERY: Final = 5  # level meter redraws: one per this many microphone blocks


def encode_input(samples: npt.NDArray[np.float32], fmt: AudioFormat) -> bytes:
    """Float samples already at `fmt.rate` -> wire bytes of `fmt` (PCM16, or G.711 at 8 kHz)."""
    data = pcm.float_to_pcm16(samples)
    if fmt.type == "audio/pcmu":
        return pcm.ulaw_encode(data)
    if fmt.type == "audio/pcma":
        return pcm.alaw_encode(data)
    return data


def decode_output(data: bytes, fmt: AudioFormat) -> bytes:
    """Wire bytes of `fmt` -> PCM16 at `fmt.rate`."""
    if fmt.type == "audio/pcmu":
        return pcm.ulaw_decode(data)
    if fmt.type == "audio/pcma":
        return pcm.alaw_decode(data)
    return data


def _session_formats(event: dict[str, Any], current: tuple[AudioFormat, AudioFormat]) -> tuple[AudioFormat, AudioFormat]:
    session = event.get("session")
    audio = session.get("audio") if isinstance(session, dict) else None
    if not isinstance(audio, dict):
        return current
    result = list(current)
    for i, direction in enumerate(("input", "output")):
        part = audio.get(direction)
        if isinstance(part, dict) and "format" in part:
            result[i] = AudioFormat.from_config(part["format"], current[i])
    return result[0], result[1]


class Display:
    """Where the agent reports what a person should see. The base class shows nothing (tests, --quiet)."""

    def status(self, text: str) -> None:
        pass

    def level(self, dbfs: float, muted: bool) -> None:
        pass

    def user_transcript(self, text: str) -> None:
        pass

    def assistant_delta(self, item_id: str, text: str) -> None:
        pass

    def assistant_done(self, item_id: str, interrupted: bool = False) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


class TerminalDisplay(Display):
    """Transcripts as whole lines; on a TTY also a status line (state, level meter, the assistant's words so far)
    redrawn in place.

    Only whole lines are ever written outside the status line, so other writers of the same stream (the
    daemon's log records) never land in the middle of a transcript.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream if stream is not None else sys.stdout
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._status = "connecting"
        self._meter = ""
        self._partial: dict[str, str] = {}  # assistant text per item, printed as one line when done
        self._level_calls = 0

    def _redraw(self) -> None:
        if not self._tty:
            return
        words = ""
        if self._partial:
            text = next(reversed(self._partial.values()))
            words = " | assistant: " + (text if len(text) <= 60 else "..." + text[-57:])
        # Cursor back to column 0 afterwards: whatever else writes to the terminal (log records) overwrites
        # the status line instead of being appended to it; the next redraw puts it back.
        self._out.write(f"\r\x1b[2K[{self._status}] {self._meter}{words}\r")
        self._out.flush()

    def _line(self, text: str) -> None:
        if self._tty:
            self._out.write("\r\x1b[2K")
        self._out.write(text + "\n")
        self._redraw()
        self._out.flush()

    def status(self, text: str) -> None:
        self._status = text
        if self._tty:
            self._redraw()
        else:
            self._line(f"[{text}]")

    def level(self, dbfs: float, muted: bool) -> None:
        if not self._tty:
            return
        # One redraw per LEVEL_EVERY blocks (~10 per second with 20 ms blocks) is plenty for a meter.
        self._level_calls += 1
        if self._level_calls % LEVEL_EVERY:
            return
        bars = max(0, min(20, int((dbfs + 60.0) / 3.0)))
        self._meter = ("muted " if muted else "mic ") + "#" * bars + "." * (20 - bars) + f" {dbfs:5.0f} dB"
        self._redraw()

    def user_transcript(self, text: str) -> None:
        self._line(f"you: {text.strip()}")

    def assistant_delta(self, item_id: str, text: str) -> None:
        self._partial[item_id] = self._partial.get(item_id, "") + text
        self._redraw()

    def assistant_done(self, item_id: str, interrupted: bool = False) -> None:
        text = self._partial.pop(item_id, None)
        if text is not None:
            self._line(f"assistant: {text.strip()}" + (" [interrupted]" if interrupted else ""))

    def notice(self, text: str) -> None:
        self._line(f"* {text}")


@dataclass
class BargeIn:
    """What one barge-in did (kept for the status line, the tests and the report)."""

    item_id: str | None
    audio_end_ms: int
    cancelled_response: str | None
    cleared: ClearResult


@dataclass
class MicStats:
    appends: int = 0
    appended_ms: float = 0.0
    muted_blocks: int = 0
    barge_ins: list[BargeIn] = field(default_factory=list)
    dropped_deltas: int = 0
    bad_deltas: int = 0


class MicAgent:
    """The local client's decisions. Not thread-safe: the event loop calls every method.

    `on_capture()` and `on_server_event()` return the client frames to send upstream (JSON text), in order.
    """

    def __init__(
        self,
        *,
        capture_rate: int,
        writer: PlaybackWriter,
        chunk_ms: int = 20,
        duplex: str = "half",
        display: Display | None = None,
        output_latency_ms: float = 0.0,
    ) -> None:
        if duplex not in ("half", "full"):
            raise ValueError(f"duplex must be 'half' or 'full', got {duplex!r}")
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, int) or chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be a positive integer, got {chunk_ms!r}")
        self.chunk_ms = chunk_ms
        self.duplex = duplex
        self.display = display if display is not None else Display()
        self.input_format = DEFAULT_FORMAT
        self.output_format = DEFAULT_FORMAT
        self.ready = False  # session.created seen: the input format is known, audio may flow
        self.stats = MicStats()
        self.capture_rate = capture_rate
        self._writer = writer
        self._buffer = writer.buffer
        self._capture = StreamResampler(capture_rate, self.input_format.rate)
        self._pending: deque[npt.NDArray[np.float32]] = deque()
        self._pending_samples = 0
        self._mute_tail_ms = int(ECHO_TAIL_MS + output_latency_ms)
        self._live_response: str | None = None
        self._silenced_responses: set[str] = set()  # cancelled by a barge-in: late deltas are not played
        self._silenced_items: set[str] = set()
        self._content_index: dict[str, int] = {}
        self._event_seq = 0

    @property
    def playback_buffer(self) -> PlaybackBuffer:
        """The speaker's buffer (what the output callback plays from)."""
        return self._buffer

    # --- microphone -> upstream -----------------------------------------------------------------------------

    @property
    def muted(self) -> bool:
        """Half duplex: the microphone is replaced by silence while the assistant is audible."""
        return self.duplex == "half" and self._buffer.recently_active(self._mute_tail_ms)

    def on_capture(self, block: npt.ArrayLike) -> list[str]:
        samples = np.asarray(block, dtype=np.float32).reshape(-1)
        muted = self.muted
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
        self.display.level(20.0 * math.log10(max(rms, 1e-6)), muted)
        if not self.ready:
            return []  # no session yet: its input rate is unknown, and nobody is listening
        if muted:
            # Silence, not nothing: the upstream's audio clock (VAD times, truncate maths) keeps running.
            samples = np.zeros_like(samples)
            self.stats.muted_blocks += 1
        return self._queue_input(self._capture.process(samples))

    def _queue_input(self, samples: npt.NDArray[np.float32]) -> list[str]:
        if len(samples):
            self._pending.append(samples)
            self._pending_samples += len(samples)
        chunk = self.input_format.rate * self.chunk_ms // 1000
        frames: list[str] = []
        while chunk and self._pending_samples >= chunk:
            joined = np.concatenate(list(self._pending))
            out, rest = joined[:chunk], joined[chunk:]
            self._pending.clear()
            if len(rest):
                self._pending.append(rest)
            self._pending_samples = len(rest)
            frames.append(self._append_frame(out))
        return frames

    def _append_frame(self, samples: npt.NDArray[np.float32]) -> str:
        self.stats.appends += 1
        self.stats.appended_ms += len(samples) * 1000.0 / self.input_format.rate
        audio = pcm.encode_base64_audio(encode_input(samples, self.input_format))
        return self._frame({"type": ev.INPUT_AUDIO_BUFFER_APPEND, "audio": audio})

    def _frame(self, event: dict[str, Any]) -> str:
        self._event_seq += 1
        event.setdefault("event_id", f"mic_{self._event_seq}")
        return orjson.dumps(event).decode()

    # --- upstream -> speaker, terminal, barge-in ------------------------------------------------------------

    def on_server_text(self, text: str) -> list[str]:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []
        return self.on_server_event(event) if isinstance(event, dict) else []

    def on_server_event(self, event: dict[str, Any]) -> list[str]:
        kind = event.get("type")
        if kind in (ev.SESSION_CREATED, ev.SESSION_UPDATED):
            frames = self._follow_formats(event)
            if not self.ready:
                self.ready = True
                self.display.status("listening")
            return frames
        if kind == ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED:
            return self._speech_started()
        if kind == ev.RESPONSE_CREATED:
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self._live_response = response["id"]
            self.display.status("assistant")
            return []
        if kind == ev.RESPONSE_DONE:
            response = event.get("response")
            rid = response.get("id") if isinstance(response, dict) else None
            if rid is None or rid == self._live_response:
                self._live_response = None
            self._writer.end_item()
            self.display.status("listening")
            return []
        if kind == ev.RESPONSE_OUTPUT_AUDIO_DELTA:
            self._audio_delta(event)
            return []
        if kind == ev.RESPONSE_OUTPUT_AUDIO_DONE:
            self._writer.end_item()
            return []
        if kind in (ev.RESPONSE_OUTPUT_TEXT_DELTA, ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA):
            item_id, delta = event.get("item_id"), event.get("delta")
            if isinstance(delta, str) and not self._is_silenced(event):
                self.display.assistant_delta(item_id if isinstance(item_id, str) else "", delta)
            return []
        if kind in (ev.RESPONSE_OUTPUT_TEXT_DONE, ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE):
            item_id = event.get("item_id")
            self.display.assistant_done(item_id if isinstance(item_id, str) else "")
            return []
        if kind == ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED:
            transcript = event.get("transcript")
            if isinstance(transcript, str) and transcript.strip():
                self.display.user_transcript(transcript)
            return []
        if kind == ev.ERROR:
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            self.display.notice(f"error {code or ''}: {message or event}".strip())
            return []
        if kind == ev.RELAY_AUDIO_SAVED:
            self.display.notice(f"saved {event.get('item_id')} ({event.get('duration_ms')} ms)")
            return []
        if kind == ev.RELAY_TOOL_CALL:  # a server-side tool ran (docs/tools.md)
            self.display.notice(f"tool {event.get('name')}: {event.get('result')} ({event.get('duration_ms')} ms)")
            return []
        return []

    def _follow_formats(self, event: dict[str, Any]) -> list[str]:
        """Adopt the session's formats; returns the appends still owed at the old input rate."""
        new_in, new_out = _session_formats(event, (self.input_format, self.output_format))
        frames: list[str] = []
        if new_in != self.input_format:
            # Audio already converted at the old rate goes out at the old rate (the filter's tail and a short
            # last chunk); then a fresh stream at the new rate: no sample is sent at the wrong rate.
            frames = self._queue_input(self._capture.set_rates(self._capture.in_rate, new_in.rate))
            if self._pending_samples:
                frames.append(self._append_frame(np.concatenate(list(self._pending))))
            self._pending.clear()
            self._pending_samples = 0
            self.input_format = new_in
        if new_out != self.output_format:
            self.output_format = new_out
            self._writer.set_source_rate(new_out.rate)
        return frames if self.ready else []

    def _audio_delta(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if self._is_silenced(event):
            self.stats.dropped_deltas += 1
            return
        delta = event.get("delta")
        if not isinstance(delta, str):
            self.stats.bad_deltas += 1
            return
        try:
            data = pcm.decode_base64_audio(delta)
        except pcm.AudioFormatError:
            self.stats.bad_deltas += 1
            return
        if isinstance(item_id, str):
            index = event.get("content_index")
            self._content_index[item_id] = index if isinstance(index, int) and not isinstance(index, bool) else 0
        self._writer.write_pcm16(decode_output(data, self.output_format), item_id if isinstance(item_id, str) else None)

    def _is_silenced(self, event: dict[str, Any]) -> bool:
        return event.get("response_id") in self._silenced_responses or event.get("item_id") in self._silenced_items

    def _speech_started(self) -> list[str]:
        self.display.status("you")
        if not self._buffer.is_active:
            return []  # nothing audible to interrupt: the server's own VAD handles its response
        cleared = self._writer.clear()
        frames: list[str] = []
        cancelled = self._live_response
        if cancelled is not None:
            self._silenced_responses.add(cancelled)
            frames.append(self._frame({"type": ev.RESPONSE_CANCEL, "response_id": cancelled}))
            self._live_response = None
        item_id = cleared.item_id
        if item_id is not None:
            self._silenced_items.add(item_id)
            frames.append(
                self._frame(
                    {
                        "type": ev.CONVERSATION_ITEM_TRUNCATE,
                        "item_id": item_id,
                        "content_index": self._content_index.get(item_id, 0),
                        "audio_end_ms": cleared.played_ms,
                    }
                )
            )
        if item_id is not None:
            self.display.assistant_done(item_id, interrupted=True)
        self.stats.barge_ins.append(BargeIn(item_id, cleared.played_ms, cancelled, cleared))
        self.display.notice(f"barge-in: stopped {item_id} at {cleared.played_ms} ms")
        return frames


# --- the in-process client side of the bridge ----------------------------------------------------------


class MicClient:
    """The bridge's `ClientSide` for `mic`: frames come from the agent, server frames go to the agent.

    `send()` is called by the bridge in its flush, on the loop: the agent reacts at once (a barge-in clears
    the speaker before the next frame is even read). `finish()` ends the session like a client closing.
    """

    def __init__(self, agent: MicAgent) -> None:
        self.agent = agent
        self._outgoing: asyncio.Queue[ClientFrame] = asyncio.Queue()
        self._finished = False
        self.closed: asyncio.Event = asyncio.Event()
        self.close_code: int | None = None

    def push(self, frames: list[str]) -> None:
        if not self._finished:
            for text in frames:
                self._outgoing.put_nowait(ClientFrame(text=text))

    def finish(self, code: int = 1000) -> None:
        """The local user is done (Ctrl-C): the session ends as `client_closed`."""
        if not self._finished:
            self._finished = True
            self._outgoing.put_nowait(ClientFrame(closed=True, close_code=code))

    def on_capture(self, block: npt.NDArray[np.float32]) -> None:
        self.push(self.agent.on_capture(block))

    # ClientSide protocol
    async def receive(self) -> ClientFrame:
        return await self._outgoing.get()

    def send(self, text: str) -> bool:
        self.push(self.agent.on_server_text(text))
        return True  # the agent consumes synchronously: there is no backlog to overflow

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        self._finished = True
        self.close_code = code
        if code != 1000:
            self.agent.display.notice(f"session closed: {code} {reason}")
        self.closed.set()
        return code

    def abort(self) -> None:
        self._finished = True
        self.closed.set()


# --- wiring: settings -> devices, upstream, event log, bridge --------------------------------------------


@dataclass
class MicResult:
    outcome: SessionOutcome
    agent: MicAgent
    underruns: int  # the jitter buffer ran dry mid-reply
    log_path: Path | None
    upstream_url: str
    capture_overflows: int = 0  # PortAudio lost microphone input
    capture_dropped_blocks: int = 0  # the loop fell behind and dropped microphone blocks
    output_underflows: int = 0  # the device ran dry before the callback delivered


def _wants_simulator(settings: Settings) -> bool:
    """`--upstream sim` (the CLI applies `simulator_fallback` first, as `serve` does, C1)."""
    return settings.upstream == UPSTREAM_SIM


@dataclass
class MicDevices:
    capture: DeviceInfo
    playback: DeviceInfo


def choose_devices(settings: Settings) -> MicDevices:
    """The input and output devices, checked at their default rates. Raises audio DeviceError."""
    mic = find_device(settings.input_device, "input")
    speaker = find_device(settings.output_device, "output")
    check_rate(mic, mic.default_rate, "input")
    check_rate(speaker, speaker.default_rate, "output")
    return MicDevices(mic, speaker)


class AudioIO(Protocol):
    """The sound card as the session sees it: started once everything is ready, stopped first at the end."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class DeviceAudio:
    """The PortAudio pair: the speaker starts before the microphone so the first reply finds it running."""

    microphone: CaptureStream
    speaker: PlaybackStream

    def start(self) -> None:
        self.speaker.start()
        self.microphone.start()

    def stop(self) -> None:
        self.microphone.stop()
        self.speaker.stop()


@dataclass
class SessionRun:
    outcome: SessionOutcome
    log_path: Path | None
    upstream_url: str


async def drive_session(
    settings: Settings,
    agent: MicAgent,
    captured: asyncio.Queue[npt.NDArray[np.float32]],
    audio: AudioIO,
    *,
    started_info: dict[str, Any],
    stop: asyncio.Event | None = None,
) -> SessionRun:
    """Run one session through the relay core: `captured` blocks go to the agent, the agent is the client.

    Starts the embedded simulator when asked (`--upstream sim`, or no credentials for the default upstream),
    the event log and the bridge; `audio` runs while the session does. Ends when the upstream ends the session
    or `stop` is set (the client closes, like Ctrl-C); then the audio stops, the log is flushed and closed and
    the simulator shut down, in that order.
    """
    display = agent.display
    client = MicClient(agent)
    simulator: RunningSimulator | None = None
    event_log: EventLog | None = None
    pump: asyncio.Task[None] | None = None
    stopper: asyncio.Future[Any] | None = None
    try:
        url = settings.upstream
        if _wants_simulator(settings):
            simulator = await start_simulator(simulator_options(settings), "127.0.0.1", 0)
            url = simulator.realtime_url
            display.notice(f"using the embedded simulator at {url} (no upstream credentials or --upstream sim)")
        target = upstream_target(settings, url, simulator=simulator is not None)
        event_log = EventLog(
            Path(settings.log_dir) if settings.event_log_files else None,
            to_stdout=settings.event_log_stdout,
            max_queue_bytes=settings.log_queue_max_bytes,
            keep_text=settings.log_content,
            audio_hash=settings.log_audio_hash,
        )
        # Recorded from the devices, not the frames: what the microphone captured, what the speaker played.
        env = session_environment(settings, event_log, record_frames=False)
        bridge = SessionBridge(
            client, target, session_policy(settings, relay_events=True), env, started_info={"mode": "mic", **started_info}
        )
        loop = asyncio.get_running_loop()
        speaker_rate = agent.playback_buffer.rate

        def record_played(samples: npt.NDArray[np.float32], at: float) -> None:
            if bridge.recorder is not None:
                bridge.recorder.played_samples(samples, speaker_rate, at)

        def played(samples: npt.NDArray[np.float32], at: float) -> None:  # on the speaker's callback thread
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing is recorded any more
                loop.call_soon_threadsafe(record_played, samples, at)

        if env.recording is not None:
            agent.playback_buffer.on_played = played

        async def pump_capture() -> None:
            while True:
                block = await captured.get()
                client.on_capture(block)
                if bridge.recorder is not None:
                    bridge.recorder.user_samples(block, agent.capture_rate)

        audio.start()
        pump = asyncio.create_task(pump_capture(), name="mic-capture")
        run = asyncio.create_task(bridge.run(), name="mic-session")
        waiters: set[asyncio.Future[Any]] = {run}
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            waiters.add(stopper)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            client.finish()
        outcome = await run
        return SessionRun(
            outcome=outcome,
            log_path=bridge.log.path(Path(settings.log_dir)) if settings.event_log_files else None,
            upstream_url=redact_url(target.url),
        )
    finally:
        # Audio first (no more callbacks into a closing session), then the tasks, the log, the simulator.
        audio.stop()
        agent.playback_buffer.on_played = None
        for task in (pump, stopper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if event_log is not None:
            await asyncio.to_thread(event_log.close)
        if simulator is not None:
            await simulator.close()


async def run_mic_session(
    settings: Settings,
    *,
    display: Display,
    stop: asyncio.Event | None = None,
    chosen: MicDevices | None = None,
) -> MicResult:
    """One mic session on this machine's devices, from start to clean end. `stop` set = Ctrl-C."""
    loop = asyncio.get_running_loop()
    chosen = chosen or choose_devices(settings)
    capture_rate, playback_rate = chosen.capture.default_rate, chosen.playback.default_rate
    buffer = PlaybackBuffer(playback_rate, prefill_ms=settings.playback_buffer_ms)
    speaker = PlaybackStream(chosen.playback, buffer, playback_rate * OUTPUT_BLOCK_MS // 1000, latency=OUTPUT_LATENCY_MS / 1000.0)
    captured: asyncio.Queue[npt.NDArray[np.float32]] = asyncio.Queue()
    try:
        microphone = CaptureStream(chosen.capture, capture_rate, capture_rate * settings.chunk_ms // 1000, loop, captured)
    except BaseException:
        speaker.stop()
        raise
    audio = DeviceAudio(microphone, speaker)
    try:
        agent = MicAgent(
            capture_rate=capture_rate,
            writer=PlaybackWriter(buffer, DEFAULT_FORMAT.rate),
            chunk_ms=settings.chunk_ms,
            duplex=settings.duplex,
            display=display,
            output_latency_ms=speaker.latency_ms,
        )
        run = await drive_session(
            settings,
            agent,
            captured,
            audio,
            stop=stop,
            started_info={
                "input_device": chosen.capture.name,
                "output_device": chosen.playback.name,
                "capture_rate": capture_rate,
                "playback_rate": playback_rate,
                "duplex": settings.duplex,
            },
        )
    finally:
        audio.stop()  # idempotent; covers a failure before the session started
    return MicResult(
        outcome=run.outcome,
        agent=agent,
        underruns=buffer.underruns,
        log_path=run.log_path,
        upstream_url=run.upstream_url,
        capture_overflows=microphone.overflows,
        capture_dropped_blocks=microphone.dropped_blocks,
        output_underflows=speaker.underflows,
    )
