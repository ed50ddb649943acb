"""The simulator's server VAD: turn boundaries on real samples, in appended-audio time, against ground truth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from audio import pcm
from relay.simulator.vad import EnergyVad, threshold_dbfs
from tests.support import tiers
from tests.support.sim_fixtures import Driver
from tests.support.speechlike import SpeechClip, synthesize

TOLERANCE_MS = 40


def turns(
    flavour: str, clip_pcm: bytes, rate: int, *, silence_ms: int = 500, prefix_ms: int = 300, chunk_ms: int = 20
) -> list[tuple[int, int]]:
    """(audio_start_ms, audio_end_ms) of every turn the simulator finds when the clip is appended."""
    driver = Driver(flavour)
    fmt = {"type": "audio/pcm", "rate": rate}
    session: dict = {
        "audio": {
            "input": {
                "format": fmt,
                "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms, "prefix_padding_ms": prefix_ms},
            }
        }
    }
    if flavour == "openai":
        session["type"] = "realtime"
    driver.send({"type": "session.update", "session": session})
    events = driver.append(clip_pcm, rate, chunk_ms=chunk_ms)
    starts = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
    ends = [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(starts) == len(ends)
    return list(zip(starts, ends, strict=True))


def assert_matches_truth(found: list[tuple[int, int]], truth: list[tuple[float, float]], silence_ms: int, prefix_ms: int) -> None:
    assert len(found) == len(truth), (found, truth)
    for (start, end), (t0, t1) in zip(found, truth, strict=True):
        onset = start + prefix_ms if start > 0 else None
        if onset is not None:
            assert abs(onset - t0 * 1000) <= TOLERANCE_MS, (start, t0)
        assert abs(end - silence_ms - t1 * 1000) <= TOLERANCE_MS, (end, t1)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100, 48000])
def test_turn_boundaries_are_within_40_ms_of_the_truth(rate: int) -> None:
    clip = synthesize(rate, utterances=(1.0, 2.2, 0.5), seed=rate % 7)
    flavour = "openai" if rate == 24000 else "yandex"
    assert_matches_truth(turns(flavour, clip.pcm, rate), clip.utterances, 500, 300)


@pytest.mark.parametrize(("silence_ms", "prefix_ms"), [(200, 0), (400, 300), (800, 500)])
def test_boundaries_follow_the_configured_silence_and_padding(silence_ms: int, prefix_ms: int) -> None:
    clip = synthesize(24000, utterances=(0.8, 1.1), gap_s=1.5, seed=11)
    found = turns("yandex", clip.pcm, 24000, silence_ms=silence_ms, prefix_ms=prefix_ms)
    assert_matches_truth(found, clip.utterances, silence_ms, prefix_ms)


def test_boundaries_do_not_depend_on_the_append_chunk_size() -> None:
    clip = synthesize(24000, utterances=(1.0, 0.7), seed=2)
    assert turns("yandex", clip.pcm, 24000, chunk_ms=7) == turns("yandex", clip.pcm, 24000, chunk_ms=250)


def test_prefix_padding_is_floored_at_zero() -> None:
    clip = synthesize(24000, utterances=(0.6,), lead_s=0.1, seed=4)
    ((start, _end),) = turns("yandex", clip.pcm, 24000, prefix_ms=300)
    assert start == 0


def test_short_pauses_inside_an_utterance_do_not_end_the_turn() -> None:
    clip = synthesize(24000, utterances=(3.0,), seed=9)  # syllables separated by 40..120 ms pauses
    assert len(turns("yandex", clip.pcm, 24000, silence_ms=300)) == 1


def test_speech_below_the_threshold_is_not_a_turn() -> None:
    quiet = synthesize(24000, utterances=(1.0,), peak=10 ** (-50 / 20), seed=1)
    assert turns("yandex", quiet.pcm, 24000) == []


def test_a_click_does_not_start_a_turn() -> None:
    signal = np.zeros(24000 * 2, dtype=np.float32)
    signal[24000 : 24000 + 120] = 0.9  # 5 ms click
    assert turns("yandex", pcm.float_to_pcm16(signal), 24000) == []


def test_threshold_maps_linearly_to_dbfs() -> None:
    assert threshold_dbfs(0.0) == -70.0 and threshold_dbfs(0.5) == -40.0 and threshold_dbfs(1.0) == -10.0


def test_vad_accepts_any_chunking_including_empty_and_odd_sizes() -> None:
    clip = synthesize(16000, utterances=(0.5,), seed=3)
    samples = np.frombuffer(clip.pcm, dtype="<i2")
    vad = EnergyVad(16000, 0.5, 500, 300)
    rng = np.random.default_rng(0)
    events = []
    position = 0
    while position < samples.size:
        size = int(rng.integers(0, 997))
        events += vad.feed(samples[position : position + size])
        position += size
    assert [e.kind for e in events] == ["started", "stopped"]


def _espeak(tmp_path: Path, text: str) -> tuple[bytes, int]:
    espeak = tiers.require("espeak-ng")
    wav = tmp_path / "speech.wav"
    subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
    return pcm.read_wav(wav)


def _truth(samples: bytes, rate: int) -> tuple[float, float]:
    """First and last sample above -40 dBFS: where espeak's speech is."""
    x = np.abs(pcm.pcm16_to_float(samples))
    loud = np.nonzero(x > 0.01)[0]
    return loud[0] / rate, loud[-1] / rate


@pytest.mark.parametrize("flavour", ["yandex", "openai"])
def test_espeak_speech_boundaries_are_within_40_ms(tmp_path: Path, flavour: str) -> None:
    phrases = ["Hello there, this is a test.", "The weather in Moscow is sunny today."]
    clip_parts: list[bytes] = []
    truth: list[tuple[float, float]] = []
    rate = 0
    cursor_s = 0.0
    for index, phrase in enumerate(phrases):
        speech, native = _espeak(tmp_path, phrase)
        rate = native if flavour == "yandex" else 24000  # espeak-ng writes 22050 Hz; openai takes 24000 only
        speech = pcm.resample_pcm16(speech, native, rate)
        lead = bytes(int(rate * (0.7 if index == 0 else 1.5)) * 2)
        t0, t1 = _truth(speech, rate)
        cursor_s += len(lead) / 2 / rate
        truth.append((cursor_s + t0, cursor_s + t1))
        cursor_s += len(speech) / 2 / rate
        clip_parts += [lead, speech]
    clip_parts.append(bytes(rate * 2))
    found = turns(flavour, b"".join(clip_parts), rate)
    assert_matches_truth(found, truth, 500, 300)


def test_speechlike_clip_is_deterministic_and_its_truth_is_inside_the_clip() -> None:
    a, b = synthesize(24000, utterances=(1.0, 0.5), seed=5), synthesize(24000, utterances=(1.0, 0.5), seed=5)
    assert a == b and isinstance(a, SpeechClip)
    assert 0 < a.utterances[0][0] < a.utterances[0][1] < a.utterances[1][0] < a.utterances[1][1] < a.duration_s
    samples = pcm.pcm16_to_float(a.pcm)
    t0, t1 = a.utterances[0]
    assert np.max(np.abs(samples[: int(t0 * 24000)])) < 0.01
    assert np.max(np.abs(samples[int(t0 * 24000) : int(t1 * 24000)])) > 0.2
