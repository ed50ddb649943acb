"""Reading session recordings back in tests: the stereo WAV, energy envelopes, and where a signal lies in it."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

ENVELOPE_MS = 1

# In a `logs --html` page: the recording player's duration in seconds once its metadata loaded (-1: it failed).
RECORDING_DURATION_JS = """() => new Promise((resolve) => {
  const audio = document.getElementById("recording");
  if (audio.readyState >= 1) resolve(audio.duration);
  audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
  audio.addEventListener("error", () => resolve(-1));
})"""  # envelope resolution: one value per millisecond

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
    """Where (ms from the haystack's start) the needle's energy envelope matches the haystack's best, by
    normalized correlation (so a loud stretch does not win over the right shape)."""
    h = envelope(haystack, rate)
    n = envelope(needle, rate)
    n = n - n.mean()
    windows = np.lib.stride_tricks.sliding_window_view(h, len(n))
    centred = windows - windows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1) * max(float(np.linalg.norm(n)), 1e-9)
    scores = (centred @ n) / np.maximum(norms, 1e-9)
    return float(np.argmax(scores)) * ENVELOPE_MS


def locate_near_ms(haystack: npt.ArrayLike, needle: npt.ArrayLike, rate: int, around_ms: float, window_ms: float = 300.0) -> float:
    """`locate_ms` within `around_ms` +- `window_ms` of the haystack."""
    lo = max(0, int((around_ms - window_ms) * rate / 1000))
    hi = int((around_ms + window_ms) * rate / 1000) + len(np.asarray(needle))
    return lo * 1000 / rate + locate_ms(np.asarray(haystack)[lo:hi], needle, rate)


def assert_stream_placed(
    channel: npt.NDArray[np.int16],
    stream: npt.NDArray[np.int16],
    rate: int,
    chunks: list[tuple[float, float]],
    *,
    until_ms: float | None = None,
    tolerance_ms: float = 40.0,
) -> int:
    """Every 250 ms of `stream` (at the recording's `rate`) that has sound is found in `channel` where the
    placement rule puts it, given the (arrival t_ms, audio ms) of the chunks it crossed the relay in, within
    `tolerance_ms`. Probes stay inside one run of continued chunks, and inside the channel (a file cut short
    holds only the start). Returns how many probes were checked."""
    probe_ms, checked = 250.0, 0
    limit = sum(d for _, d in chunks) if until_ms is None else until_ms
    for stream_start, stream_end, placed_start in placed_runs(chunks):
        offset = stream_start
        while offset + probe_ms <= min(stream_end, limit):
            needle = stream[int(offset * rate / 1000) : int((offset + probe_ms) * rate / 1000)]
            expected = placed_start + offset - stream_start
            if rms(needle) > 300 and (expected + probe_ms) * rate / 1000 <= len(channel):
                found = locate_near_ms(channel, needle, rate, expected)
                assert abs(found - expected) <= tolerance_ms, (offset, found, expected)
                checked += 1
            offset += probe_ms
    return checked


def placed_runs(chunks: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """The documented placement rule applied to chunks given as (arrival t_ms, audio ms): a chunk arriving
    within 100 ms of where the previous one ended continues it, a later one starts at its arrival. Returns
    runs as (stream offset start, stream offset end, timeline start), all in ms."""
    runs: list[tuple[float, float, float]] = []
    end: float | None = None
    done = 0.0
    for arrival, duration in chunks:
        if end is not None and arrival <= end + 100.0:
            stream_start, _, placed = runs[-1]
            runs[-1] = (stream_start, done + duration, placed)
            end += duration
        else:
            runs.append((done, done + duration, arrival))
            end = arrival + duration
        done += duration
    return runs


def placed_at_ms(chunks: list[tuple[float, float]], offset_ms: float) -> float:
    """Where the placement rule (`placed_runs`) puts `offset_ms` of the stream."""
    for stream_start, stream_end, placed in placed_runs(chunks):
        if stream_start <= offset_ms < stream_end:
            return placed + offset_ms - stream_start
    raise ValueError(f"{offset_ms} ms is past the stream")


def rms(samples: npt.ArrayLike) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
