"""The playback jitter buffer between the event loop (writer) and the PortAudio output callback (reader).

`PlaybackBuffer` holds mono float32 samples at the output device's rate, tagged with the conversation item
they belong to. The loop thread `write()`s decoded deltas; the real-time callback `read_into()`s exactly the
block it must play, zero-filling what is missing. Every sample the callback copies out is counted as played
for its item: that count (not what was enqueued) is what a barge-in truncates to.

- Prefill: after being idle, playback starts only once `prefill_ms` of audio is buffered (absorbs network
  jitter), or at once when the writer says `finish()` (a reply shorter than the prefill must still play).
- Underrun: the callback needed audio while playing, more was expected, and there was none. It zero-fills,
  counts one underrun and goes back to prefilling. Running dry after `finish()` is the normal end, not an
  underrun.
- `clear()` is the barge-in: everything not yet played is dropped at once (the next callback block is
  silence) and the result says what was dropped and how much of the interrupted item was played.

Threading: one `threading.Lock` guards the state; the callback holds it only for a few array copies and never
waits on anything else, allocates no Python objects per sample, logs nothing. No devices, no event loop here.

`PlaybackWriter` (loop side) turns PCM16 deltas at the session's output rate into buffer samples: one
streaming resampler per item (no clicks between deltas), rate changes followed, reset on barge-in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from audio.pcm import FloatArray
from audio.resample import StreamResampler, validate_rate


@dataclass(frozen=True)
class ClearResult:
    """What a barge-in `clear()` did."""

    was_active: bool  # there was audio buffered or playing when cleared
    item_id: str | None  # the item being heard when cleared (None if no audio was ever tagged)
    played_samples: int  # samples of `item_id` the callback had played before the clear
    played_ms: int  # the same in whole milliseconds (floor): the truncate point for `item_id`
    dropped_samples: dict[str | None, int] = field(default_factory=dict)  # unplayed samples dropped, per item

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped_samples.values())


class _Segment:
    __slots__ = ("item_id", "offset", "samples")

    def __init__(self, item_id: str | None, samples: FloatArray) -> None:
        self.item_id = item_id
        self.samples = samples
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.samples) - self.offset


class PlaybackBuffer:
    """Thread-safe jitter buffer: `write()` from the loop, `read_into()` from the audio callback."""

    def __init__(self, rate: int, prefill_ms: int = 80) -> None:
        self._rate = validate_rate(rate, "playback rate")
        if isinstance(prefill_ms, bool) or not isinstance(prefill_ms, int) or prefill_ms < 0:
            raise ValueError(f"playback_buffer_ms must be a non-negative integer, got {prefill_ms!r}")
        self._prefill = self._rate * prefill_ms // 1000
        self._lock = threading.Lock()
        self._segments: deque[_Segment] = deque()
        self._buffered = 0
        self._started = False  # prefill reached (or finish() said go): the callback plays
        self._finished = False  # the writer said no more audio is coming for now
        self._underruns = 0
        self._played: dict[str | None, int] = {}
        self._last_item: str | None = None
        self._last_item_known = False
        self._since_audio = 0  # samples the callback has played since it last played real audio
        self._total_played = 0
        # Optional tap: gets a copy of every block of real audio the callback plays, and the monotonic time it
        # played it (a session recording uses it). Runs on the callback's thread: it must hand off and return.
        self.on_played: Callable[[FloatArray, float], None] | None = None

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def prefill_samples(self) -> int:
        return self._prefill

    # --- loop side ---------------------------------------------------------------------------------------

    def write(self, samples: npt.ArrayLike, item_id: str | None = None) -> None:
        chunk = np.array(samples, dtype=np.float32, copy=True).reshape(-1)
        if not len(chunk):
            return
        with self._lock:
            self._segments.append(_Segment(item_id, chunk))
            self._buffered += len(chunk)

    def finish(self) -> None:
        """No more audio is coming for now: play what is buffered even below the prefill, then go idle."""
        with self._lock:
            if self._buffered:
                self._finished = True

    def clear(self) -> ClearResult:
        """Barge-in: drop everything unplayed. The next callback block is silence."""
        with self._lock:
            was_active = self._buffered > 0
            dropped: dict[str | None, int] = {}
            for seg in self._segments:
                dropped[seg.item_id] = dropped.get(seg.item_id, 0) + seg.remaining
            if self._segments:
                item_id: str | None = self._segments[0].item_id
            else:
                item_id = self._last_item if self._last_item_known else None
            played = self._played.get(item_id, 0)
            self._segments.clear()
            self._buffered = 0
            self._started = False
            self._finished = False
        return ClearResult(
            was_active=was_active,
            item_id=item_id,
            played_samples=played,
            played_ms=played * 1000 // self._rate,
            dropped_samples=dropped,
        )

    # --- callback side -----------------------------------------------------------------------------------

    def read_into(self, out: npt.NDArray[np.float32]) -> None:
        """Fill `out` ((frames,) or (frames, channels)) with the next samples; never waits, never raises."""
        frames = out.shape[0]
        mono = out if out.ndim == 1 else out[:, 0]
        with self._lock:
            if not self._started and self._buffered and (self._buffered >= self._prefill or self._finished):
                self._started = True
            pos = 0
            if self._started:
                while pos < frames and self._segments:
                    seg = self._segments[0]
                    n = min(frames - pos, seg.remaining)
                    mono[pos : pos + n] = seg.samples[seg.offset : seg.offset + n]
                    seg.offset += n
                    pos += n
                    self._buffered -= n
                    self._played[seg.item_id] = self._played.get(seg.item_id, 0) + n
                    self._last_item, self._last_item_known = seg.item_id, True
                    if not seg.remaining:
                        self._segments.popleft()
                if pos < frames:
                    # Ran dry inside this block: the normal end after finish(), an underrun otherwise.
                    if not self._finished:
                        self._underruns += 1
                    self._started = False
                    self._finished = False
            self._since_audio = 0 if pos else self._since_audio + frames
            if pos and pos < frames:
                self._since_audio = frames - pos
            self._total_played += pos
        mono[pos:] = 0.0
        if out.ndim == 2 and out.shape[1] > 1:
            out[:, 1:] = mono[:, None]
        tap = self.on_played
        if tap is not None and pos:
            tap(mono[:pos].copy(), time.monotonic())

    # --- observation (any thread) ------------------------------------------------------------------------

    @property
    def buffered_samples(self) -> int:
        with self._lock:
            return self._buffered

    @property
    def buffered_ms(self) -> int:
        return self.buffered_samples * 1000 // self._rate

    @property
    def underruns(self) -> int:
        with self._lock:
            return self._underruns

    @property
    def is_active(self) -> bool:
        """Assistant audio is buffered or being played."""
        with self._lock:
            return self._buffered > 0

    def recently_active(self, tail_ms: int) -> bool:
        """Audio is pending, or real audio was played within the last `tail_ms` of callback time.

        Half duplex uses it: the speaker's sound is still in the output device's own buffer (and the room)
        for a while after the callback handed it over.
        """
        with self._lock:
            return self._buffered > 0 or (
                self._total_played > 0 and self._since_audio < self._rate * tail_ms // 1000
            )

    def played_samples(self, item_id: str | None) -> int:
        with self._lock:
            return self._played.get(item_id, 0)

    def played_ms(self, item_id: str | None) -> int:
        """Whole milliseconds of `item_id` the callback has played (floor: never claims unplayed audio)."""
        return self.played_samples(item_id) * 1000 // self._rate


class PlaybackWriter:
    """Loop side of playback: PCM16 deltas at the session's output rate -> buffer samples at the device rate.

    Keeps one resampler stream per item so consecutive deltas of an item join without clicks; a new item,
    `end_item()` or a rate change flushes the old stream's tail into the buffer first.
    Not thread-safe: used from the event loop only.
    """

    def __init__(self, buffer: PlaybackBuffer, source_rate: int) -> None:
        self._buffer = buffer
        self._resampler = StreamResampler(source_rate, buffer.rate)
        self._item: str | None = None
        self._open = False  # the resampler holds samples of self._item

    @property
    def buffer(self) -> PlaybackBuffer:
        return self._buffer

    @property
    def source_rate(self) -> int:
        return self._resampler.in_rate

    def set_source_rate(self, rate: int) -> None:
        rate = validate_rate(rate, "output audio rate")
        if rate != self._resampler.in_rate:
            self._flush_item()
            self._resampler = StreamResampler(rate, self._buffer.rate)

    def write_pcm16(self, pcm: bytes, item_id: str | None) -> None:
        if self._open and item_id != self._item:
            self._flush_item()
        self._item, self._open = item_id, True
        self._buffer.write(self._resampler.process_pcm16_float(pcm), item_id)

    def end_item(self) -> None:
        """The current item's audio is complete: flush its tail and let the buffer play out below prefill."""
        self._flush_item()
        self._buffer.finish()

    def clear(self) -> ClearResult:
        """Barge-in: drop the resampler's pending tail and the buffer's unplayed audio."""
        self._resampler.reset()
        self._open = False
        return self._buffer.clear()

    def _flush_item(self) -> None:
        if self._open:
            self._buffer.write(self._resampler.flush(), self._item)
        self._open = False
