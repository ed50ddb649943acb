"""The files of the event log: one append-only JSONL file per session, written by the writer thread only.

Boundary: bytes to a file descriptor, nothing about records. A file is opened O_APPEND (an existing file is never
rewritten) with mode 0640 in a 0750 folder; a write that fails halfway is cut back to the last whole line, so
every line in a file parses (docs/event-log.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from relay.linestream import write_all


class JsonlFile:
    """One JSONL file opened for appending; a failed write is cut back to the last whole line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, blob: bytes) -> None:
        try:
            write_all(self.fd, blob)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(blob)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
