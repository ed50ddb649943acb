"""Kept audio on disk instead of in memory (docs/client-input.md, "Memory").

Boundary: the file I/O behind the process-wide `KeptAudioBudget` (relay.core.keptaudio), on one writer thread. The
event loop's part is one `deque.append` per piece, i.e. per sealed run of ~8 KiB of audio (`RUN_BYTES`), not per
frame; the thread wakes every `interval` seconds, writes each session's new pieces with one `writev` per segment,
and from then on the piece holds only where its text is. Reading back happens only for a fallback save or a
resume's re-send, on the loop (page-cache reads of what was just written).

Layout: `<session folder>/.items/<n>.b64`, segments of concatenated base64 text, a new one every `segment_bytes`.
A segment is deleted once every piece in it was freed or released; the folder goes when the session closes. A
session whose spool cannot be written (unwritable `data_dir`, full disk) loses its kept audio, logged once
(`relay.audio_spool_failed`): its fallback saves then report `audio_released`, and the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog

from relay.core.keptaudio import KeptAudio, KeptAudioBudget

log = structlog.get_logger()

SPOOL_FOLDER: Final = ".items"
INTERVAL_S: Final = 0.25  # how often the writer wakes: fewer, larger writes (CPU) against what waits (memory)
SEGMENT_BYTES: Final = 1024 * 1024
_MAX_IOV: Final = 512  # buffers per writev, well under the system's IOV_MAX
_FILE_MODE: Final = 0o640
_FOLDER_MODE: Final = 0o750


class _Segment:
    """One spool file of a session: its pieces in write order (the thread appends; the loop only reads)."""

    __slots__ = ("first_live", "path", "pieces", "size")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.pieces: list[KeptAudio] = []
        self.first_live = 0  # pieces before this index are known dead

    def dead(self) -> bool:
        pieces = self.pieces
        i = self.first_live
        while i < len(pieces) and not pieces[i].live:
            i += 1
        self.first_live = i
        return i == len(pieces)


class SpoolOwner:
    """One session's spool: its folder and segments (touched by the writer thread only, except `closed`)."""

    __slots__ = ("_current", "_fd", "_next", "closed", "failed", "folder", "segments")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.segments: list[_Segment] = []
        self.failed = False
        self.closed = False
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._next = 0


class _Close:
    """A session's end, queued behind its last pieces: delete everything it spooled, then resolve `done`."""

    __slots__ = ("done", "loop", "owner")

    def __init__(self, owner: SpoolOwner, loop: asyncio.AbstractEventLoop | None, done: asyncio.Future[None] | None) -> None:
        self.owner = owner
        self.loop = loop
        self.done = done


