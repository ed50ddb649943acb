"""One channel's output on its way to the mixdown: its wire decoder, and where its decoded samples go on the
timeline. Pure computation on arrays and frame counts: no clock, no file, no loop.

The timeline (`relay.recording.timeline`) places chunks by the frames they stand for; a resampler's output lags
its input by the filter's delay at a stream's start. `ChannelOutput` queues each chunk's samples where its run's
output has reached, so a resampled stream stays contiguous, and joins a run of plain chunks (PCM at the recording
rate, whole samples, no padding) undecoded, decoding their joined base64 once when the run ends or before anything
reads the channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from relay.core.formats import AudioFormat
from relay.recording.decoding import Int16Array, WireDecoder, b64_audio
from relay.recording.mixdown import Mixdown, Segment
from relay.recording.timeline import Placement, clip

NO_SAMPLES: Final[Int16Array] = np.zeros(0, dtype="<i2")


@dataclass(slots=True)
class _PendingRun:
    """Contiguous chunks kept on one channel and not decoded yet: their base64 texts join into one (each is whole
    3-byte groups of whole samples), decoded once when the run ends or before anything reads the channel."""

    start: int
    item_id: str | None
    texts: list[str]
    frames: int


class ChannelOutput:
    """The output of one channel (LEFT or RIGHT of the mixdown)."""

    def __init__(self, channel: int, mix: Mixdown, rate: int) -> None:
        self.channel = channel
        self.decoder = WireDecoder(rate)
        self._mix = mix
        # Where the timeline expects the current run to go on, and where its output has reached (they differ by a
        # resampler's filter delay); -1: no run (a new stream starts where its first chunk is placed).
        self.expected_end = -1
        self.produced_end = 0
        self._run: _PendingRun | None = None

    def restart(self) -> None:
        """A new stream (a new item, or a chunk after a hole): the decoder's filter must not run across it, and its
        output starts where its first kept chunk is placed."""
        self.decoder.restart()
        self.expected_end = -1

    def forget(self) -> None:
        """The recording stopped: what waits undecoded is let go."""
        self._run = None

    def lines_up(self, origin: int) -> bool:
        """Whether a plain chunk placed at `origin` can be kept undecoded: False while a resampler's delay is
        pending at exactly that point (its output would not line up with the timeline)."""
        return origin != self.expected_end or self.produced_end == origin

    def keep_whole(self, item_id: str | None, audio: str, origin: int, frames: int) -> bool:
        """A plain chunk placed whole at `origin`: joins the pending run (or starts one), undecoded. False when its
        output would not line up with the timeline: the caller decodes."""
        if not self.lines_up(origin):
            return False
        self.keep_texts(item_id, [audio], origin, frames)
        return True

    def keep_texts(self, item_id: str | None, texts: list[str], origin: int, frames: int) -> None:
        """Plain chunks placed contiguously from `origin`, `frames` in all, that `lines_up` there: as `keep_whole`
        keeps each of them, in one step."""
        self.expected_end = self.produced_end = origin + frames
        run = self._run
        if run is not None and run.item_id == item_id and run.start + run.frames == origin:
            run.texts += texts
            run.frames += frames
        else:
            self.decode_run()
            self._run = _PendingRun(origin, item_id, texts, frames)

    def decode_run(self) -> None:
        """Decode the pending run into one queued segment (a chunk that is not base64 is silence)."""
        run = self._run
        if run is None:
            return
        self._run = None
        data = b64_audio(run.texts[0] if len(run.texts) == 1 else "".join(run.texts))
        if data is None:  # one bad chunk among them: decoded one by one
            data = b"".join(b64_audio(text) or bytes(len(text) * 3 // 4) for text in run.texts)
        self._mix.queue(self.channel, Segment(run.start, run.item_id, np.frombuffer(data, dtype="<i2")))

    def keep_wire(
        self, placed: Placement, item_id: str | None, audio: str, fmt: AudioFormat, plain: bool, floor: int, limit: int
    ) -> bool:
        """Keep what `placed` says of one wire chunk (`plain`: PCM at the recording rate, whole samples, no
        padding). False: not decodable at all (a rate no resampler takes; the upstream will refuse that audio too)."""
        if not placed.keep:
            # Nothing of it is kept: not decoded. A resampled stream restarts at the next kept chunk (its filter
            # must not run across the hole), which `keep` lines up as a new run.
            self.restart()
            return True
        if plain and not placed.skip and not placed.dropped and self.keep_whole(item_id, audio, placed.start, placed.keep):
            return True
        self.decode_run()
        data = b64_audio(audio)
        try:
            samples = self.decoder.wire(data, fmt)[0] if data else NO_SAMPLES  # not base64: silence where it was placed
        except ValueError:
            return False
        self.keep(placed, item_id, samples, placed.keep + placed.dropped, floor, limit)
        return True

    def keep(self, placed: Placement, item_id: str | None, samples: Int16Array, expected: int, floor: int, limit: int) -> None:
        """Queue a chunk's samples where its run's output has reached (the timeline placed `expected` frames of it
        as `placed`), within [floor, limit): what is written already, and the clock plus the lead."""
        channel, mix = self.channel, self._mix
        origin = placed.start - placed.skip
        lined_up = origin != self.expected_end or self.produced_end == origin
        if lined_up and not placed.skip and not placed.dropped and len(samples) == expected:
            # The common case (same rate, nothing clipped): output and timeline line up.
            self.expected_end = self.produced_end = origin + expected
            mix.queue(channel, Segment(origin, item_id, samples))
            return
        if origin != self.expected_end:  # a new run: its output starts where it does
            self.produced_end = origin
        self.expected_end = origin + expected
        at = self.produced_end
        self.produced_end = at + len(samples)
        out = clip(at, len(samples), floor, limit)
        if out.keep:
            piece = samples[out.skip : out.skip + out.keep]
            # A part of a chunk is copied: a view would keep the whole chunk (and the buffer under it) in memory
            # until that part is written, however few frames of it are queued.
            mix.queue(channel, Segment(out.start, item_id, piece if out.keep == len(samples) else piece.copy()))
