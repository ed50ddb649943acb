"""A session's files on disk: where they go, and writing one item's audio as a WAV (retrieve-after-done saves).

Boundary: file I/O only, on a worker thread. `SessionFiles` knows the folder layout under `data_dir`
(`sessions/<session_id>/<item_id>.wav` and the recording) and is given the URLs the files are served under by
`relay.wiring`, so nothing here (or in the bridge) spells out the server's URL layout. `save_item_audio` is what
the bridge runs for each `AudioToSave` the core decides (docs/retrieve-after-done.md); it returns the fields of
`relay.audio_saved`, or `NotSaved` when the write was refused or failed (logged on the daemon's stream; the bridge
records it in the session's event log as `relay.audio_not_saved`; the session goes on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from audio import pcm as pcmlib
from relay.core.outbox import AudioToSave
from relay.recording import RECORDING_FILE

log = structlog.get_logger()


@dataclass(frozen=True)
class SessionFiles:
    """Where a session's files are written under `data_dir`, and the URLs they are served under."""

    data_dir: Path
    audio_url: Callable[[str, str], str]  # (session_id, item_id) -> the URL of the item's WAV
    recording_url: Callable[[str], str]  # session_id -> the URL of the session's recording

    def folder(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / session_id

    def recording_path(self, session_id: str) -> Path:
        return self.folder(session_id) / RECORDING_FILE


@dataclass(frozen=True)
class NotSaved:
    """Why an item's WAV was not written: the fields of `relay.audio_not_saved`."""

    item_id: str
    reason: str  # "unsafe_item_id" or "write_failed"
    source: str
    error: str | None = None

    def record(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"item_id": self.item_id, "reason": self.reason, "source": self.source}
        if self.error is not None:
            fields["error"] = self.error
        return fields


async def save_item_audio(files: SessionFiles, session_id: str, save: AudioToSave) -> dict[str, Any] | NotSaved:
    """Write the item's WAV into the session's folder on a worker thread; the `relay.audio_saved` fields, or why
    it was not written."""
    folder = files.folder(session_id)
    path = folder / f"{save.item_id}.wav"
    if path.resolve().parent != folder.resolve():  # the core refuses such ids already; never trust one id check
        log.error("relay.audio_save_refused", item_id=save.item_id)
        return NotSaved(save.item_id, "unsafe_item_id", save.source)
    try:
        pcm16, rate = await asyncio.to_thread(write_item_wav, path, save)
    except Exception as exc:  # a disk error, or audio no WAV can hold (a rate an upstream made up): logged, contained
        error = f"{type(exc).__name__}: {exc}"
        log.error("relay.audio_save_failed", item_id=save.item_id, error=error)
        return NotSaved(save.item_id, "write_failed", save.source, error)
    return {
        "item_id": save.item_id,
        "path": str(path),
        "url": files.audio_url(session_id, save.item_id),
        "duration_ms": round(pcmlib.duration_ms(len(pcm16), rate), 3),
        "audio_bytes": len(pcm16),
        "rate": rate,
        "source": save.source,
    }


def write_item_wav(path: Path, save: AudioToSave) -> tuple[bytes, int]:
    """Decode the item's wire audio to PCM16 and write the WAV (runs on a worker thread)."""
    if save.format.type == "audio/pcmu":
        pcm16, rate = pcmlib.ulaw_decode(save.pcm), 8000
    elif save.format.type == "audio/pcma":
        pcm16, rate = pcmlib.alaw_decode(save.pcm), 8000
    else:
        pcm16, rate = save.pcm[: len(save.pcm) - len(save.pcm) % 2], save.format.rate
    pcmlib.write_wav(path, pcm16, rate)
    return pcm16, rate
