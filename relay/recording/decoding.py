"""Wire audio -> PCM16 samples at the recording rate: base64 decoding (`b64_audio`), G.711 decoding and a
streaming resampler per lane (`WireDecoder`). Pure computation on bytes and arrays: no clock, no file, no loop."""

from __future__ import annotations

import binascii

import numpy as np
import numpy.typing as npt
import pybase64

from audio import pcm as pcmlib
from audio.resample import StreamResampler
from relay.core.formats import G711_TYPES, AudioFormat

Int16Array = npt.NDArray[np.int16]


def b64_audio(text: str) -> bytes | None:
    """The audio of a frame field, or None when it is not valid base64. pybase64's SIMD decoder validates as it
    decodes at a third of the standard library's cost (2.6 -> 0.8 us for a 20 ms chunk); a malformed chunk is
    silence in the recording (the upstream or the client answers it, not the recorder)."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class WireDecoder:
    """Wire audio of one lane -> PCM16 samples at the recording rate (one continuous resampler stream).

    Each chunk also gets the number of frames it stands for at the recording rate: the resampler holds back
    its filter's delay at a stream's start (an 8 kHz stream's first 20 ms chunk gives no output at all), so
    the timeline places chunks by what came in, and the output follows contiguously."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: StreamResampler | None = None
        self._restarted = False  # the resampler's state is reset before its next chunk (not for every skipped one)
        self._in_total = 0
        self._out_total = 0

    def pcm16(self, data: bytes, in_rate: int) -> tuple[Int16Array, int]:
        """(samples at the recording rate, frames this chunk stands for)."""
        if len(data) % 2:
            data = data[:-1]  # half a sample: a copy, only then
        n_in = len(data) // 2
        if in_rate == self.rate:
            return np.frombuffer(data, dtype="<i2"), n_in
        if self._resampler is None or self._resampler.in_rate != in_rate:
            self._resampler = StreamResampler(in_rate, self.rate)
            self._in_total = self._out_total = 0
        elif self._restarted:
            self._resampler.reset()
        self._restarted = False
        self._in_total += n_in
        expected_total = self._in_total * self.rate // in_rate
        expected, self._out_total = expected_total - self._out_total, expected_total
        return np.frombuffer(self._resampler.process_pcm16(data), dtype="<i2"), expected

    def frames_for(self, n_bytes: int, fmt: AudioFormat) -> int:
        """How many frames at the recording rate `n_bytes` of wire audio stand for, without decoding them (what
        `wire` would return as the chunk's frame count)."""
        if fmt.type in G711_TYPES:
            n_in, in_rate = n_bytes, pcmlib.G711_RATE
        else:
            n_in, in_rate = n_bytes // 2, fmt.rate
        if in_rate == self.rate:
            return n_in
        if self._resampler is None or self._resampler.in_rate != in_rate:
            return n_in * self.rate // in_rate
        return (self._in_total + n_in) * self.rate // in_rate - self._out_total

    def wire(self, data: bytes, fmt: AudioFormat) -> tuple[Int16Array, int]:
        if fmt.type == "audio/pcmu":
            return self.pcm16(pcmlib.ulaw_decode(data), pcmlib.G711_RATE)
        if fmt.type == "audio/pcma":
            return self.pcm16(pcmlib.alaw_decode(data), pcmlib.G711_RATE)
        return self.pcm16(data, fmt.rate)

    def restart(self) -> None:
        """A new stream (a new item, or a chunk after a hole): the old filter's state must not bleed into it."""
        self._restarted = True
        self._in_total = self._out_total = 0
