"""Where recorded audio lands on the session timeline (relay.recording.timeline): pure arithmetic, no clock."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relay.recording.timeline import ArrivalLane, ItemLane, Placement, clip

RATE = 1000  # one frame per millisecond keeps the numbers readable
FAR = 10**9  # no lead limit


def test_a_chunk_arriving_within_100_ms_of_the_previous_end_continues_it() -> None:
    lane = ArrivalLane(RATE)
    assert lane.place(1000, 20, 0, FAR) == Placement(1000, 0, 20, 0)
    assert lane.place(1100, 20, 0, FAR) == Placement(1020, 0, 20, 0)  # 80 ms late: still continues
    assert lane.place(1060, 20, 0, FAR) == Placement(1040, 0, 20, 0)


def test_a_chunk_arriving_later_starts_at_its_arrival() -> None:
    lane = ArrivalLane(RATE)
    lane.place(1000, 20, 0, FAR)
    assert lane.place(1121, 20, 0, FAR).start == 1121
    assert lane.place(5000, 20, 0, FAR).start == 5000


def test_chunks_sent_faster_than_real_time_are_cut_at_the_lead_limit_and_counted() -> None:
    lane = ArrivalLane(RATE)
    placed = [lane.place(0, 1000, 0, 5000) for _ in range(7)]
    assert [p.keep for p in placed] == [1000] * 5 + [0, 0]
    assert [p.dropped for p in placed] == [0] * 5 + [1000, 1000]
    # Once the clock has moved on, the stream continues where the limit stopped it.
    assert lane.place(0, 1000, 0, 6000) == Placement(5000, 0, 1000, 0)


def test_nothing_lands_before_what_is_already_written() -> None:
    assert clip(100, 50, 120, FAR) == Placement(120, 20, 30, 20)
    assert clip(100, 50, 200, FAR) == Placement(200, 0, 0, 50)


def test_an_assistant_item_starts_at_its_first_delta_or_after_the_previous_item() -> None:
    lane = ItemLane(RATE)
    assert lane.place("a", 1000, 2000, 0, FAR).start == 1000
    assert lane.place("a", 1001, 500, 0, FAR).start == 3000  # contiguous within the item, however fast it came
    assert lane.place("b", 1500, 100, 0, FAR).start == 3500  # waits for a to finish
    assert lane.place("c", 9000, 100, 0, FAR).start == 9000  # silence between replies stays silence


def test_an_item_whose_player_ran_dry_resumes_at_the_late_deltas_arrival() -> None:
    lane = ItemLane(RATE)
    lane.place("a", 1000, 100, 0, FAR)
    assert lane.place("a", 1500, 100, 0, FAR).start == 1500
    # A truncate counts item audio, not wall time: 150 ms into the item is 50 ms into the second run.
    assert lane.truncate("a", 150) == (1550, 1600)


def test_a_truncate_cuts_the_item_where_it_says_and_drops_its_later_audio() -> None:
    lane = ItemLane(RATE)
    lane.place("a", 1000, 3000, 0, FAR)
    assert lane.truncate("a", 1200) == (2200, 4000)
    assert lane.place("a", 1300, 500, 0, FAR).keep == 0  # deltas after the truncate are not heard
    assert lane.place("b", 2500, 100, 0, FAR).start == 2500  # the next reply does not wait for the cut audio


def test_truncates_of_unknown_items_or_past_the_placed_audio_change_nothing() -> None:
    lane = ItemLane(RATE)
    assert lane.truncate("nope", 10) is None
    lane.place("a", 0, 100, 0, FAR)
    assert lane.truncate("a", 5000) is None
    assert lane.truncate("a", -5) == (0, 100)  # a negative end is the item's start


chunks = st.lists(st.tuples(st.integers(0, 400), st.integers(1, 200)), min_size=1, max_size=60)


@given(chunks, st.integers(0, 3000))
def test_arrival_placements_never_overlap_never_precede_arrival_minus_100_ms_and_respect_the_limit(
    gaps_and_sizes: list[tuple[int, int]], lead: int
) -> None:
    lane = ArrivalLane(RATE)
    now, written, end = 0, 0, 0
    for gap, size in gaps_and_sizes:
        now += gap
        placed = lane.place(now, size, written, now + lead)
        assert placed.keep + placed.dropped == size
        if placed.keep:
            assert placed.start >= end  # no overlap with what came before
            assert placed.start >= now - 100
            assert placed.start + placed.keep <= now + lead
            end = placed.start + placed.keep
        written = max(written, now - 250)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 400), st.integers(1, 300)), min_size=1, max_size=60))
def test_assistant_placements_never_overlap_and_never_start_before_they_arrive(
    deltas: list[tuple[str, int, int]]
) -> None:
    lane = ItemLane(RATE)
    now, spans = 0, []
    for item, gap, size in deltas:
        now += gap
        placed = lane.place(item, now, size, 0, FAR)
        assert placed.keep == size and placed.start >= now - 100
        spans.append((placed.start, placed.start + placed.keep))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_a_chunk_that_would_start_ahead_of_the_clock_is_placed_whole_or_dropped_whole() -> None:
    lane = ArrivalLane(RATE)
    assert lane.place(0, 1000, 0, 1500) == Placement(0, 0, 1000, 0)
    # Continues the run at 1000, ahead of its arrival, and would end past the limit: dropped whole, not cut.
    assert lane.place(10, 1000, 0, 1510) == Placement(1000, 0, 0, 1000)
    # Once the clock made room for the whole chunk, it continues the run where it stopped.
    assert lane.place(900, 1000, 0, 2400) == Placement(1000, 0, 1000, 0)
    # A chunk that starts on time is still cut at the limit (it is never ahead of the clock).
    assert lane.place(5000, 1000, 0, 5600) == Placement(5000, 0, 600, 400)


def test_a_chunk_reaching_past_the_end_of_the_file_is_cut_there_even_ahead_of_the_clock() -> None:
    lane = ArrivalLane(RATE)
    lane.place(0, 1000, 0, 5000, cap=1500)
    assert lane.place(0, 1000, 0, 5000, cap=1500) == Placement(1000, 0, 500, 500)
    items = ItemLane(RATE)
    items.place("a", 0, 1000, 0, 5000, cap=1500)
    assert items.place("a", 0, 1000, 0, 5000, cap=1500) == Placement(1000, 0, 500, 500)


def test_an_item_chunk_dropped_ahead_of_the_clock_still_counts_in_the_items_audio_for_truncates() -> None:
    lane = ItemLane(RATE)
    lane.place("a", 0, 1000, 0, 1500)
    assert lane.place("a", 0, 1000, 0, 1500).dropped == 1000  # item audio 1000..2000 never placed
    assert lane.place("a", 600, 500, 0, 2100) == Placement(1000, 0, 500, 0)  # item audio 2000..2500
    assert lane.truncate("a", 2100) == (1100, 1500)


def _extended(lane: Any, end: int | None, now: int, size: int, written: int, limit: int, item: str | None = None) -> int | None:
    """What the recorder's run extender does with a chunk arriving at `now` when its run is armed at `end` (the
    lane's `end` or `run_end`, armed only at or after what is written): the chunk's start, or None (not taken)."""
    if end is None or end < written or now > end + lane.continue_within or end + size > limit:
        return None
    if item is None:
        lane.extended_by(size)
    else:
        lane.extended_by(item, size)
    return end


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 200), st.integers(0, 400)), min_size=1, max_size=60))
def test_an_arrival_lanes_shortcuts_are_placing_it_whenever_they_apply(steps: list[tuple[int, int, int]]) -> None:
    """The run extender's rule on `end` and `extended_by` (a chunk continuing its run, placed whole) and `ahead` (a
    flood's chunk, dropped whole)."""
    fast, slow = ArrivalLane(RATE), ArrivalLane(RATE)
    now = written = 0
    for gap, size, lead in steps:
        now += gap
        written = max(written, now - 250)
        start = _extended(fast, fast.end, now, size, written, now + lead)
        ahead = fast.ahead(now, size, now + lead) if start is None else None
        placed = slow.place(now, size, written, now + lead)
        if start is not None:
            assert placed == Placement(start, 0, size, 0)
        elif ahead is not None:
            assert placed == Placement(ahead, 0, 0, size)
        else:  # nothing placed: `place` decides, on the same state
            fast.place(now, size, written, now + lead)
        assert fast.end == slow.end


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 300), st.integers(1, 200), st.integers(0, 400), st.booleans()), min_size=1, max_size=60))
def test_an_item_lanes_shortcuts_are_placing_it_whenever_they_apply(steps: list[tuple[str, int, int, int, bool]]) -> None:
    fast, slow = ItemLane(RATE), ItemLane(RATE)
    now = written = 0
    for item, gap, size, lead, truncate in steps:
        now += gap
        written = max(written, now - 250)
        if truncate:  # reads the item's audio count, which a chunk dropped ahead still moves on
            assert fast.truncate(item, size) == slow.truncate(item, size)
            continue
        start = _extended(fast, fast.run_end(item), now, size, written, now + lead, item)
        ahead = fast.ahead(item, now, size, now + lead) if start is None else None
        placed = slow.place(item, now, size, written, now + lead)
        if start is not None:
            assert placed == Placement(start, 0, size, 0)
        elif ahead is not None:
            assert placed == Placement(ahead, 0, 0, size)
        else:
            fast.place(item, now, size, written, now + lead)
        assert fast.end == slow.end
        assert [(r.audio_offset, r.start, r.length) for s in fast._items.values() for r in s.runs] == [
            (r.audio_offset, r.start, r.length) for s in slow._items.values() for r in s.runs
        ]
        assert [(s.audio_frames, s.next) for s in fast._items.values()] == [(s.audio_frames, s.next) for s in slow._items.values()]

