"""Placed audio waiting to be written, per channel, and the stereo frames rendered from it: numpy arrays and frame
arithmetic, no clock, no decoding, no I/O.

The recorder (`relay.recording.recorder`) decides where audio lands on the timeline (`relay.recording.timeline`)
and decodes it; it hands each placed piece here as a `Segment` of one channel (0: left, the user; 1: right, the
assistant). `Mixdown.render` turns [start, upto) of the timeline into interleaved stereo PCM16 frames, silence
where nothing was placed, and forgets what it rendered; `cut` removes an item's audio after a truncate point.
"""

from __future__ import annotations

from collections import deque
from typing import Final, NamedTuple

import numpy as np

from relay.recording.decoding import Int16Array
from relay.recording.timeline import ms_to_frames

# A queued piece shorter than SMALL_PIECE_MS joins the lane's previous segment when it continues it (same item, no
# gap), as long as the joined segment stays within JOIN_UP_TO_MS. At the lead limit a flood leaves a trickle of
# pieces a few frames long (what the clock moved on since the previous chunk); queued one by one, each would cost
# a segment, an array and a loop turn per commit, a hundred times the audio it holds.
SMALL_PIECE_MS: Final = 10
JOIN_UP_TO_MS: Final = 100


class Segment(NamedTuple):
    """Placed audio waiting to be written: `samples` land at timeline frame `start` (one lane's channel)."""

    start: int
    item_id: str | None
    samples: Int16Array


class Mixdown:
    """The two channels' waiting segments, each lane in timeline order (each places monotonically), so a render
    stops at the first segment beyond it instead of scanning everything placed ahead."""

    def __init__(self, rate: int) -> None:
        self.lanes: tuple[deque[Segment], deque[Segment]] = (deque(), deque())
        self._small_piece = max(1, ms_to_frames(SMALL_PIECE_MS, rate))
        self._join_up_to = ms_to_frames(JOIN_UP_TO_MS, rate)

    def queue(self, channel: int, segment: Segment) -> None:
        """Queue placed audio after the lane's last segment, joining a small piece to it when it continues it."""
        lane = self.lanes[channel]
        if lane and len(segment.samples) < self._small_piece:
            last = lane[-1]
            last_end = last.start + len(last.samples)
            if (
                last.item_id == segment.item_id
                and last_end == segment.start
                and len(last.samples) + len(segment.samples) <= self._join_up_to
            ):
                lane[-1] = Segment(last.start, last.item_id, np.concatenate((last.samples, segment.samples)))
                return
        lane.append(segment)

    def end(self) -> int:
        """The frame right after the last placed audio (0 when nothing waits)."""
        return max((lane[-1].start + len(lane[-1].samples) for lane in self.lanes if lane), default=0)

    def cut(self, channel: int, item_id: str, at: int) -> None:
        """Drop the item's waiting audio from frame `at` on (a truncate: nothing after it is ever heard)."""
        kept: deque[Segment] = deque()
        for segment in self.lanes[channel]:
            if segment.item_id == item_id and segment.start + len(segment.samples) > at:
                if segment.start < at:
                    kept.append(Segment(segment.start, item_id, segment.samples[: at - segment.start]))
                continue
            kept.append(segment)
        lanes = list(self.lanes)
        lanes[channel] = kept
        self.lanes = (lanes[0], lanes[1])

    def clear(self) -> None:
        for lane in self.lanes:
            lane.clear()

    def render(self, start: int, upto: int) -> bytes:
        """Frames [start, upto) as interleaved stereo PCM16 (upto > start); what is rendered is forgotten."""
        block = np.zeros((upto - start, 2), dtype="<i2")
        for channel, lane in enumerate(self.lanes):
            while lane and lane[0].start < upto:
                segment = lane[0]
                seg_end = segment.start + len(segment.samples)
                lo, hi = max(segment.start, start), min(seg_end, upto)
                if hi > lo:
                    block[lo - start : hi - start, channel] = segment.samples[lo - segment.start : hi - segment.start]
                if seg_end > upto:
                    lane[0] = Segment(upto, segment.item_id, segment.samples[upto - segment.start :])
                    break
                lane.popleft()
        return block.tobytes()
