"""The streaming resampler (audio/resample.py): frequency kept, chunk edges seamless, rate changes, garbage."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from audio.pcm import float_to_pcm16, pcm16_to_float
from audio.resample import StreamResampler, validate_rate


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """FFT peak with parabolic interpolation between bins (sub-bin accuracy)."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + offset) * rate / len(samples))


def uneven_chunks(samples: np.ndarray, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    chunks, pos = [], 0
    while pos < len(samples):
        n = int(rng.integers(1, 1500))
        chunks.append(samples[pos : pos + n])
        pos += n
    return chunks


def stream_through(resampler: StreamResampler, chunks: list[np.ndarray]) -> np.ndarray:
    out = [resampler.process(c) for c in chunks]
    out.append(resampler.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("src", "dst"), [(44100, 24000), (48000, 16000), (16000, 24000), (24000, 44100)])
def test_sine_keeps_its_frequency_through_uneven_chunks(src: int, dst: int) -> None:
    out = stream_through(StreamResampler(src, dst), uneven_chunks(sine(440.0, src, 2.0)))
    assert abs(peak_frequency(out, dst) - 440.0) / 440.0 < 0.005
    assert abs(len(out) - 2 * dst) <= 2


def test_chunked_output_equals_whole_signal_output() -> None:
    signal = sine(997.0, 44100, 1.0)
    whole = StreamResampler(44100, 24000).process(signal, last=True)
    chunked = stream_through(StreamResampler(44100, 24000), uneven_chunks(signal))
    assert len(chunked) == len(whole)
    assert np.max(np.abs(chunked - whole)) < 1e-5


def max_step(samples: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(samples))))


def test_no_discontinuity_at_chunk_edges() -> None:
    # A 440 Hz sine of amplitude 0.5 at 24 kHz moves at most 2*pi*440/24000*0.5 = 0.058 per sample.
    chunks = uneven_chunks(sine(440.0, 44100, 1.0))
    out = stream_through(StreamResampler(44100, 24000), chunks)
    steady = out[200:-200]  # skip the filter's start-up and end ramps
    assert max_step(steady) < 0.06
    # The same chunks resampled one by one (a filter restart per chunk) click: this test can tell.
    naive = np.concatenate([soxr.resample(c, 44100, 24000) for c in chunks])
    assert max_step(naive[200:-200]) > 0.1


def test_pcm16_stream_split_mid_sample_equals_whole() -> None:
    pcm = float_to_pcm16(sine(300.0, 16000, 0.5))
    whole = StreamResampler(16000, 24000).process_pcm16(pcm, last=True)
    r = StreamResampler(16000, 24000)
    pieces = [pcm[i : i + 333] for i in range(0, len(pcm), 333)]  # odd sizes: cuts inside samples
    out = b"".join(r.process_pcm16(p) for p in pieces) + r.process_pcm16(b"", last=True)
    assert len(out) == len(whole)
    diff = np.abs(pcm16_to_float(out) - pcm16_to_float(whole))
    assert np.max(diff) <= 2 / 32768


def test_dangling_half_sample_at_stream_end_is_dropped() -> None:
    r = StreamResampler(24000, 24000)
    assert r.process_pcm16(b"\x01\x00\x02") == b"\x01\x00"
    assert r.process_pcm16(b"", last=True) == b""


def test_equal_rates_pass_samples_through_untouched() -> None:
    signal = sine(440.0, 24000, 0.1)
    r = StreamResampler(24000, 24000)
    assert np.array_equal(r.process(signal), signal)
    assert len(r.flush()) == 0


def test_rate_change_starts_a_new_stream_at_the_new_rate() -> None:
    r = StreamResampler(44100, 24000)
    first = np.concatenate([r.process(c) for c in uneven_chunks(sine(440.0, 44100, 1.0))])
    tail = r.set_rates(44100, 16000)
    assert len(first) + len(tail) == pytest.approx(24000, abs=2)
    second = stream_through(r, uneven_chunks(sine(440.0, 44100, 1.0), seed=3))
    assert r.out_rate == 16000
    assert abs(len(second) - 16000) <= 2
    assert abs(peak_frequency(second, 16000) - 440.0) / 440.0 < 0.005


def test_setting_the_same_rates_again_changes_nothing() -> None:
    r = StreamResampler(44100, 24000)
    r.process(sine(440.0, 44100, 0.1))
    assert len(r.set_rates(44100, 24000)) == 0
    assert r.in_rate == 44100


def test_reset_drops_the_pending_tail() -> None:
    r = StreamResampler(44100, 24000)
    r.process(sine(440.0, 44100, 0.1))
    r.reset()
    assert len(r.flush()) == 0


@pytest.mark.parametrize("bad", [0, -24000, 999, 10_000_000, 24000.0, "24000", None, True])
def test_bad_rates_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        validate_rate(bad)
    with pytest.raises(ValueError):
        StreamResampler(bad, 24000)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StreamResampler(24000, 24000).set_rates(24000, bad)  # type: ignore[arg-type]


def test_multichannel_input_is_refused() -> None:
    with pytest.raises(ValueError):
        StreamResampler(44100, 24000).process(np.zeros((10, 2), dtype=np.float32))
