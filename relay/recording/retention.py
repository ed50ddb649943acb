"""Retention: with `retention_days` > 0, session folders (saved WAVs, the recording) and event-log files older
than that are deleted, at start and then once an hour, each deletion logged (`relay.retention_deleted`).

Age is the newest modification time inside a session folder (a session still being recorded is never old), and
a log file's own modification time. Only what the relay itself creates is considered: folders named like a
session id under `<data_dir>/sessions/`, and `*.jsonl` files in date folders under `<log_dir>/`; symlinks are
never followed nor deleted. Empty date folders left behind are removed.

`sweep` does blocking file-system work (run it on a worker thread); `retention_task` schedules it on a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from relay.core.items import MINTED_SESSION_ID_RE

SWEEP_EVERY_S: Final = 3600.0
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")  # matched whole (fullmatch)
DAY_S: Final = 86400.0

log = structlog.get_logger()


@dataclass(frozen=True)
class Deletion:
    path: Path
    kind: str  # "session" | "log"
    age_days: float


def _newest_mtime(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def sweep(data_dir: Path, log_dir: Path, retention_days: float, now: float | None = None) -> list[Deletion]:
    """Delete what is older than `retention_days`; returns what was deleted. Failures are logged and skipped."""
    if retention_days <= 0:
        return []
    now = time.time() if now is None else now
    cutoff = now - retention_days * DAY_S
    deleted: list[Deletion] = []
    sessions = data_dir / "sessions"
    for folder in _entries(sessions):
        # Only the relay's own session folders: an operator's `backup/` beside them is not the relay's to delete.
        if not MINTED_SESSION_ID_RE.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            newest = _newest_mtime(folder)
            if newest < cutoff:
                shutil.rmtree(folder)
                deleted.append(Deletion(folder, "session", (now - newest) / DAY_S))
        except OSError as exc:
            log.warning("relay.retention_failed", path=str(folder), error=str(exc))
    for day in _entries(log_dir):
        if not _DATE_RE.fullmatch(day.name) or day.is_symlink() or not day.is_dir():
            continue
        try:
            day_old = day.lstat().st_mtime < cutoff  # before deleting in it (that touches its mtime)
        except OSError:
            continue
        for file in _entries(day):
            if file.suffix != ".jsonl" or file.is_symlink() or not file.is_file():
                continue
            try:
                mtime = file.lstat().st_mtime
                if mtime < cutoff:
                    file.unlink()
                    deleted.append(Deletion(file, "log", (now - mtime) / DAY_S))
            except OSError as exc:
                log.warning("relay.retention_failed", path=str(file), error=str(exc))
        if day_old:  # never a recent folder, which the log writer may be creating a file in
            with contextlib.suppress(OSError):
                day.rmdir()  # only succeeds when empty
    for item in deleted:
        log.info("relay.retention_deleted", path=str(item.path), kind=item.kind, age_days=round(item.age_days, 2))
    return deleted


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


async def _run(data_dir: Path, log_dir: Path, retention_days: float, every: float) -> None:
    while True:
        try:
            await asyncio.to_thread(sweep, data_dir, log_dir, retention_days)
        except Exception:  # a bug here must not end the relay; the next sweep tries again
            log.exception("relay.retention_failed")
        await asyncio.sleep(every)


def retention_task(
    data_dir: Path, log_dir: Path, retention_days: float, *, every: float = SWEEP_EVERY_S
) -> asyncio.Task[None] | None:
    """Start sweeping now and every `every` seconds (None when retention is off). Cancel the task to stop."""
    if retention_days <= 0:
        return None
    return asyncio.create_task(_run(data_dir, log_dir, retention_days, every), name="relay-retention")
