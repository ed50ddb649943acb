"""The daemon's log stream (stdout for `serve` and `sim`, stderr for `mic`): whole lines from any thread, written
by one thread per file descriptor, so nobody waits for the reader and lines never splice (docs/configuration.md,
"One stdout schema").

Boundary: bytes in, write(2) out; what the lines say is the callers' (relay.logconfig's handler, the event log's
stdout copy). `LineStream.put` never blocks: the lines wait in a queue bounded by `max_bytes` and a writer thread
writes them; past the bound `put` refuses them and the caller counts what it lost. `write_now` writes at once in
the calling thread, for a caller whose write must succeed or fail where it stands (the event log when stdout is
its only copy); both hold one lock per descriptor around whole writes, so a line is never cut by another.
A collector that stops reading then stalls only the writer thread, never the event loop.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from typing import Final

DEFAULT_MAX_BYTES: Final = 8 << 20  # what may wait for a slow reader; a stalled one loses lines past it


class LineStream:
    def __init__(self, fd: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.write_lock = threading.Lock()  # held around every write to `fd`, from either path
        self.write_errors = 0  # writes that failed (a closed pipe): their lines are lost
        self._ready = threading.Condition()
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0  # queued or being written
        self._thread: threading.Thread | None = None

    def put(self, data: bytes) -> bool:
        """Queue whole lines for the writer thread; False (nothing queued) when the queue is over its bound."""
        with self._ready:
            if self._queued_bytes and self._queued_bytes + len(data) > self.max_bytes:
                return False
            self._queue.append(data)
            self._queued_bytes += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"relay-lines-{self.fd}", daemon=True)
                self._thread.start()
            self._ready.notify()
        return True

    def write_now(self, data: bytes) -> None:
        """Write `data` in this thread, whole, between the writer thread's writes. Raises OSError."""
        with self.write_lock:
            write_all(self.fd, data)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every queued line to be written; False when some are still waiting."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._queued_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                batch = b"".join(self._queue)
                self._queue.clear()
            try:
                with self.write_lock:
                    write_all(self.fd, batch)
            except OSError:
                self.write_errors += 1
            with self._ready:
                self._queued_bytes -= len(batch)
                self._ready.notify_all()


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd`, however many write(2)s it takes (a pipe or a full disk may take part of it)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_streams: dict[int, LineStream] = {}
_streams_lock = threading.Lock()


def line_stream(fd: int) -> LineStream:
    """The process's one stream for `fd`."""
    with _streams_lock:
        stream = _streams.get(fd)
        if stream is None:
            stream = _streams[fd] = LineStream(fd)
        return stream


def flush_all(timeout: float = 2.0) -> None:
    """Give every stream up to `timeout` seconds (in all) to write what waits: at exit, and when a command ends."""
    deadline = time.monotonic() + timeout
    with _streams_lock:
        streams = list(_streams.values())
    for stream in streams:
        stream.flush(max(0.0, deadline - time.monotonic()))


atexit.register(flush_all)
