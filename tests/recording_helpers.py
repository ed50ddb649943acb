"""Reading session recordings back in tests: the stereo WAV, energy envelopes, and where a signal lies in it."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

ENVELOPE_MS = 1  # envelope resolution: one value per millisecond

FloatArray = npt.NDArray[np.float64]


def read_stereo(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """(frames x 2 int16 array, rate) of a recording; fails unless it is a 16-bit stereo WAV."""
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        rate = w.getframerate()
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").reshape(-1, 2), rate


def envelope(samples: npt.ArrayLike, rate: int) -> FloatArray:
    """Mean absolute amplitude per millisecond."""
    x = np.abs(np.asarray(samples, dtype=np.float64))
    step = rate * ENVELOPE_MS // 1000
    n = len(x) // step
    return np.asarray(x[: n * step].reshape(n, step).mean(axis=1), dtype=np.float64)


def locate_ms(haystack: npt.ArrayLike, needle: npt.ArrayLike, rate: int) -> float:
    """Where (ms from the haystack's start) the needle's energy envelope matches the haystack's best."""
    h = envelope(haystack, rate)
    n = envelope(needle, rate)
    n = n - n.mean()
    h = h - h.mean()
    scores = np.correlate(h, n, mode="valid")
    return float(np.argmax(scores)) * ENVELOPE_MS


def rms(samples: npt.ArrayLike) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