class AudioSpool:
    """Moves the budget's kept pieces to disk on one writer thread (started with the first session)."""

    def __init__(self, budget: KeptAudioBudget, *, interval: float = INTERVAL_S, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.budget = budget
        self.interval = interval
        self.segment_bytes = segment_bytes
        self._queue: deque[KeptAudio | _Close] = deque()
        self._owners: set[SpoolOwner] = set()  # the thread's own view of live sessions
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        budget.on_keep = self._queue.append
        budget.read_spooled = self.read

    def session(self, folder: Path) -> SpoolOwner:
        """A handle for one session's kept audio under `folder` (created on the first write)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="relay-audio-spool", daemon=True)
            self._thread.start()
        return SpoolOwner(folder / SPOOL_FOLDER)

    def close(self, owner: SpoolOwner) -> asyncio.Future[None]:
        """The session is over (its pieces freed): delete its files. The future is done once they are gone."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        owner.closed = True
        self._queue.append(_Close(owner, loop, done))
        self._wake.set()
        return done

    async def release(self, owner: SpoolOwner, timeout: float = 1.0) -> None:
        """`close`, waiting at most `timeout` seconds for the files to be gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.close(owner), timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Finish what is queued (closes included) and end the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- reading back (event loop) ----------------------------------------------------------------------
    def read(self, pieces: Sequence[KeptAudio]) -> list[str | None]:
        """The payload of each piece: from memory while it waits for the thread, else from its segment."""
        out: list[str | None] = []
        fds: dict[Path, int] = {}
        try:
            for piece in pieces:
                data = piece.data
                path = piece.spool_file  # set by the thread (with `spool_loc`) before it drops `data`
                if data is not None or not piece.live or piece.released or not isinstance(path, Path):
                    out.append(data if piece.live else None)
                    continue
                offset, size = piece.spool_loc >> 32, piece.spool_loc & 0xFFFFFFFF
                try:
                    fd = fds.get(path)
                    if fd is None:
                        fd = fds[path] = os.open(path, os.O_RDONLY)
                    raw = os.pread(fd, size, offset)
                except OSError as exc:
                    log.error("relay.audio_spool_failed", path=str(path), error=str(exc))
                    raw = b""
                out.append(raw.decode("ascii") if len(raw) == size else None)
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    # ---- the writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
            except Exception:  # a bug here must not end the relay: kept audio is a fallback
                log.exception("relay.audio_spool_failed")
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        batches: dict[SpoolOwner, list[KeptAudio]] = {}
        while queue:
            entry = queue.popleft()
            if isinstance(entry, _Close):
                self._write_batches(batches)
                batches = {}
                self._close(entry)
                continue
            owner = entry.owner
            if isinstance(owner, SpoolOwner) and entry.live:
                batches.setdefault(owner, []).append(entry)
        self._write_batches(batches)
        for owner in self._owners:
            self._delete_dead(owner)

    def _write_batches(self, batches: dict[SpoolOwner, list[KeptAudio]]) -> None:
        for owner, pieces in batches.items():
            if owner.failed:
                _lose(pieces)
                continue
            if owner.closed:  # its pieces were freed with the session: nothing to keep
                continue
            self._owners.add(owner)
            try:
                self._write(owner, pieces)
            except OSError as exc:
                owner.failed = True
                log.error("relay.audio_spool_failed", session_id=owner.folder.parent.name, error=str(exc))
                _lose(pieces)
                self._close_fd(owner)

    def _write(self, owner: SpoolOwner, pieces: list[KeptAudio]) -> None:
        """Append the pieces' texts to the owner's segments (one `writev` per segment), then drop them from memory."""
        texts = [(p.data or "").encode("ascii", "replace") for p in pieces]
        start = 0
        while start < len(pieces):
            segment = self._segment(owner)
            room = self.segment_bytes - segment.size
            end = start + 1
            size = len(texts[start])
            while end < len(pieces) and end - start < _MAX_IOV and size + len(texts[end]) <= room:
                size += len(texts[end])
                end += 1
            assert owner._fd is not None
            if os.writev(owner._fd, texts[start:end]) != size:
                raise OSError(f"short write to {segment.path}")
            offset = segment.size
            path = segment.path
            for piece, text in zip(pieces[start:end], texts[start:end], strict=True):
                piece.spool_file = path
                piece.spool_loc = offset << 32 | len(text)
                piece.data = None  # after `spool_*`: a reader that sees None finds where the text went
                offset += len(text)
            segment.pieces.extend(pieces[start:end])
            segment.size = offset
            start = end

    def _segment(self, owner: SpoolOwner) -> _Segment:
        """The segment to write to: the current one while it has room, else a new one."""
        segment = owner._current
        if segment is not None and segment.size < self.segment_bytes:
            return segment
        self._close_fd(owner)
        if not owner.segments:
            owner.folder.mkdir(mode=_FOLDER_MODE, parents=True, exist_ok=True)
        segment = _Segment(owner.folder / f"{owner._next}.b64")
        owner._next += 1
        owner._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
        owner.segments.append(segment)
        owner._current = segment
        return segment

    def _delete_dead(self, owner: SpoolOwner) -> None:
        keep: list[_Segment] = []
        for segment in owner.segments:
            if segment is not owner._current and segment.dead():
                segment.pieces = []
                with contextlib.suppress(OSError):
                    segment.path.unlink()
            else:
                keep.append(segment)
        owner.segments = keep

    def _close(self, close: _Close) -> None:
        owner = close.owner
        self._close_fd(owner)
        self._owners.discard(owner)
        owner.segments = []
        owner._current = None
        if owner.folder.exists():
            shutil.rmtree(owner.folder, ignore_errors=True)
        if close.loop is not None and close.done is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                close.loop.call_soon_threadsafe(_resolve, close.done)

    @staticmethod
    def _close_fd(owner: SpoolOwner) -> None:
        if owner._fd is not None:
            with contextlib.suppress(OSError):
                os.close(owner._fd)
            owner._fd = None


def _lose(pieces: list[KeptAudio]) -> None:
    """Pieces the spool could not write: their text is dropped (memory stays bounded); their owners see them released."""
    for piece in pieces:
        piece.released = True
        piece.data = None


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
