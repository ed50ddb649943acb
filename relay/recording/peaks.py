"""Waveform peaks of a session recording, for the `logs --html` page: per channel, the loudest sample of each
bucket of time, as 0..100 (percent of full scale).

The bucket is 10 ms, or longer for long recordings so one page never carries more than `MAX_BUCKETS` values per
channel (a 4-hour session gets 720 ms buckets). The file is read in blocks, so memory does not grow with its
length. Reads exactly the one file it is given.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

MIN_BUCKET_MS: Final = 10
MAX_BUCKETS: Final = 20_000
_READ_BUCKETS: Final = 500  # buckets per read


@dataclass(frozen=True)
class RecordingPeaks:
    rate: int
    duration_ms: float
    bucket_ms: float
    left: list[int]
    right: list[int]

    def as_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "duration_ms": self.duration_ms,
            "bucket_ms": self.bucket_ms,
            "left": self.left,
            "right": self.right,
        }


def recording_peaks(path: Path) -> RecordingPeaks:
    """Peaks of a stereo PCM16 recording. Raises OSError, EOFError or wave.Error for a file that is not one."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 2 or w.getsampwidth() != 2:
            raise wave.Error(f"{path}: not a 16-bit stereo WAV")
        rate, total = w.getframerate(), w.getnframes()
        duration_ms = total * 1000.0 / rate if rate else 0.0
        bucket_frames = max(rate * MIN_BUCKET_MS // 1000, math.ceil(total / MAX_BUCKETS), 1)
        left: list[int] = []
        right: list[int] = []
        while True:
            data = w.readframes(bucket_frames * _READ_BUCKETS)
            if not data:
                break
            frames = np.frombuffer(data[: len(data) - len(data) % 4], dtype="<i2").reshape(-1, 2)
            n = len(frames)
            pad = (-n) % bucket_frames
            magnitude = np.abs(frames.astype(np.int32))
            if pad:
                magnitude = np.concatenate([magnitude, np.zeros((pad, 2), dtype=np.int32)])
            loudest = magnitude.reshape(-1, bucket_frames, 2).max(axis=1)
            percent = np.minimum(100, (loudest * 100 + 32767) // 32768)
            left.extend(int(v) for v in percent[:, 0])
            right.extend(int(v) for v in percent[:, 1])
    return RecordingPeaks(rate, round(duration_ms, 3), bucket_frames * 1000.0 / rate if rate else 0.0, left, right)
