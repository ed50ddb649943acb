"""A stereo PCM16 WAV file that grows while a session runs, with a header that is valid after every append.

Each `append` write(2)s whole frames and then rewrites the two size fields of the header, so the file on disk
is always a complete WAV of the frames written so far: a process killed at any moment leaves a file that opens
with the audio up to its last append. A write that fails (disk full, file size limit, I/O error) is cut back
to the last whole append and the file stops growing; `error` says why. `erase_right` silences the right
channel of frames already written (a truncate that reaches back into written audio).

Blocking file I/O on the one file it owns; meant to run on the recording writer thread, never on the loop.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Final

HEADER_BYTES: Final = 44
CHANNELS: Final = 2
SAMPLE_WIDTH: Final = 2
FRAME_BYTES: Final = CHANNELS * SAMPLE_WIDTH
MAX_DATA_BYTES: Final = 0xFFFFFFFF - HEADER_BYTES  # what the 32-bit RIFF sizes can describe


def wav_header(rate: int, data_bytes: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        CHANNELS,
        rate,
        rate * FRAME_BYTES,
        FRAME_BYTES,
        SAMPLE_WIDTH * 8,
        b"data",
        data_bytes,
    )


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class GrowingWav:
    """One recording file. Not thread-safe: one thread (the writer) calls every method."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.data_bytes = 0
        self.error: str | None = None
        self.created = False  # the file exists with its header (it may still have failed later)
        self._fd: int | None = None

    @property
    def frames(self) -> int:
        return self.data_bytes // FRAME_BYTES

    @property
    def size(self) -> int:
        return HEADER_BYTES + self.data_bytes if self.created else 0

    def open(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
            _pwrite_all(self._fd, wav_header(self.rate, 0), 0)
            self.created = True
        except OSError as exc:
            self._fail(exc)

    def append(self, data: bytes | memoryview) -> None:
        """Write whole frames after the last ones, then make the header say so (two syscalls: the writer thread
        takes the GIL back after each)."""
        fd = self._fd
        if fd is None or self.error is not None or not data:
            return
        if self.data_bytes + len(data) > MAX_DATA_BYTES:
            data = data[: (MAX_DATA_BYTES - self.data_bytes) // FRAME_BYTES * FRAME_BYTES]
        try:
            _pwrite_all(fd, data, HEADER_BYTES + self.data_bytes)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, HEADER_BYTES + self.data_bytes)
            self._fail(exc)
            return
        self.data_bytes += len(data)
        self._write_sizes()

    def erase_right(self, from_frame: int, to_frame: int) -> None:
        """Silence the right channel of written frames [from_frame, to_frame)."""
        fd = self._fd
        to_frame = min(to_frame, self.frames)
        if fd is None or self.error is not None or from_frame >= to_frame:
            return
        offset = HEADER_BYTES + from_frame * FRAME_BYTES
        try:
            block = bytearray(os.pread(fd, (to_frame - from_frame) * FRAME_BYTES, offset))
            block[2::4] = bytes(len(block[2::4]))
            block[3::4] = bytes(len(block[3::4]))
            os.pwrite(fd, block, offset)
        except OSError as exc:
            self._fail(exc)

    def _write_sizes(self) -> None:
        assert self._fd is not None
        try:
            _pwrite_all(self._fd, wav_header(self.rate, self.data_bytes), 0)  # the whole header: one syscall
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = f"{exc.__class__.__name__}: {exc.strerror or exc}"

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
