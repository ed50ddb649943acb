"""Placed audio waiting to be written and its rendering (relay.recording.mixdown): numpy only, no clock."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from relay.recording.mixdown import Mixdown, Segment

RATE = 1000  # one frame per millisecond


def _samples(n: int, value: int) -> np.ndarray:
    return np.full(n, value, dtype="<i2")


def _stereo(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2)


def test_rendering_interleaves_both_channels_with_silence_between_and_forgets_what_it_rendered() -> None:
    mix = Mixdown(RATE)
    mix.queue(0, Segment(10, None, _samples(20, 1)))
    mix.queue(1, Segment(25, "a", _samples(20, 2)))
    first = _stereo(mix.render(0, 30))
    assert first[:, 0].tolist() == [0] * 10 + [1] * 20
    assert first[:, 1].tolist() == [0] * 25 + [2] * 5
    second = _stereo(mix.render(30, 50))  # the rest of the right channel's segment, then silence
    assert second[:, 0].tolist() == [0] * 20
    assert second[:, 1].tolist() == [2] * 15 + [0] * 5
    assert mix.end() == 0 and not any(mix.lanes)


def test_a_small_piece_continuing_the_last_segment_joins_it_up_to_the_bound() -> None:
    mix = Mixdown(RATE)
    mix.queue(0, Segment(0, None, _samples(50, 1)))
    mix.queue(0, Segment(50, None, _samples(5, 1)))  # continues it: joined
    mix.queue(0, Segment(60, None, _samples(5, 1)))  # a gap: its own segment
    assert [(s.start, len(s.samples)) for s in mix.lanes[0]] == [(0, 55), (60, 5)]
    mix.queue(0, Segment(65, None, _samples(96, 1)))  # not small: never joined
    mix.queue(0, Segment(161, "x", _samples(5, 1)))  # another item: never joined
    assert len(mix.lanes[0]) == 4 and mix.end() == 166


def test_cutting_an_item_drops_its_audio_after_the_cut_and_keeps_everything_else() -> None:
    mix = Mixdown(RATE)
    mix.queue(1, Segment(0, "a", _samples(40, 1)))
    mix.queue(1, Segment(40, "b", _samples(40, 2)))
    mix.queue(1, Segment(80, "a", _samples(40, 3)))
    mix.queue(0, Segment(0, None, _samples(120, 4)))
    mix.cut(1, "a", 30)
    right = _stereo(mix.render(0, 120))[:, 1]
    assert right.tolist() == [1] * 30 + [0] * 10 + [2] * 40 + [0] * 40
    assert mix.end() == 0


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 30), st.integers(1, 40)), max_size=30), st.integers(1, 200))
def test_rendering_in_any_steps_gives_the_frames_of_rendering_at_once(pieces: list[tuple[int, int, int]], step: int) -> None:
    whole, stepped = Mixdown(RATE), Mixdown(RATE)
    ends = [0, 0]
    for channel, gap, size in pieces:  # each lane places monotonically, as the timeline does
        start = ends[channel] + gap
        for mix in (whole, stepped):
            mix.queue(channel, Segment(start, None, _samples(size, channel + 1)))
        ends[channel] = start + size
    end = max(ends) or 1
    expected = whole.render(0, end)
    parts = b"".join(stepped.render(at, min(at + step, end)) for at in range(0, end, step))
    assert parts == expected
