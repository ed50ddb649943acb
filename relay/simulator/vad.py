"""Energy-based voice activity detection on real PCM16 samples, in appended-audio time.

`EnergyVad` is fed the samples a client appends and reports turn boundaries with the GA definitions
(PROTOCOL.md): `audio_start_ms` = speech onset - `prefix_padding_ms` (floored at 0) and `audio_end_ms` =
speech end + `silence_duration_ms`, both in milliseconds of appended audio, never wall clock. Pure: numpy
only, no I/O.

How it decides: audio is cut into 10 ms frames; a frame is voiced when its RMS level in dBFS is above
`threshold_dbfs(threshold)`, a straight line from -70 dBFS (threshold 0) to -10 dBFS (threshold 1), so the
default 0.5 means -40 dBFS. Speech starts at the first of `ONSET_FRAMES` consecutive voiced frames (so a lone
click does not start a turn) and ends at the end of the last voiced frame once `silence_duration_ms` of
unvoiced frames followed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

FRAME_MS: Final = 10
ONSET_FRAMES: Final = 3
_FLOOR_DBFS: Final = -70.0
_SPAN_DB: Final = 60.0


def threshold_dbfs(threshold: float) -> float:
    """The RMS level (dBFS) above which a frame counts as voiced, for a GA `threshold` in [0, 1]."""
    return _FLOOR_DBFS + _SPAN_DB * threshold


@dataclass(frozen=True)
class VadEvent:
    """A turn boundary. `at_ms` is the appended-audio time at which the detector could decide it."""

    kind: Literal["started", "stopped"]
    audio_ms: int  # audio_start_ms for "started", audio_end_ms for "stopped"
    speech_ms: float  # the onset (started) or the end of the last voiced frame (stopped)
    at_ms: float


class EnergyVad:
    """Incremental detector: `feed` samples, get the boundaries they complete."""

    def __init__(
        self,
        rate: int,
        threshold: float,
        silence_duration_ms: int,
        prefix_padding_ms: int,
        origin_ms: float = 0.0,
    ) -> None:
        self.rate = rate
        self.threshold_db = threshold_dbfs(threshold)
        self.silence_duration_ms = silence_duration_ms
        self.prefix_padding_ms = prefix_padding_ms
        self._origin_ms = origin_ms  # appended-audio time of this detector's first sample
        self._frame_len = max(1, rate * FRAME_MS // 1000)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_done = 0
        self._run = 0  # consecutive voiced frames while idle
        self.in_speech = False
        self.onset_ms = 0.0
        self._last_voiced_end_ms = 0.0

    def _frame_start_ms(self, index: int) -> float:
        return self._origin_ms + index * self._frame_len * 1000.0 / self.rate

    def feed(self, samples: npt.NDArray[np.int16]) -> list[VadEvent]:
        data = np.concatenate([self._pending, samples.astype(np.float32) / 32768.0])
        n_frames = len(data) // self._frame_len
        events: list[VadEvent] = []
        if n_frames:
            frames = data[: n_frames * self._frame_len].reshape(n_frames, self._frame_len)
            rms = np.sqrt(np.mean(frames * frames, axis=1) + 1e-20)
            voiced = 20.0 * np.log10(rms) > self.threshold_db
            for flag in voiced.tolist():
                event = self._step(bool(flag))
                if event is not None:
                    events.append(event)
        self._pending = data[n_frames * self._frame_len :]
        return events

    def _step(self, voiced: bool) -> VadEvent | None:
        index = self._frames_done
        self._frames_done += 1
        frame_end = self._frame_start_ms(index + 1)
        if not self.in_speech:
            self._run = self._run + 1 if voiced else 0
            if self._run < ONSET_FRAMES:
                return None
            self.in_speech = True
            self.onset_ms = self._frame_start_ms(index - ONSET_FRAMES + 1)
            self._last_voiced_end_ms = frame_end
            start = max(0, math.floor(self.onset_ms - self.prefix_padding_ms))
            return VadEvent("started", start, self.onset_ms, frame_end)
        if voiced:
            self._last_voiced_end_ms = frame_end
            return None
        if frame_end - self._last_voiced_end_ms + 1e-6 < self.silence_duration_ms:
            return None
        self.in_speech = False
        self._run = 0
        end = math.floor(self._last_voiced_end_ms + self.silence_duration_ms + 1e-6)
        return VadEvent("stopped", end, self._last_voiced_end_ms, frame_end)
