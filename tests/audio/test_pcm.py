"""PCM helpers (audio/pcm.py): conversions round-trip and garbage is refused with AudioFormatError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio.pcm import (
    AudioFormatError,
    alaw_decode,
    alaw_encode,
    decode_base64_audio,
    duration_ms,
    encode_base64_audio,
    float_to_pcm16,
    pcm16_to_float,
    read_wav,
    resample_pcm16,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)


@given(st.binary(max_size=4000).filter(lambda b: len(b) % 2 == 0))
def test_pcm16_float_round_trip_is_exact(data: bytes) -> None:
    assert float_to_pcm16(pcm16_to_float(data)) == data


@given(st.binary(max_size=4000).filter(lambda b: len(b) % 2 == 0))
def test_pcm16_float_round_trip_is_within_one_lsb(data: bytes) -> None:
    before = np.frombuffer(data, "<i2").astype(np.int32)
    after = np.frombuffer(float_to_pcm16(pcm16_to_float(data)), "<i2").astype(np.int32)
    assert np.all(np.abs(before - after) <= 1)


def test_float_to_pcm16_clips_out_of_range_samples() -> None:
    out = np.frombuffer(float_to_pcm16(np.array([2.0, -3.0, 0.0], dtype=np.float32)), "<i2")
    assert out.tolist()[0] == 32767
    assert out.tolist()[1] in (-32767, -32768)
    assert out.tolist()[2] == 0


def test_odd_byte_count_is_refused() -> None:
    with pytest.raises(AudioFormatError):
        pcm16_to_float(b"\x00\x01\x02")


@given(st.binary(max_size=3000))
def test_base64_round_trip(data: bytes) -> None:
    assert decode_base64_audio(encode_base64_audio(data)) == data


@pytest.mark.parametrize("garbage", ["not base64!", "AAA", "AA AA", "====", "\u00e9\u00e9"])
def test_invalid_base64_is_refused(garbage: str) -> None:
    with pytest.raises(AudioFormatError):
        decode_base64_audio(garbage)


def test_g711_round_trips_within_quantisation_error() -> None:
    t = np.arange(800) / 8000
    pcm = float_to_pcm16(0.5 * np.sin(2 * np.pi * 440 * t))
    ref = np.frombuffer(pcm, "<i2").astype(np.int32)
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        back = np.frombuffer(decode(encode(pcm)), "<i2").astype(np.int32)
        assert len(back) == len(ref)
        # G.711 keeps ~13 bits: error below 1/16 of the magnitude plus a small floor.
        assert np.all(np.abs(back - ref) <= np.abs(ref) / 16 + 64)


def test_duration_ms_of_one_second_at_24k() -> None:
    assert duration_ms(48000, 24000) == 1000.0
    assert duration_ms(100, 0) == 0.0


def test_one_shot_resample_changes_length_by_the_rate_ratio() -> None:
    pcm = float_to_pcm16(np.zeros(24000, dtype=np.float32))
    assert len(resample_pcm16(pcm, 24000, 16000)) == 2 * 16000


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = float_to_pcm16(np.linspace(-0.5, 0.5, 1000, dtype=np.float32))
    write_wav(tmp_path / "a.wav", pcm, 16000)
    assert read_wav(tmp_path / "a.wav") == (pcm, 16000)


def test_a_wav_write_that_fails_on_a_full_disk_leaves_no_part_file_and_no_wav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int) -> None:
            self.file = real_fdopen(fd, "wb")

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: FullDisk(fd))
    with pytest.raises(OSError):
        write_wav(tmp_path / "a.wav", bytes(3200), 16000)
    assert list(tmp_path.iterdir()) == []


def test_garbage_wav_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(AudioFormatError):
        read_wav(bad)
