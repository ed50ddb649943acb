"""Where recorded audio lands on a session's timeline: pure arithmetic on frame counts, no audio, no clock, no I/O.

A recording is one timeline of frames at the recording rate; frame 0 is the session's `t_ms` 0. Audio comes in
chunks, each with the frame at which it crossed the relay (its arrival). Two kinds of lane place them:

- `ArrivalLane` (the user's audio, and in `mic` mode what the microphone captured and the speaker played): a
  chunk arriving within `CONTINUE_WITHIN_MS` of where the previous one ended continues it (jitter does not tear
  a stream apart); a later one starts at its arrival.
- `ItemLane` (the assistant's audio): an item's audio starts when its first chunk arrived or when the previous
  item's audio ends, whichever is later (what a client playing at real time hears), and then runs on
  contiguously; a chunk arriving more than `CONTINUE_WITHIN_MS` after the item's audio ran out (the player ran
  dry) starts a new run at its arrival. `truncate` maps an item-relative position (a truncate's `audio_end_ms`)
  to the timeline frame where the item's audio must stop.

Every placement is clipped to `[floor, limit)`: `floor` is what is already written (the past cannot change),
`limit` is the wall clock plus the allowed lead. What falls beyond `limit` is `dropped` (audio sent faster than
real time); what falls before `floor` is dropped as well (a stalled loop). A chunk that would start ahead of its
arrival (it continues a run already running ahead of the clock) is placed whole or not at all: at the lead limit a
flood then records one whole chunk each time the clock has made room for one, and every other chunk is dropped
before anyone decodes it, instead of each chunk leaving a sliver of a few frames that costs a decode, a
resampler pass and a queued piece.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, NamedTuple

CONTINUE_WITHIN_MS: Final = 100
MAX_TRACKED_ITEMS: Final = 32  # truncates name recent items; older ones are forgotten (memory stays flat)
MAX_RUNS_PER_ITEM: Final = 64


def ms_to_frames(ms: float, rate: int) -> int:
    return int(ms * rate // 1000)


class Placement(NamedTuple):
    """Where a chunk's kept frames go: chunk frames [skip, skip + keep) land at timeline frame `start`."""

    start: int
    skip: int
    keep: int
    dropped: int


def clip(start: int, frames: int, floor: int, limit: int) -> Placement:
    """The part of `frames` frames placed at `start` that lies within [floor, limit)."""
    skip = max(0, floor - start)
    end = min(start + frames, limit)
    keep = max(0, end - (start + skip))
    return Placement(start + skip, skip if keep else 0, keep, frames - keep)


class ArrivalLane:
    """Chunks placed by arrival; a chunk continues the previous run when it arrives in time for it."""

    def __init__(self, rate: int) -> None:
        self.continue_within = ms_to_frames(CONTINUE_WITHIN_MS, rate)
        self.end: int | None = None  # where the last placed chunk ended (None: nothing yet)

    def extended_by(self, frames: int) -> None:
        """The run went on by `frames`: chunks that each arrived within `continue_within` of the run's end and fit
        whole before the limit, which `place` puts end to end, taken in one step (the recorder's run extender,
        `relay.recording.intake`, took them while the run ended at `end`)."""
        assert self.end is not None
        self.end += frames

    def ahead(self, arrival: int, frames: int, limit: int) -> int | None:
        """`place`'s flood case, cheaply: a chunk continuing a run already ahead of the clock that would pass
        `limit` (the clock plus the lead) is dropped whole; the frame where it would have started is returned.
        None: `place` decides. Nothing changes either way (a dropped chunk does not move the stream on)."""
        end = self.end
        if end is None or end <= arrival or end + frames <= limit:
            return None
        return end

    def place(self, arrival: int, frames: int, floor: int, limit: int, cap: int | None = None) -> Placement:
        """`limit`: the clock plus the lead; `cap`: where the file ends (a chunk reaching past it is cut there)."""
        start = self.end if self.end is not None and arrival <= self.end + self.continue_within else arrival
        if start > arrival and start + frames > limit:
            return Placement(start, 0, 0, frames)  # ahead of the clock and past the limit: dropped whole
        if cap is not None:
            limit = min(limit, cap)
        placed = clip(start, frames, floor, limit)
        # A chunk cut at the lead limit still moves the stream on to the limit: the next chunk continues there.
        self.end = max(start, min(start + frames, limit))
        return placed


@dataclass
class _Run:
    audio_offset: int  # frames of the item's audio before this run
    start: int  # timeline frame of the run's first frame
    length: int = 0


@dataclass
class _ItemState:
    runs: list[_Run] = field(default_factory=list)
    audio_frames: int = 0  # frames of the item's audio seen so far (placed or not)
    next: int = 0  # timeline frame right after the item's audio so far
    cut: int | None = None  # timeline frame where a truncate stopped the item


