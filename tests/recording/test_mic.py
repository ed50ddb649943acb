"""`mic` mode records what the microphone captured (left) and what the speaker actually played (right), through
the real relay core and simulator with the software sound card of tests/mic/test_session.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audio import pcm as pcmlib
from tests.mic.test_session import RATE, best_correlation, echo_session, log_records
from tests.support.recording_helpers import read_stereo


async def test_mic_records_the_captured_voice_and_the_played_reply(tmp_path: Path) -> None:
    s, said, run = await echo_session(tmp_path)

    (saved,) = [r["event"] for r in log_records(tmp_path) if r["type"] == "relay.recording_saved"]
    assert saved["path"] == str(tmp_path / "data" / "sessions" / run.outcome.session_id / "recording.wav")
    frames, rate = read_stereo(Path(saved["path"]))
    left = frames[:, 0].astype(np.float32) / 32768
    right = frames[:, 1].astype(np.float32) / 32768
    # The microphone's utterance (48 kHz on the card) is on the left, at the recording rate.
    captured = np.frombuffer(pcmlib.resample_pcm16(pcmlib.float_to_pcm16(said), RATE, rate), "<i2") / 32768
    assert best_correlation(left, captured.astype(np.float32)) > 0.9
    # What the speaker played (every non-silent block the card heard) is on the right.
    heard = s.card.heard_samples()
    played = heard[np.flatnonzero(heard)[0] : np.flatnonzero(heard)[-1] + 1]
    played_at_rate = np.frombuffer(pcmlib.resample_pcm16(pcmlib.float_to_pcm16(played), RATE, rate), "<i2") / 32768
    assert best_correlation(right, played_at_rate[: rate].astype(np.float32)) > 0.9
