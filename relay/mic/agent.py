"""The mic client's brain, no I/O: microphone blocks in, client frames out; server events in, speaker and screen out.

Boundary: `MicAgent` decides everything the local client does and touches nothing but the objects it is given:
microphone blocks in -> `input_audio_buffer.append` frames out (converted to the session's input format, exactly
`chunk_ms` each, muted in half duplex while the assistant is audible); server events in -> playback (through
`PlaybackWriter`), transcripts (through a `Display`), and barge-in (`PlaybackWriter.clear()`, `response.cancel`,
`conversation.item.truncate` with the milliseconds of that item the speaker actually played, counted at the
output callback). Also here: the wire-format helpers it uses (`encode_input`, `decode_output`) and what it
counts (`MicStats`, `BargeIn`). The event loop, the devices and the bridge are `relay.mic.session`'s.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from audio import pcm
from audio.playback import ClearResult, PlaybackBuffer, PlaybackWriter
from audio.resample import StreamResampler
from relay.core import events as ev
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.mic.display import Display

# How long after the last assistant sample left the callback the half-duplex mute holds, on top of the output
# stream's own latency: the sound is still in the sound server's buffers and the room.
ECHO_TAIL_MS: Final = 150


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
        self._audible_response: str | None = None  # the response whose audio was last handed to the speaker
        self._cancel_ids: set[str] = set()  # event_ids of the barge-in cancels this agent sent
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
            answered = error.get("event_id") if isinstance(error, dict) else None
            if answered in self._cancel_ids:
                # A server whose VAD cancels its own response on speech_started may finish before the barge-in's
                # cancel arrives: the refusal is the expected end of that race, not something to show.
                self._cancel_ids.discard(answered)
                return []
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
        response_id = event.get("response_id")
        self._audible_response = response_id if isinstance(response_id, str) else None

    def _is_silenced(self, event: dict[str, Any]) -> bool:
        return event.get("response_id") in self._silenced_responses or event.get("item_id") in self._silenced_items

    def _speech_started(self) -> list[str]:
        self.display.status("you")
        # The assistant is audible while its audio is buffered, and also while its live response has played some
        # and the buffer ran dry for a moment (a network stutter): the user hears one reply, being interrupted.
        stuttering = self._live_response is not None and self._live_response == self._audible_response
        if not self._buffer.is_active and not stuttering:
            return []  # nothing audible to interrupt: the server's own VAD handles its response
        cleared = self._writer.clear()
        frames: list[str] = []
        cancelled = self._live_response
        if cancelled is not None:
            self._silenced_responses.add(cancelled)
            cancel: dict[str, Any] = {"type": ev.RESPONSE_CANCEL, "response_id": cancelled}
            frames.append(self._frame(cancel))
            self._cancel_ids.add(cancel["event_id"])  # the id `_frame` gave it
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
