"""`logs --html` with a session recording: the page links the WAV relatively and embeds both channels' peaks;
peaks are computed in bounded blocks and stay bounded for long recordings."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from relay.cli.main import main
from relay.recording.peaks import MAX_BUCKETS, recording_peaks
from tests.support.logs_fixtures import two_turn_session

RATE = 8000


def write_recording(path: Path, seconds: float, left: tuple[float, float], right: tuple[float, float]) -> None:
    """A stereo recording with a full-scale-ish burst on each channel in the given spans (seconds)."""
    frames = np.zeros((int(seconds * RATE), 2), dtype="<i2")
    frames[int(left[0] * RATE) : int(left[1] * RATE), 0] = 16384
    frames[int(right[0] * RATE) : int(right[1] * RATE), 1] = -32768
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames.tobytes())


def test_peaks_are_percent_of_full_scale_per_bucket(tmp_path: Path) -> None:
    path = tmp_path / "recording.wav"
    write_recording(path, 1.0, (0.1, 0.2), (0.5, 0.6))
    peaks = recording_peaks(path)
    assert (peaks.rate, peaks.duration_ms, peaks.bucket_ms) == (RATE, 1000.0, 10.0)
    assert len(peaks.left) == len(peaks.right) == 100
    assert peaks.left[10:20] == [50] * 10 and sum(peaks.left) == 500
    assert peaks.right[50:60] == [100] * 10 and sum(peaks.right) == 1000


def test_long_recordings_get_longer_buckets_not_more_of_them(tmp_path: Path) -> None:
    path = tmp_path / "recording.wav"
    write_recording(path, 300.0, (0, 1), (299, 300))
    peaks = recording_peaks(path)
    assert len(peaks.left) <= MAX_BUCKETS and peaks.bucket_ms >= 15
    assert peaks.left[0] == 50 and peaks.right[-1] == 100


@pytest.mark.parametrize("content", [b"", b"RIFF", b"not a wav at all" * 10])
def test_a_broken_recording_is_an_error_not_a_crash(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "recording.wav"
    path.write_bytes(content)
    with pytest.raises((EOFError, wave.Error, OSError)):
        recording_peaks(path)


def test_the_page_links_the_recording_and_embeds_its_peaks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = two_turn_session("sess_rec")
    log.add(6000.0, "relay", "relay.recording_saved", {"path": "data/sessions/sess_rec/recording.wav", "url": "/x",
                                                         "duration_ms": 6000.0, "bytes": 0, "dropped_ms": 0})
    log.write(tmp_path / "logs")
    write_recording(tmp_path / "data" / "sessions" / "sess_rec" / "recording.wav", 6.0, (0.3, 1.2), (1.6, 2.0))
    page = tmp_path / "reports" / "sess_rec.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(page), "--data-dir", str(tmp_path / "nowhere")]) == 0
    text = page.read_text()
    assert 'src="../data/sessions/sess_rec/recording.wav"' in text
    data = json.loads(re.search(r'id="recording-data">(.*?)</script>', text, re.S).group(1))  # type: ignore[union-attr]
    assert data["duration_ms"] == 6000.0 and len(data["left"]) == 600
    assert max(data["left"][30:120]) == 50 and max(data["right"][160:200]) == 100
    assert 'data-lane="user-audio"' in text and 'data-lane="assistant-audio"' in text
    capsys.readouterr()


def test_a_page_without_a_recording_has_no_waveform_lanes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two_turn_session("sess_none").write(tmp_path / "logs")
    page = tmp_path / "p.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(page), "--data-dir", str(tmp_path)]) == 0
    assert 'id="recording-data"' not in page.read_text() and 'data-lane="user-audio"' not in page.read_text()
    capsys.readouterr()


def test_an_unreadable_recording_is_reported_and_the_page_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_turn_session("sess_bad").write(tmp_path / "logs")
    bad = tmp_path / "data" / "sessions" / "sess_bad" / "recording.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"RIFF garbage")
    page = tmp_path / "p.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(page), "--data-dir", str(tmp_path / "data")]) == 0
    assert 'id="recording-data"' not in page.read_text()
    assert "cannot read the recording" in capsys.readouterr().err
