"""Session recording: one time-aligned stereo WAV per session (left: the user, right: the assistant), written
as the session runs, and the retention sweep that deletes old session files. The rules are in docs/recording.md.

- `timeline`: where audio lands on a session's timeline (pure).
- `wavfile`: the growing WAV file whose header is valid after every append (file I/O, writer thread only).
- `recorder`: `SessionRecorder`, the observer the bridge feeds.
- `retention`: deleting session folders and log files older than `retention_days`.
- `peaks`: waveform peaks of a recording for the `logs --html` page.
"""

from __future__ import annotations

from pathlib import Path

from relay.recording.recorder import (
    RECORDING_FILE,
    RECORDING_SAVED,
    RECORDING_STOPPED,
    RecordingOptions,
    SessionRecorder,
)
from relay.settings import Settings

__all__ = [
    "RECORDING_FILE",
    "RECORDING_SAVED",
    "RECORDING_STOPPED",
    "RecordingOptions",
    "SessionRecorder",
    "recording_banner",
]


def recording_banner(settings: Settings) -> dict[str, object]:
    """What the first log line of `serve` and `mic` says about recording: on or off, and where."""
    if not settings.record_sessions:
        return {"recording": "off"}
    return {
        "recording": "on",
        "recordings": str(Path(settings.data_dir) / "sessions" / "<session_id>" / RECORDING_FILE),
        "retention_days": settings.retention_days,
    }
