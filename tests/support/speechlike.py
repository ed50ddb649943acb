"""Deterministic speech-like audio for tests, with the ground truth of where the speech is.

    from tests.support.speechlike import synthesize
    clip = synthesize(rate=24000, utterances=(1.2, 0.8), seed=1)
    clip.pcm            # PCM16 mono little-endian bytes
    clip.utterances     # [(start_s, end_s), ...]: first syllable onset .. last syllable end, per utterance

Each utterance is a run of syllables (voiced harmonic bursts: a gliding f0 of 100..220 Hz with decaying
harmonics, 15 ms raised-cosine attack, 25 ms release, slow amplitude wobble) separated by short pauses
(40..120 ms, well below any VAD silence duration). Utterances are separated by `gap_s` of background noise
(white, `noise_dbfs`), and the clip starts with `lead_s` and ends with `tail_s` of it. Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpeechClip:
    pcm: bytes
    rate: int
    utterances: list[tuple[float, float]]  # ground truth (start_s, end_s) of each utterance

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.rate


def _syllable(rate: int, duration_s: float, rng: np.random.Generator, peak: float) -> np.ndarray:
    n = round(duration_s * rate)
    t = np.arange(n) / rate
    f0_start, f0_end = rng.uniform(100, 220), rng.uniform(100, 220)
    f0 = np.linspace(f0_start, f0_end, n)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = np.zeros(n)
    for harmonic in range(1, 7):
        voice += np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi)) / harmonic**1.2
    voice /= np.max(np.abs(voice)) or 1.0
    envelope = np.ones(n) * (0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    attack, release = int(0.015 * rate), int(0.025 * rate)
    envelope[:attack] *= 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
    envelope[n - release :] *= 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
    return peak * voice * envelope


def synthesize(
    rate: int = 24000,
    *,
    utterances: Sequence[float] = (1.2,),
    lead_s: float = 0.6,
    gap_s: float = 1.2,
    tail_s: float = 1.0,
    peak: float = 0.5,
    noise_dbfs: float = -65.0,
    seed: int = 0,
) -> SpeechClip:
    """A clip with one utterance of about each given duration (seconds); see the module docstring."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    truth: list[tuple[float, float]] = []
    cursor = 0

    def silence(seconds: float) -> None:
        nonlocal cursor
        n = round(seconds * rate)
        pieces.append(np.zeros(n))
        cursor += n

    silence(lead_s)
    for index, target in enumerate(utterances):
        if index:
            silence(gap_s)
        start = cursor
        spoken = 0.0
        while True:
            length = float(rng.uniform(0.12, 0.26))
            pieces.append(_syllable(rate, length, rng, peak * float(rng.uniform(0.6, 1.0))))
            cursor += pieces[-1].size
            spoken += length
            if spoken >= target - 0.12:
                break
            silence(float(rng.uniform(0.04, 0.12)))
        truth.append((start / rate, cursor / rate))
    silence(tail_s)
    signal = np.concatenate(pieces)
    signal += rng.normal(0.0, 10 ** (noise_dbfs / 20), signal.size)
    samples = np.clip(np.rint(signal * 32767), -32768, 32767).astype("<i2")
    return SpeechClip(pcm=samples.tobytes(), rate=rate, utterances=truth)
