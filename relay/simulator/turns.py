"""Input audio and turns: the uncommitted input buffer, server-VAD turn detection, and committing user audio.

`InputTurns` handles `input_audio_buffer.append` / `.commit` / `.clear`: it keeps the buffer in samples of the
current input format (a format change starts a new epoch and drops uncommitted audio), feeds the energy VAD,
and turns a detected or committed turn into a user audio item. With server VAD a speech start can interrupt
the live response and a speech stop can start one: the only ways this part touches `responses`.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from audio import pcm
from relay.core import events as ev
from relay.simulator import replies
from relay.simulator.config import SessionConfigError, decode_client_audio, input_format, turn_detection
from relay.simulator.items import StoredItem
from relay.simulator.responses import Responses
from relay.simulator.vad import EnergyVad

MIN_COMMIT_MS: Final = 100  # OpenAI rejects commits of less than 100 ms of audio
MAX_BUFFER_S: Final = 900  # uncommitted audio kept in manual-turn mode (older audio is dropped)


class InputTurns(Responses):
    """The input audio buffer and its turns, on top of the session's state and responses."""

    def _reset_vad(self) -> None:
        td = turn_detection(self.config)
        self._speech_item = None
        if td is None:
            self._vad = None
            return
        self._vad = EnergyVad(
            self._fmt.rate,
            td.threshold,
            td.silence_duration_ms,
            td.prefix_padding_ms,
            origin_ms=self._appended_ms,
        )
        # The new detector starts at the present: older buffered samples are never fed to it.

    def _new_epoch(self) -> None:
        """The input format changed: uncommitted audio in the old format is discarded."""
        self._fmt = input_format(self.config)
        self._epoch_ms = self._appended_ms
        self._epoch_samples = 0
        self._buf = bytearray()
        self._buf_first = 0

    def _clear(self) -> None:
        self._buf = bytearray()
        self._buf_first = self._epoch_samples
        self._reset_vad()
        self._emit(ev.INPUT_AUDIO_BUFFER_CLEARED)

    def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
        samples = decode_client_audio(self._fmt, audio, "audio")
        if not samples:
            return
        self._buf += samples
        n = len(samples) // 2
        self._epoch_samples += n
        self._appended_ms = self._epoch_ms + self._epoch_samples * 1000.0 / self._fmt.rate
        if self._vad is None:
            self._cap_manual_buffer()
            return
        for boundary in self._vad.feed(np.frombuffer(samples, dtype="<i2")):
            if boundary.kind == "started":
                self._speech_started(boundary.audio_ms)
            else:
                self._speech_stopped(boundary.audio_ms, boundary.speech_ms - self._vad.onset_ms)
        if not self._vad.in_speech:
            self._trim_idle_buffer()

    def _trim_idle_buffer(self) -> None:
        # In VAD mode only the prefix padding before a future onset can ever be committed: keep a margin.
        td = turn_detection(self.config)
        keep_ms = (td.prefix_padding_ms if td else 0) + 1000
        keep = math.ceil(keep_ms * self._fmt.rate / 1000)
        excess = len(self._buf) // 2 - keep
        if excess > self._fmt.rate:  # trim in >= 1 s steps, not on every append
            del self._buf[: excess * 2]
            self._buf_first += excess

    def _cap_manual_buffer(self) -> None:
        # Manual turns never trim on their own; a client that never commits must not grow memory forever.
        excess = len(self._buf) // 2 - MAX_BUFFER_S * self._fmt.rate
        if excess > 0:
            del self._buf[: excess * 2]
            self._buf_first += excess

    def _sample_at(self, ms: float) -> int:
        """Epoch sample index of the first sample at or after appended time `ms`."""
        return max(0, math.ceil((ms - self._epoch_ms) * self._fmt.rate / 1000.0 - 1e-6))

    def _take(self, start_ms: float, end_ms: float) -> bytes:
        """The buffered samples in [start_ms, end_ms); everything before end_ms leaves the buffer."""
        first = min(max(self._sample_at(start_ms), self._buf_first), self._buf_first + len(self._buf) // 2)
        last = min(max(self._sample_at(end_ms), first), self._buf_first + len(self._buf) // 2)
        audio = bytes(self._buf[(first - self._buf_first) * 2 : (last - self._buf_first) * 2])
        del self._buf[: (last - self._buf_first) * 2]
        self._buf_first = last
        return audio

    def _speech_started(self, audio_start_ms: int) -> None:
        self._speech_item = self._mint("item")
        self._speech_start_ms = audio_start_ms
        self._emit(ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED, audio_start_ms=audio_start_ms, item_id=self._speech_item)
        td = turn_detection(self.config)
        if self._response is not None and td is not None and td.interrupt_response:
            self._cancel_response("turn_detected")

    def _speech_stopped(self, audio_end_ms: int, speech_ms: float) -> None:
        item_id = self._speech_item or self._mint("item")
        self._speech_item = None
        self._emit(ev.INPUT_AUDIO_BUFFER_SPEECH_STOPPED, audio_end_ms=audio_end_ms, item_id=item_id)
        audio = self._take(self._speech_start_ms, audio_end_ms)
        self._commit_user_audio(item_id, audio, speech_ms)
        td = turn_detection(self.config)
        if td is not None and td.create_response and self._response is None:
            self._start_response({})

    def _commit(self, event_id: str | None) -> None:
        buffered_ms = pcm.duration_ms(len(self._buf), self._fmt.rate)
        if buffered_ms < MIN_COMMIT_MS:
            self._error(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                None,
                event_id,
            )
            return
        item_id = self._speech_item or self._mint("item")
        audio = bytes(self._buf)
        self._buf_first += len(self._buf) // 2
        self._buf = bytearray()
        self._reset_vad()
        self._commit_user_audio(item_id, audio, buffered_ms)

    def _commit_user_audio(self, item_id: str, audio: bytes, speech_ms: float) -> None:
        previous = self._last_item_id()
        self._emit(ev.INPUT_AUDIO_BUFFER_COMMITTED, previous_item_id=previous, item_id=item_id)
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        stored = StoredItem(item=item, audio=bytearray(audio), fmt=self._fmt, audio_index=0)
        self._store(stored)
        self._item_added(item, previous)
        self._item_done(item, previous)
        transcript = replies.describe_speech(speech_ms)
        item["content"][0]["transcript"] = transcript
        self._emit(
            ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED,
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(stored.audio_ms() / 1000.0, 3)},
        )
        self._complete(item)
