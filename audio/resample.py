"""Streaming resampling of mono audio between any two integer rates (soxr), for audio that arrives in chunks.

A `StreamResampler` keeps the filter state between chunks, so a signal cut into chunks of any size comes out
the same as if it had been resampled whole: no clicks or gaps at chunk edges (one-shot resampling per chunk
would restart the filter every chunk). PCM16 byte streams may be split anywhere, even inside a sample: an odd
trailing byte is carried over to the next chunk.

A rate change is a new stream: `set_rates()` flushes what the old filter still holds and starts a fresh one.
Pure computation on numpy arrays and bytes: no devices, no event loop, no I/O, not thread-safe (one owner).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from audio.pcm import FloatArray, float_to_pcm16, pcm16_to_float

MIN_RATE = 1000
MAX_RATE = 384_000
_EMPTY = np.zeros(0, dtype=np.float32)


def validate_rate(rate: object, what: str = "sample rate") -> int:
    """An integer rate in [MIN_RATE, MAX_RATE], or ValueError naming what was wrong."""
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise ValueError(f"{what} must be an integer number of Hz, got {rate!r}")
    value = int(rate)
    if not MIN_RATE <= value <= MAX_RATE:
        raise ValueError(f"{what} must be between {MIN_RATE} and {MAX_RATE} Hz, got {value}")
    return value


class StreamResampler:
    """Resamples one continuous mono stream, chunk by chunk, from `in_rate` to `out_rate`."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self._quality = quality
        self._in_rate = validate_rate(in_rate, "input rate")
        self._out_rate = validate_rate(out_rate, "output rate")
        self._stream = self._new_stream()
        self._odd_byte = b""

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    def _new_stream(self) -> soxr.ResampleStream | None:
        # Equal rates pass samples through untouched: no filter delay, bit-exact.
        if self._in_rate == self._out_rate:
            return None
        return soxr.ResampleStream(self._in_rate, self._out_rate, 1, dtype="float32", quality=self._quality)

    def process(self, samples: npt.ArrayLike, last: bool = False) -> FloatArray:
        """Resample the next chunk of float samples; `last=True` also flushes the filter (end of stream)."""
        chunk = np.ascontiguousarray(samples, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {chunk.shape}")
        if self._stream is None:
            return chunk.copy()
        out: FloatArray = self._stream.resample_chunk(chunk, last=last)
        if last:
            # soxr accepts `last` once per stream; whatever comes next is a new continuous stream.
            self._stream = self._new_stream()
        return out

    def process_pcm16_float(self, data: bytes, last: bool = False) -> FloatArray:
        """Resample the next chunk of a PCM16 byte stream (split anywhere, even mid-sample) to floats."""
        data = self._odd_byte + data
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        if last:
            # A dangling half sample at the very end of a stream is noise, not audio: drop it.
            self._odd_byte = b""
        return self.process(pcm16_to_float(data[:usable]), last=last)

    def process_pcm16(self, data: bytes, last: bool = False) -> bytes:
        """Like `process_pcm16_float`, PCM16 out."""
        return float_to_pcm16(self.process_pcm16_float(data, last=last))

    def flush(self) -> FloatArray:
        """End of the current stream: the samples the filter still holds. The resampler stays usable."""
        self._odd_byte = b""
        return self.process(_EMPTY, last=True)

    def reset(self) -> None:
        """Forget the current stream without emitting its tail (e.g. barge-in: that audio is unwanted)."""
        self._odd_byte = b""
        self._stream = self._new_stream()

    def set_rates(self, in_rate: int, out_rate: int) -> FloatArray:
        """Switch rates: returns the old stream's tail (at the OLD output rate); next chunks use the new ones.

        Same rates again is a no-op returning nothing, so a repeated `session.updated` changes nothing.
        """
        in_rate = validate_rate(in_rate, "input rate")
        out_rate = validate_rate(out_rate, "output rate")
        if (in_rate, out_rate) == (self._in_rate, self._out_rate):
            return _EMPTY.copy()
        tail = self.flush()
        self._in_rate, self._out_rate = in_rate, out_rate
        self._stream = self._new_stream()
        return tail

    def output_length(self, n_in: int) -> int:
        """Samples that `n_in` input samples become in the long run (without the filter delay)."""
        return round(n_in * self._out_rate / self._in_rate)