class ItemLane:
    """The assistant's audio, item by item, as a real-time listener hears it."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.continue_within = ms_to_frames(CONTINUE_WITHIN_MS, rate)
        self.end = 0  # where the previous assistant audio ends
        self._items: OrderedDict[str, _ItemState] = OrderedDict()
        self._current: str | None = None  # the item whose audio came last

    def place(self, item_id: str, arrival: int, frames: int, floor: int, limit: int, cap: int | None = None) -> Placement:
        """As `ArrivalLane.place`, for one item's audio."""
        item = self._items.get(item_id)
        if item is None:
            item = _ItemState(next=max(arrival, self.end))
            self._items[item_id] = item
            while len(self._items) > MAX_TRACKED_ITEMS:
                self._items.popitem(last=False)
        if item.cut is not None:  # truncated: nothing after the cut is ever heard
            item.audio_frames += frames
            return Placement(item.next, 0, 0, 0)
        start = item.next if arrival <= item.next + self.continue_within else arrival
        if item_id != self._current:  # items taking turns (not seen live): one voice at a time, in order
            start = max(start, self.end)
            self._current = item_id
        if start > arrival and start + frames > limit:
            item.audio_frames += frames  # ahead of the clock and past the limit: dropped whole, the item goes on
            return Placement(start, 0, 0, frames)
        if cap is not None:
            limit = min(limit, cap)
        placed = clip(start, frames, floor, limit)
        offset = item.audio_frames + placed.skip
        last = item.runs[-1] if item.runs else None
        if placed.keep:
            if last is not None and last.start + last.length == placed.start and last.audio_offset + last.length == offset:
                last.length += placed.keep
            elif len(item.runs) < MAX_RUNS_PER_ITEM:
                item.runs.append(_Run(offset, placed.start, placed.keep))
            elif last is not None:  # pathological fragmentation: extend the last run rather than grow
                last.length = placed.start + placed.keep - last.start
        item.audio_frames += frames
        item.next = max(start, min(start + frames, limit))
        self.end = max(self.end, item.next)
        return placed

    def run_end(self, item_id: str) -> int | None:
        """Where the item's next chunk goes when it continues the item's last run (the item is the current one, not
        truncated, and its audio so far ends that run): what `extended_by` moves on. None: `place` decides."""
        item = self._items.get(item_id) if item_id == self._current else None
        if item is None or item.cut is not None or not item.runs:
            return None
        last = item.runs[-1]
        if last.start + last.length != item.next or last.audio_offset + last.length != item.audio_frames:
            return None
        return item.next

    def extended_by(self, item_id: str, frames: int) -> None:
        """As `ArrivalLane.extended_by`, for the item whose `run_end` the run extender started from."""
        item = self._items[item_id]
        item.runs[-1].length += frames
        item.audio_frames += frames
        item.next += frames
        self.end = max(self.end, item.next)

    def ahead(self, item_id: str, arrival: int, frames: int, limit: int) -> int | None:
        """As `ArrivalLane.ahead`, for the current item's next chunk: dropped whole (the item's audio goes on past
        it) and its would-be start returned, or None when `place` decides."""
        item = self._items.get(item_id) if item_id == self._current else None
        if item is None or item.cut is not None:
            return None
        start = item.next
        if start <= arrival or start + frames <= limit:
            return None
        item.audio_frames += frames
        return start

    def skip(self, item_id: str | None, frames: int) -> None:
        """`frames` of the item's audio dropped whole ahead of the clock without `ahead` (the recorder's flood gate,
        which `ahead` opened): the item's audio goes on past them."""
        item = self._items.get(item_id) if item_id is not None else None
        if item is not None:
            item.audio_frames += frames

    def truncate(self, item_id: str, audio_end_ms: float) -> tuple[int, int] | None:
        """The item's audio stops `audio_end_ms` into it: (cut frame, end of what was placed after it), or None
        when the item is unknown or nothing was placed after the cut."""
        item = self._items.get(item_id)
        if item is None or not item.runs:
            return None
        position = max(0, ms_to_frames(audio_end_ms, self.rate))
        cut: int | None = None
        for run in item.runs:
            if position < run.audio_offset:
                cut = run.start
                break
            if position < run.audio_offset + run.length:
                cut = run.start + position - run.audio_offset
                break
        placed_end = item.runs[-1].start + item.runs[-1].length
        if cut is None:  # past everything placed: nothing to take back, but no more audio of it either
            cut = placed_end
        if item.cut is not None:
            cut = min(cut, item.cut)
        item.cut = cut
        item.next = cut
        if self._is_last(item_id):
            self.end = cut
        return (cut, placed_end) if placed_end > cut else None

    def _is_last(self, item_id: str) -> bool:
        return self._current == item_id
