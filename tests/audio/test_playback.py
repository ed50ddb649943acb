"""PlaybackBuffer and PlaybackWriter (audio/playback.py), driven the way the PortAudio callback drives them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from audio.pcm import float_to_pcm16
from audio.playback import PlaybackBuffer, PlaybackWriter

RATE = 8000  # 8 samples per ms: ms arithmetic stays readable


def ms(n: float) -> int:
    return int(n * RATE / 1000)


def ramp(n: int, start: float = 0.01) -> np.ndarray:
    return np.full(n, start, dtype=np.float32)


def pull(buf: PlaybackBuffer, frames: int) -> np.ndarray:
    out = np.full(frames, 9.0, dtype=np.float32)  # garbage, so an unfilled sample shows
    buf.read_into(out)
    return out


def test_nothing_plays_until_the_prefill_is_buffered() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=80)
    buf.write(ramp(ms(60)), "item_a")
    assert not pull(buf, ms(10)).any()
    assert buf.played_samples("item_a") == 0
    buf.write(ramp(ms(20)), "item_a")
    assert np.all(pull(buf, ms(10)) == np.float32(0.01))
    assert buf.played_ms("item_a") == 10


def test_silence_while_idle_is_not_an_underrun() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=80)
    for _ in range(5):
        assert not pull(buf, ms(10)).any()
    assert buf.underruns == 0


def test_running_dry_mid_stream_zero_fills_and_counts_an_underrun() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=20)
    buf.write(ramp(ms(25)), "item_a")
    pull(buf, ms(20))
    out = pull(buf, ms(10))
    assert np.all(out[: ms(5)] == np.float32(0.01))
    assert not out[ms(5) :].any()
    assert buf.underruns == 1
    assert buf.played_ms("item_a") == 25


def test_after_an_underrun_playback_waits_for_the_prefill_again() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=20)
    buf.write(ramp(ms(20)), "a")
    pull(buf, ms(30))
    buf.write(ramp(ms(10)), "a")
    assert not pull(buf, ms(10)).any()
    assert buf.underruns == 1


def test_finish_plays_a_reply_shorter_than_the_prefill_and_ends_without_underrun() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=80)
    buf.write(ramp(ms(30)), "short")
    buf.finish()
    out = pull(buf, ms(40))
    assert np.count_nonzero(out) == ms(30)
    assert buf.underruns == 0
    assert buf.played_ms("short") == 30
    assert not buf.is_active


def test_finish_on_an_empty_buffer_does_not_skip_the_next_prefill() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=80)
    buf.finish()
    buf.write(ramp(ms(10)), "next")
    assert not pull(buf, ms(10)).any()


def test_clear_drops_unplayed_audio_and_reports_the_interrupted_item() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    buf.write(ramp(ms(100)), "item_a")
    buf.write(ramp(ms(50)), "item_b")
    pull(buf, ms(30))
    result = buf.clear()
    assert result.was_active
    assert result.item_id == "item_a"
    assert result.played_ms == 30
    assert result.played_samples == ms(30)
    assert result.dropped_samples == {"item_a": ms(70), "item_b": ms(50)}
    assert result.dropped_total == ms(120)
    assert not pull(buf, ms(10)).any()  # the very next block is silence
    assert buf.buffered_samples == 0
    assert buf.underruns == 0


def test_played_ms_counts_only_what_the_callback_took_not_what_was_written() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    buf.write(ramp(ms(1000)), "item_a")
    for _ in range(37):
        pull(buf, 16)  # 2 ms blocks
    assert buf.played_ms("item_a") == 74
    assert buf.clear().played_ms == 74


def test_played_ms_rounds_down_so_truncate_never_claims_unheard_audio() -> None:
    buf = PlaybackBuffer(24000, prefill_ms=0)
    buf.write(ramp(24000), "a")
    pull(buf, 2399)  # 99.958 ms
    assert buf.played_ms("a") == 99


def test_items_are_counted_separately_across_a_block_boundary() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    buf.write(ramp(ms(15)), "a")
    buf.write(ramp(ms(15), 0.02), "b")
    out = pull(buf, ms(20))
    assert np.all(out[: ms(15)] == np.float32(0.01))
    assert np.all(out[ms(15) :] == np.float32(0.02))
    assert (buf.played_ms("a"), buf.played_ms("b")) == (15, 5)
    result = buf.clear()
    assert (result.item_id, result.played_ms) == ("b", 5)


def test_clear_after_everything_played_names_the_last_item() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    buf.write(ramp(ms(10)), "a")
    buf.finish()
    pull(buf, ms(20))
    result = buf.clear()
    assert not result.was_active
    assert (result.item_id, result.played_ms, result.dropped_total) == ("a", 10, 0)


def test_clear_on_a_fresh_buffer_reports_nothing() -> None:
    result = PlaybackBuffer(RATE).clear()
    assert (result.was_active, result.item_id, result.played_ms) == (False, None, 0)


def test_stereo_output_gets_the_mono_signal_on_every_channel() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    buf.write(np.arange(1, 5, dtype=np.float32) / 10, "a")
    out = np.full((6, 2), 9.0, dtype=np.float32)
    buf.read_into(out)
    assert np.allclose(out[:, 0], [0.1, 0.2, 0.3, 0.4, 0, 0])
    assert np.array_equal(out[:, 0], out[:, 1])


def test_recently_active_covers_the_output_tail() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    assert not buf.recently_active(100)
    buf.write(ramp(ms(10)), "a")
    assert buf.recently_active(100)
    buf.finish()
    pull(buf, ms(10))
    assert buf.recently_active(100)
    pull(buf, ms(99))
    assert buf.recently_active(100)
    pull(buf, ms(2))
    assert not buf.recently_active(100)


def test_concurrent_writer_and_reader_lose_and_duplicate_nothing() -> None:
    buf = PlaybackBuffer(RATE, prefill_ms=0)
    total = 200 * 64
    values = np.arange(1, total + 1, dtype=np.float32)
    got: list[np.ndarray] = []

    def reader() -> None:
        while sum(np.count_nonzero(g) for g in got) < total:
            block = np.zeros(37, dtype=np.float32)
            buf.read_into(block)
            got.append(block[block != 0])

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(200):
        buf.write(values[i * 64 : (i + 1) * 64], "a")
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert np.array_equal(np.concatenate(got), values)
    assert buf.played_samples("a") == total


@pytest.mark.parametrize("bad", [-1, 1.5, "80", None, True])
def test_bad_prefill_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        PlaybackBuffer(RATE, prefill_ms=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -8000, 12.5])
def test_bad_rate_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        PlaybackBuffer(bad)  # type: ignore[arg-type]


def test_writer_resamples_deltas_to_the_device_rate_per_item() -> None:
    buf = PlaybackBuffer(48000, prefill_ms=0)
    writer = PlaybackWriter(buf, 24000)
    delta = float_to_pcm16(np.full(240, 0.25, dtype=np.float32))  # 10 ms at 24 kHz
    for _ in range(10):
        writer.write_pcm16(delta, "a")
    writer.write_pcm16(delta, "b")  # a new item flushes the old item's tail under the old item
    writer.end_item()
    out = np.zeros(48000, dtype=np.float32)
    buf.read_into(out)
    assert buf.played_ms("a") == pytest.approx(100, abs=1)
    assert buf.played_ms("b") == pytest.approx(10, abs=1)


def test_writer_follows_an_output_rate_change() -> None:
    buf = PlaybackBuffer(48000, prefill_ms=0)
    writer = PlaybackWriter(buf, 24000)
    writer.write_pcm16(float_to_pcm16(np.zeros(2400, dtype=np.float32)), "a")  # 100 ms at 24 kHz
    writer.set_source_rate(16000)
    writer.write_pcm16(float_to_pcm16(np.zeros(1600, dtype=np.float32)), "a")  # 100 ms at 16 kHz
    writer.end_item()
    assert buf.buffered_ms == pytest.approx(200, abs=1)
    assert writer.source_rate == 16000


def test_writer_clear_drops_buffer_and_resampler_tail() -> None:
    buf = PlaybackBuffer(48000, prefill_ms=0)
    writer = PlaybackWriter(buf, 24000)
    writer.write_pcm16(float_to_pcm16(np.full(2400, 0.1, dtype=np.float32)), "a")
    result = writer.clear()
    assert result.was_active
    writer.end_item()  # nothing of the cleared item may come back from the resampler
    assert buf.buffered_samples == 0


def test_writer_carries_an_odd_byte_between_deltas() -> None:
    buf = PlaybackBuffer(24000, prefill_ms=0)
    writer = PlaybackWriter(buf, 24000)
    pcm = float_to_pcm16(np.full(10, 0.5, dtype=np.float32))
    writer.write_pcm16(pcm[:7], "a")
    writer.write_pcm16(pcm[7:], "a")
    assert buf.buffered_samples == 10
